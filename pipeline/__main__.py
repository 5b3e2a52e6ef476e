"""`python -m pipeline`: run the scoring job and report what became of every input record."""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import Optional, Sequence

from pipeline.cli.command import PROG, parse
from pipeline.cli.kit import INTERRUPTED, UsageError, fail


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parses the command line once, checks and plans the job, runs it and says what became of every record.

    Returns the exit code: 0; 1 when the job failed; 2 for a usage error (one line saying what and how to fix
    it); 3 when nothing worked (every record failed, or more than --max_failed_fraction); 130 when a Dataflow
    job was left running on Ctrl-C.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        flags = parse(argv)  # --help and flag errors, before torch is imported
    except UsageError as exc:
        fail(PROG, str(exc))
    # force: Beam's PipelineOptions has already set up a bare WARNING-level root handler
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_JobLogs())
    from pipeline.job import run_plan
    from pipeline.outcome import finish_record, log_failure, report
    from pipeline.preflight import preflight

    try:
        plan = preflight(flags)
    except UsageError as exc:
        fail(PROG, str(exc))
    try:
        result = run_plan(plan, wait=False)
    except Exception as exc:  # noqa: BLE001 - a local batch job runs within run_plan(): say what stopped it
        log_failure(exc)
        finish_record(plan, None, 1)
        return 1
    return report(result, plan)


class _JobLogs(logging.Filter):
    """Beam's INFO is its runner's chatter, not what the job does: keep Beam's warnings and errors, and what
    worker processes log from the job's own code (the local runner passes it on as Beam's)."""

    WORKER_LOGS = "apache_beam.runners.portability.local_job_service"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not record.name.startswith("apache_beam"):
            return True
        if record.name != self.WORKER_LOGS:
            return False
        location = re.search(r'log_location: "([^"]*)"', record.getMessage())
        return location is not None and "apache_beam" not in location.group(1)


def cli() -> None:
    """The command (`python -m pipeline`, `score-longclip`): `main`, then a quick exit."""
    code = main()
    exit_without_teardown(code, abandon_threads=code == INTERRUPTED)


def exit_without_teardown(code: int, *, abandon_threads: bool = False) -> None:
    """Ends the process once the job is done, without the interpreter's teardown of torch, Beam and gRPC
    (1.6 s of a 7 s small job here). Exit handlers still run and output is flushed; while a thread other than
    this one is still working, the ordinary exit, which waits for it, is taken instead, unless the job was cut
    short on purpose (`abandon_threads`: a second Ctrl-C), when nothing more is waited for."""
    others = [thread for thread in threading.enumerate() if thread is not threading.current_thread()]
    if not abandon_threads and any(not thread.daemon for thread in others):
        sys.exit(code)
    atexit._run_exitfuncs()  # logging.shutdown and the others registered, in order, as a normal exit would
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
