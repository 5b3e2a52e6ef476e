"""What the Flex Template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE): `python -m pipeline`, submitted without
waiting for the job to end.

The launcher passes every template parameter as `--name=value`, so a switch arrives as `--flag=true` or
`--flag=false`, which argparse refuses for a `store_true` flag: it is turned into `--flag` or dropped here.
Pub/Sub input also gets `--streaming`, which `python -m pipeline` asks for.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from pipeline.cli.declarations import GROUPS
from pipeline.cli.kit import switches


def launcher_argv(argv: Sequence[str]) -> list[str]:
    """The launcher's arguments as `python -m pipeline` takes them."""
    takes_no_value = switches(GROUPS) | {"--streaming"}
    out: list[str] = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        if equals and flag in takes_no_value:
            if value.strip().lower() in ("true", "1", "yes"):
                out.append(flag)
            elif value.strip().lower() not in ("false", "0", "no", ""):
                raise SystemExit(f"{flag} takes true or false, not {value!r}")
        else:
            out.append(arg)
    pubsub = any(arg.startswith(("--input_subscription", "--input_topic")) for arg in out)
    if pubsub and "--streaming" not in out:
        out.append("--streaming")
    return out


def main(argv: Sequence[str]) -> int:
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    from pipeline.job import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(launcher_argv(argv), wait=False)
    if isinstance(result, DataflowPipelineResult) and result.has_job:
        logging.getLogger("pipeline").info("Submitted Dataflow job %s", result.job_id())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
