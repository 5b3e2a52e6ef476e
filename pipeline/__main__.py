"""`python -m pipeline`: run the scoring job and report what became of every input record."""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from pipeline import flags


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        flags.check_flags(argv)  # --help and this job's flag errors, before torch and Beam are imported
    except flags.UsageError as exc:
        flags.argument_parser().error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # its INFO is the runner's chatter, not the job's
    from pipeline.job import log_failure, report, run

    try:
        result = run(argv, wait=False)
    except flags.UsageError as exc:
        flags.argument_parser().error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a local batch job runs within run(): say what stopped it
        log_failure(exc)
        return 1
    return report(result)


if __name__ == "__main__":
    sys.exit(main())
