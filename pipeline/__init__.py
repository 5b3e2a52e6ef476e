"""The ready scoring job around `transforms.ScoreLongCLIP`: `python -m pipeline --help`.

`run(argv)` runs the job as the command line does; `parse`, then `pipeline.preflight.preflight` (the plan) and
`pipeline.build.build` (the graph) are its steps, for a job inside a pipeline of your own. (Those two are not
exported here: a package attribute named like a submodule is the submodule once that is imported.)
Names load on first use, so that `--help` and flag errors need neither torch nor Beam's runners.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run": "pipeline.job",
    "run_plan": "pipeline.job",
    "parse": "pipeline.cli.command",
    "JobPlan": "pipeline.plan",
    "summarize": "pipeline.outcome",
    "UsageError": "pipeline.cli.kit",
    "ScoreLongCLIPOptions": "pipeline.cli.options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
