"""Every setting of `ScoreLongCLIP`, declared once: a frozen dataclass per concern.

The transform and the model handler take these objects; the job's flags, their checks, the Flex
Template parameters and the README's flag table are generated from the same fields (see
`pipeline/flags.py`). Adding a setting is one field here plus the code that uses it.

Standard library only, so that flag parsing and `--help` need neither torch nor Beam.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Optional

DEFAULT_MODEL = "BeichenZhang/LongCLIP-L-336px"
PRECISIONS = ("fp32", "bf16", "fp16")


class InvalidSetting(ValueError):
    """A setting has a value it cannot take; `name` is the argument (the job's flag is `--name`)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def setting(
    default: Any,
    help: str,
    *,
    label: str,
    choices: Optional[tuple] = None,
    minimum: Optional[float] = None,
    above: Optional[float] = None,
    param_type: str = "TEXT",
    regex: Optional[str] = None,
) -> Any:
    """A dataclass field with what a flag and a Flex Template parameter need to describe it.

    `minimum` is inclusive, `above` exclusive; `param_type` and `regex` are for the Flex Template.
    """
    metadata = dict(help=help, label=label, choices=choices, minimum=minimum, above=above)
    metadata.update(param_type=param_type, regex=regex)
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(settings: Any) -> None:
    """Checks every field of a settings dataclass against its declared type, choices and bounds."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        kind, optional = value_type(hints[field.name])
        if value is None:
            if not optional:
                raise InvalidSetting(field.name, "is required")
            continue
        if kind is bool and not isinstance(value, bool):
            raise InvalidSetting(field.name, f"must be True or False, got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidSetting(field.name, f"must be a whole number, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
            raise InvalidSetting(field.name, f"must be a number, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise InvalidSetting(field.name, f"must be a string, got {value!r}")
        meta = field.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise InvalidSetting(field.name, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise InvalidSetting(field.name, f"must be at least {meta['minimum']:g}, got {value!r}")
        if meta.get("above") is not None and not value > meta["above"]:
            raise InvalidSetting(field.name, f"must be more than {meta['above']:g}, got {value!r}")


def value_type(hint: Any) -> tuple[type, bool]:
    """`(bool|int|float|str, optional)` of a field's annotation, e.g. `Optional[int]` -> `(int, True)`."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0], True
    return hint, False


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which checkpoint, where and how it runs."""

    model: str = setting(
        DEFAULT_MODEL,
        "Hugging Face Hub id, local file (.pt, .safetensors) or folder (also a Hugging Face CLIPModel), "
        "or gs:// URI of a LongCLIP checkpoint",
        label="LongCLIP checkpoint",
    )
    device: Optional[str] = setting(
        None,
        "cpu, cuda or cuda:N (default: cuda if available, else cpu)",
        label="Device",
        regex="^(cpu|cuda(:[0-9]+)?)$",
    )
    precision: str = setting(
        "fp32",
        "model weights: fp32 (exact), or bf16/fp16 for faster GPUs (see README, Performance)",
        label="Weights precision",
        choices=PRECISIONS,
    )
    stored_weights: bool = setting(
        False,
        "use a LongCLIP/OpenAI checkpoint's weights as stored; by default they are rounded to fp16 as "
        "LongCLIP's own loader does, so scores equal the original evaluator's",
        label="Weights as stored",
    )
    share_model_across_processes: bool = setting(
        False,
        "load one model per machine, shared by all its worker processes (use on GPU workers)",
        label="One model per worker",
    )
    model_copies: Optional[int] = setting(
        None,
        "with share_model_across_processes: copies of the model per machine, e.g. one per GPU (default: 1)",
        label="Model copies per worker",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.model.strip():
            raise InvalidSetting("model", "is empty: pass a Hub id, a checkpoint file, a folder or a gs:// URI")


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """How Beam's BatchElements groups records for the model."""

    min_batch_size: int = setting(1, "smallest inference batch", label="Smallest inference batch", minimum=1)
    max_batch_size: int = setting(
        32, "largest inference batch (at least min_batch_size)", label="Largest inference batch", minimum=1
    )
    max_batch_duration_secs: Optional[float] = setting(
        None,
        "streaming on Dataflow: let batches fill across bundles, each record waiting at most this long "
        "(default: batches never outlive a bundle, so no record waits for others)",
        label="Batch wait (seconds)",
        above=0,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.max_batch_size < self.min_batch_size:
            raise InvalidSetting(
                "max_batch_size", f"must be at least min_batch_size ({self.min_batch_size}), got {self.max_batch_size}"
            )


@dataclasses.dataclass(frozen=True)
class RecordFields:
    """Which record fields hold the image and the caption, and which output fields are added, named how."""

    image_key: str = setting("image_path", "field holding the image path or URL", label="Image field")
    text_key: str = setting("text", "field holding the caption", label="Caption field")
    output_key: str = setting(
        "longclip_score",
        "field for the score; <key>_error, <key>_reason and <key>_truncated are added beside it",
        label="Score field",
    )
    embeddings: bool = setting(
        False,
        "also add <key>_image_embedding and <key>_text_embedding: the L2-normalised float32 features the "
        "score is the cosine of (null when the record failed)",
        label="Keep embeddings",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for field in dataclasses.fields(self):
            if isinstance(getattr(self, field.name), str) and not getattr(self, field.name):
                raise InvalidSetting(field.name, "is empty")


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """Where relative image paths live, what an image may cost, and how many are read at once."""

    image_root: Optional[str] = setting(
        None, "folder or URI prefix for relative image paths (default: the working directory)", label="Image root"
    )
    max_image_bytes: int = setting(
        64 * 1024 * 1024,
        "larger image files are scored 0.0 with image_too_large",
        label="Image size limit (bytes)",
        minimum=1,
    )
    max_image_pixels: int = setting(
        89_478_485,  # Pillow's decompression-bomb warning level
        "images with more pixels are refused as decompression bombs (image_too_large)",
        label="Image pixel limit",
        minimum=1,
    )
    http_timeout_secs: float = setting(
        30.0, "time limit for fetching one http(s) image, body included", label="HTTP timeout (seconds)", above=0
    )
    prepare_threads: int = setting(
        4,
        "threads per worker process that fetch and decode images while the model scores",
        label="Image threads",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)


SETTINGS_CLASSES = (ModelSettings, BatchSettings, RecordFields, ImageSettings)
