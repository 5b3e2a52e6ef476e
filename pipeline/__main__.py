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
    from pipeline.job import report, run

    try:
        result = run(argv, wait=False)
    except flags.UsageError as exc:
        flags.argument_parser().error(str(exc))
    return report(result)


if __name__ == "__main__":
    sys.exit(main())
