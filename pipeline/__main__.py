"""`python -m pipeline`: run the scoring job and report what became of every input line."""

import logging
import sys

from pipeline.job import run, summarize


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = summarize(run(argv))
    logger = logging.getLogger("pipeline")
    logger.info(
        "Done: %d lines read, %d scored, %d scored 0.0 with an error, %d dead-lettered, %d captions truncated",
        counts.get("read", 0),
        counts.get("scored", 0),
        counts.get("failed", 0),
        counts.get("dead_lettered", 0),
        counts.get("truncated", 0),
    )
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_")):
            logger.info("  %s: %d", name, counts[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
