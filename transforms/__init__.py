"""LongCLIP image/long-caption alignment scoring as a reusable Apache Beam transform.

This module is the library's public contract: `pipeline/` (the ready job) uses nothing else. Names
load on first use, so that the settings, reason codes and output field names can be imported (by
`python -m pipeline --help`, say) without torch or Beam.

- `ScoreLongCLIP`, `ScoredAndFailed`: the Beam transform and its split output.
- `LongCLIPModelHandler`, `ScoreWithEmbeddings`: the RunInference model handler, for use with `RunInference`
  directly, and its inference when asked for embeddings; `InferenceFailure`: the inference it gives a record
  the model failed on even alone.
- `ModelSettings`, `BatchSettings`, `RecordFields`, `ImageSettings`, `SETTINGS_CLASSES`, `InvalidSetting`,
  `DEFAULT_MODEL`, `PRECISIONS`: every setting, declared once; `setting`, `check_fields`, `value_type`:
  how to declare more (the job declares its own flags with them).
- `OutputFields`, `REASON_CODES`, `InputError`: the output contract.
- `resolve_checkpoint`, `read_architecture`, `LongCLIPArchitecture`, `read_input_sizes`, `InputSizes`,
  `check_device`, `pick_device`, `resolve_precision`, `CheckpointNotFoundError`, `CheckpointFormatError`:
  finding and checking a model (`read_input_sizes` reads a checkpoint's header only, also remote ones).
- `LongCLIPScorer`, `ScoresAndFeatures`, `LongCLIPTokenizer`, `TokenizedText`, `PairPreparer`, `PreparedPair`:
  the layers underneath, usable without Beam.
- `resolve_image_location`, `AllowedPrefixes`, `read_image_bytes`, `decode_image`: reading an image as the
  transform does
  (bounded in bytes, pixels and time; failures are `InputError`s), e.g. for thumbnails.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ScoreLongCLIP": "transforms.beam.score",
    "ScoredAndFailed": "transforms.beam.score",
    "LongCLIPModelHandler": "transforms.beam.handler",
    "InferenceFailure": "transforms.beam.faults",
    "ScoreWithEmbeddings": "transforms.beam.handler",
    "ModelSettings": "transforms.settings",
    "BatchSettings": "transforms.settings",
    "RecordFields": "transforms.settings",
    "ImageSettings": "transforms.settings",
    "SETTINGS_CLASSES": "transforms.settings",
    "InvalidSetting": "transforms.settings",
    "setting": "transforms.settings",
    "check_fields": "transforms.settings",
    "value_type": "transforms.settings",
    "DEFAULT_MODEL": "transforms.settings",
    "PRECISIONS": "transforms.settings",
    "OutputFields": "transforms.outputs",
    "REASON_CODES": "transforms.reasons",
    "InputError": "transforms.reasons",
    "resolve_checkpoint": "transforms.model.locate",
    "CheckpointNotFoundError": "transforms.model.locate",
    "read_architecture": "transforms.model.architecture",
    "LongCLIPArchitecture": "transforms.model.architecture",
    "read_input_sizes": "transforms.model.header",
    "InputSizes": "transforms.model.header",
    "CheckpointFormatError": "transforms.model.formats",
    "check_device": "transforms.model.device",
    "pick_device": "transforms.model.device",
    "resolve_precision": "transforms.model.device",
    "LongCLIPScorer": "transforms.model.scorer",
    "ScoresAndFeatures": "transforms.model.scorer",
    "LongCLIPTokenizer": "transforms.inputs.tokenizer",
    "TokenizedText": "transforms.inputs.tokenizer",
    "PairPreparer": "transforms.inputs.prepare",
    "PreparedPair": "transforms.inputs.prepare",
    "resolve_image_location": "transforms.inputs.locations",
    "read_image_bytes": "transforms.inputs.fetch",
    "AllowedPrefixes": "transforms.inputs.locations",
    "decode_image": "transforms.inputs.images",
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
