"""LongCLIP image/long-caption alignment scoring as a reusable Apache Beam transform.

What a Beam user needs, importable without torch or Beam until used (names load on first use):

- `ScoreLongCLIP`, `ScoredAndFailed`: the transform, and its split output with `.with_exception_handling()`.
- `LongCLIPModelHandler`, `ScoreWithEmbeddings`, `InferenceFailure`: the RunInference model handler, for
  `RunInference` directly; its inference with embeddings; what it gives a record the model failed on alone.
- `ModelSettings`, `BatchSettings`, `RecordFields`, `ImageSettings`, `InvalidSetting`: every setting.
- `OutputFields`, `REASON_CODES`, `InputError`: the output contract.
- `CheckpointNotFoundError`, `CheckpointFormatError`: a model that cannot be found or read.

The layers underneath are documented submodules, usable without Beam: `transforms.settings` (how settings are
declared), `transforms.model` (finding, checking and running a checkpoint: `locate`, `header`, `architecture`,
`device`, `scorer`), `transforms.inputs` (reading images and tokenizing captions as the transform does),
`transforms.reasons` (every reason code) and `transforms.testing` (tiny checkpoints, images, shards and
emulators for tests and benchmarks).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ScoreLongCLIP": "transforms.beam.score",
    "ScoredAndFailed": "transforms.beam.score",
    "LongCLIPModelHandler": "transforms.beam.handler",
    "ScoreWithEmbeddings": "transforms.beam.handler",
    "InferenceFailure": "transforms.model.faults",
    "ModelSettings": "transforms.settings",
    "BatchSettings": "transforms.settings",
    "RecordFields": "transforms.settings",
    "ImageSettings": "transforms.settings",
    "InvalidSetting": "transforms.settings",
    "OutputFields": "transforms.outputs",
    "REASON_CODES": "transforms.reasons",
    "InputError": "transforms.reasons",
    "CheckpointNotFoundError": "transforms.model.locate",
    "CheckpointFormatError": "transforms.model.formats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
