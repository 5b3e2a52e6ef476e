"""The ready scoring job around `transforms.ScoreLongCLIP`: `python -m pipeline --help`.

Names load on first use, so that `python -m pipeline --help` and flag errors need neither torch nor Beam.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run": "pipeline.job",
    "build": "pipeline.job",
    "parse_options": "pipeline.options",
    "summarize": "pipeline.job",
    "UsageError": "pipeline.flags",
    "ScoreLongCLIPOptions": "pipeline.options",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
