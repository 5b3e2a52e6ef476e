"""Every setting of `ScoreLongCLIP`, declared once: a frozen dataclass per concern.

The transform and the model handler take these objects; the job's flags, their checks, the Flex
Template parameters and the flag table of docs/flags.md are generated from the same fields (see
`pipeline/cli/`). Adding a setting is one field here plus the code that uses it.

Standard library only, so that flag parsing and `--help` need neither torch nor Beam.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Optional

DEFAULT_MODEL = "BeichenZhang/LongCLIP-L-336px"
PRECISIONS = ("fp32", "bf16", "fp16")
# "auto": the fastest precision the device computes well (see transforms.model.device.resolve_precision).
PRECISION_CHOICES = (*PRECISIONS, "auto")
# What to do with a caption past the model's context (transforms.inputs.chunks).
LONG_CAPTIONS = ("truncate", "chunks")
# The devices the model runs on; checked here, without torch, so a typo fails before anything loads.
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"


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
    maximum: Optional[float] = None,
    param_type: str = "TEXT",
    regex: Optional[str] = None,
) -> Any:
    """A dataclass field with what a flag and a Flex Template parameter need to describe it.

    `minimum` and `maximum` are inclusive, `above` exclusive; `param_type` and `regex` are for the Flex Template.
    """
    metadata = dict(help=help, label=label, choices=choices, minimum=minimum, above=above, maximum=maximum)
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
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise InvalidSetting(field.name, f"must be at most {meta['maximum']:g}, got {value!r}")


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
        regex=DEVICE_PATTERN,
    )
    precision: str = setting(
        "fp32",
        "fp32 (exact), bf16 or fp16 (faster, scores within about 1e-3; see docs/performance.md), or auto: "
        "bf16 on CPUs with bf16 instructions (AVX512-BF16, AMX) and on Ampere or newer GPUs, fp16 on older "
        "GPUs, else fp32",
        label="Precision",
        choices=PRECISION_CHOICES,
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
    max_concurrent_batches: int = setting(
        1,
        "batches one model scores at once; other callers (threads, or processes sharing the model) wait, so GPU "
        "memory holds one batch's activations",
        label="Batches scored at once",
        minimum=1,
    )
    image_resolution: Optional[int] = setting(
        None,
        "the checkpoint's image size in pixels, e.g. 336 (default: read from the checkpoint's header when the "
        "pipeline is built; give it with context_length where the launching machine cannot read the checkpoint)",
        label="Image resolution",
        minimum=1,
    )
    context_length: Optional[int] = setting(
        None,
        "the checkpoint's text context in tokens, e.g. 248 (default: read with image_resolution)",
        label="Context length",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.model.strip():
            raise InvalidSetting("model", "is empty: pass a Hub id, a checkpoint file, a folder or a gs:// URI")
        if self.device is not None and not re.fullmatch(DEVICE_PATTERN, self.device):
            raise InvalidSetting(
                "device", f"{self.device!r} is not a torch device this job runs on; pass cpu, cuda or cuda:N"
            )
        if (self.image_resolution is None) != (self.context_length is None):
            missing = "context_length" if self.context_length is None else "image_resolution"
            raise InvalidSetting(missing, "give image_resolution and context_length together, or neither")


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
    long_captions: str = setting(
        "truncate",
        "captions past the model's context: truncate (cut as the original LongCLIP evaluator does, and flagged) "
        "or chunks (split at sentences into chunks that each fit, every word scored: the score is the mean of "
        "the chunk scores, with <key>_min and <key>_chunks beside it)",
        label="Long captions",
        choices=LONG_CAPTIONS,
    )
    sentence_scores: bool = setting(
        False,
        "also score each sentence of every caption alone against the image: <key>_sentences, a list of "
        "{start, end, score} (null when the record failed)",
        label="Sentence scores",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for field in dataclasses.fields(self):
            if isinstance(getattr(self, field.name), str) and not getattr(self, field.name):
                raise InvalidSetting(field.name, "is empty")


# Pillow refuses any image over twice `PIL.Image.MAX_IMAGE_PIXELS` as a decompression bomb, whatever a
# caller allows, so no pixel limit can be higher. Written out to keep this module standard-library only;
# a test checks it against the installed Pillow.
PILLOW_PIXEL_LIMIT = 2 * 89_478_485


def image_prefixes(text: str) -> tuple[str, ...]:
    """The entries of `allowed_image_prefixes`, checked for form: folders, `scheme://`, or URI prefixes."""
    entries = tuple(entry.strip() for entry in text.split(",") if entry.strip())
    if not entries:
        raise InvalidSetting(
            "allowed_image_prefixes", "is empty: list folders, schemes or URL prefixes, comma-separated"
        )
    for entry in entries:
        if "://" not in entry:
            continue  # a local folder
        scheme, rest = entry.split("://", 1)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
            raise InvalidSetting("allowed_image_prefixes", f"{entry!r} does not start with a scheme such as https://")
        if scheme.lower() in ("http", "https"):
            host = rest.split("/", 1)[0]
            if rest and not host:
                raise InvalidSetting("allowed_image_prefixes", f"{entry!r} has no host: write {scheme}://HOST/PATH")
            if "@" in host or "?" in rest or "#" in rest:
                raise InvalidSetting(
                    "allowed_image_prefixes", f"{entry!r} must be scheme://host[:port]/path, without user, query or #"
                )
    return entries


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
        f"images with more pixels are refused as decompression bombs (image_too_large); at most {PILLOW_PIXEL_LIMIT}, "
        "Pillow's own limit",
        label="Image pixel limit",
        minimum=1,
    )
    http_timeout_secs: float = setting(
        30.0,
        "deadline for reading one remote image (http(s), gs:// or any Beam FileSystems scheme): connecting, the "
        "answer, the body and retries of transient failures together",
        label="Remote image deadline (seconds)",
        above=0,
    )
    prepare_threads: int = setting(
        4,
        "threads per worker process that decode and resize images while the model scores (every record in flight "
        "is fetched at once)",
        label="Image threads",
        minimum=1,
    )
    allowed_image_prefixes: Optional[str] = setting(
        None,
        "comma-separated folders, schemes (gs://) and URL prefixes (https://host/path) that images may be read "
        "from; any other location is image_not_allowed, also after a redirect (default: anywhere; link-local and "
        "cloud metadata addresses never)",
        label="Allowed image locations",
        regex=r"^\S.*$",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.max_image_pixels > PILLOW_PIXEL_LIMIT:
            raise InvalidSetting(
                "max_image_pixels",
                f"must be at most {PILLOW_PIXEL_LIMIT}, got {self.max_image_pixels}: Pillow refuses larger images as "
                "decompression bombs whatever this limit says",
            )
        if self.allowed_image_prefixes is not None:
            image_prefixes(self.allowed_image_prefixes)


SETTINGS_CLASSES = (ModelSettings, BatchSettings, RecordFields, ImageSettings)
