"""The end of a run: what became of every input record, from the job's counters, and the exit code."""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Optional

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from pipeline import failure_rate, retry
from pipeline.build import SCORE_STEP
from pipeline.cli.kit import INTERRUPTED
from pipeline.io import records, resume
from pipeline.local_streaming import LocalStreamingResult
from pipeline.runs import record, store
from transforms.reasons import first_line

_LOGGER = logging.getLogger(__name__)

# A second Ctrl-C stops a local streaming job at once: the runner gets this long to stop before the job ends.
CANCEL_WAIT_SECS = 5.0


def summarize(result: PipelineResult) -> dict[str, int]:
    """Committed counters of the job: read, dead_lettered[_<reason>], scored, failed[_<reason>], truncated."""
    counts: dict[str, int] = {}
    for namespace in (records.METRICS_NAMESPACE, SCORE_STEP):
        for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
            name = counter.key.metric.name
            counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts


def report(result: PipelineResult, plan: Optional[Any] = None) -> int:
    """Waits for the job and logs what became of every input record; with the job's `plan`, also says when
    nothing worked and writes the run record (`conclude`). Ctrl-C or SIGTERM stops a local streaming job
    cleanly (no more pulls; what was pulled is written), a second Ctrl-C cancels it; Ctrl-C cancels a local
    batch job.

    Returns the process exit code: 0; 1 when the job failed (e.g. Pub/Sub unreachable from the local
    runner), after logging why and the counts so far; 3 when nothing worked (`pipeline.failure_rate`); 130
    when a Dataflow job was left running on Ctrl-C, or a local streaming job was cancelled by a second Ctrl-C.
    """
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    failed = cut_short = cancelled = False
    try:
        if isinstance(result, LocalStreamingResult):
            result.wait_or_drain_on_signal()  # the first Ctrl-C or SIGTERM: everything pulled is written
        else:
            result.wait_until_finish()
    except KeyboardInterrupt:
        if isinstance(result, DataflowPipelineResult):
            _LOGGER.info("Stopped waiting; the Dataflow job goes on running (gcloud dataflow jobs cancel stops it)")
            return INTERRUPTED
        if isinstance(result, LocalStreamingResult):
            _LOGGER.warning(
                "Interrupted again: cancelling the job. Messages pulled and not yet written are lost: the local "
                "runner acknowledged them as it pulled them, so Pub/Sub will not deliver them again"
            )
            cut_short = True
        else:
            _LOGGER.info("Interrupted: cancelling the job")
        _cancel(result, wait_secs=CANCEL_WAIT_SECS if cut_short else None)
        cancelled = True
    except Exception as exc:  # noqa: BLE001 - whatever stopped the job, say so and give the counts
        log_failure(exc)
        failed = True
    counts = summarize(result)
    logger = logging.getLogger("pipeline")
    logger.info(
        "%s: %d records read, %d scored, %d scored 0.0 with an error, %d dead-lettered, %d captions truncated",
        "Stopped by the failure above" if failed else "Cancelled" if cut_short else "Done",
        counts.get("read", 0),
        counts.get("scored", 0),
        counts.get("failed", 0),
        counts.get("dead_lettered", 0),
        counts.get("truncated", 0),
    )
    if "kept" in counts or "rejected" in counts:
        logger.info("Filter: %d kept, %d rejected", counts.get("kept", 0), counts.get("rejected", 0))
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_", "bigquery_", "webdataset_")) or name == resume.PARTS_DONE:
            logger.info("  %s: %d", name, counts[name])
    code = 1 if failed else INTERRUPTED if cut_short else 0
    return code if plan is None else conclude(result, plan, counts, code, cancelled=cancelled)


def conclude(result: Any, plan: Any, counts: Mapping[str, int], code: int, *, cancelled: bool = False) -> int:
    """The end of a planned job: what --retry_failed did, exit code 3 with hints when nothing worked (batch), and
    the run record written with the counts. Returns the exit code."""
    if plan.retry_failed:
        retry.log_counts(counts)
    if code == 0 and not cancelled and plan.files is not None:
        code, lines = failure_rate.verdict(
            counts,
            plan.max_failed_fraction,
            plan.scoring.fields,
            plan.scoring.images,
            failure_rate.fields_seen(result),
        )
        for line in lines:
            _LOGGER.error("%s", line)
    finish_record(plan, counts, code, cancelled=cancelled)
    return code


def finish_record(plan: Any, counts: Optional[Mapping[str, int]], code: int, *, cancelled: bool = False) -> None:
    """Writes the plan's run record, finished, beside every output."""
    if plan.run_record is None:
        return
    status = record.CANCELLED if cancelled else record.status_of(code)
    store.write_all(plan.destinations, record.finish(plan.run_record, counts, code, status), finished=True)


def _cancel(result: PipelineResult, wait_secs: Optional[float]) -> None:
    """Cancels the job; with `wait_secs`, waits no longer than that for the runner (a bundle waiting on a
    stalled image read holds the local runner's cancel until the read's deadline: minutes)."""
    if wait_secs is None:
        result.cancel()
        return
    stopped = threading.Event()

    def cancel() -> None:
        try:
            result.cancel()
        finally:
            stopped.set()

    threading.Thread(target=cancel, name="cancel", daemon=True).start()
    if not stopped.wait(wait_secs):
        _LOGGER.warning("The local runner did not stop within %.0f s; the job ends without waiting for it", wait_secs)


def log_failure(exc: BaseException) -> None:
    """The traceback, then one line that says what stopped the job (just before the counts)."""
    _LOGGER.error("Traceback of the failure:", exc_info=exc)
    _LOGGER.error("The job failed: %s: %s", type(exc).__name__, first_line(exc)[:500])
