"""`python -m pipeline.report --input 'out/scored-*.jsonl' --output out/report`"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from pipeline.cli.kit import UsageError, fail
from pipeline.report.options import PROG, check_flags


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        check_flags(argv)  # --help and flag errors, before Beam and matplotlib are imported
    except UsageError as exc:
        fail(PROG, str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.report.job import run

    try:
        summary = run(argv)
    except UsageError as exc:
        fail(PROG, str(exc))
    logging.getLogger("pipeline.report").info(
        "%d rows: %d scored, %d failed; median score %s",
        summary["rows"],
        summary["scored"],
        sum(summary["failed"].values()) + summary["failed_other"],
        summary["percentiles"].get("p50"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
