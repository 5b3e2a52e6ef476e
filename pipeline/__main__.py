"""`python -m pipeline`: run the scoring job and report what became of every input record."""

import logging
import sys

from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

from pipeline.job import run, summarize


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("pipeline")
    result = run(argv, wait=False)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        if isinstance(result, DataflowPipelineResult):
            logger.info("Stopped waiting; the Dataflow job goes on running (gcloud dataflow jobs cancel stops it)")
            return 130
        logger.info("Interrupted: cancelling the job")
        result.cancel()
    counts = summarize(result)
    logger.info(
        "Done: %d records read, %d scored, %d scored 0.0 with an error, %d dead-lettered, %d captions truncated",
        counts.get("read", 0),
        counts.get("scored", 0),
        counts.get("failed", 0),
        counts.get("dead_lettered", 0),
        counts.get("truncated", 0),
    )
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_", "bigquery_")):
            logger.info("  %s: %d", name, counts[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
