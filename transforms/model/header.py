"""A checkpoint's image resolution and context length, read from its header, never from its weights.

No Beam import at module level. The machine that builds the pipeline needs both numbers (images are resized
and captions tokenized before the model), but must not download a 1.7 GB checkpoint for two integers:

- a local file or folder: the tensor shapes, memory-mapped or from the safetensors header (`read_architecture`);
- a Beam FileSystems URI (`gs://...`): a seekable stream, of which only the safetensors JSON header, or the
  zip directory and the pickle of a `torch.save` file are read; tensors come back as shapes, storages unread;
- a Hugging Face Hub id: the local Hub cache when it holds the repo, else `config.json` (CLIPModel repos) or
  ranged reads of the one weights file.

Where none of this works (a legacy non-zip `.pt` behind a URI, say), the settings `image_resolution` and
`context_length` state the numbers instead.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import torch

from transforms.model.architecture import LongCLIPArchitecture, read_architecture
from transforms.model.formats import (
    ACCEPTED_FORMATS,
    HF_CONFIG,
    SAFETENSORS_SUFFIX,
    Checkpoint,
    CheckpointFormatError,
    unwrap_state_dict,
)
from transforms.model.locate import (
    CheckpointNotFoundError,
    checkpoint_size,
    choose_files,
    is_hub_id,
    resolve_checkpoint,
)

_LOGGER = logging.getLogger(__name__)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header, or the pickle of a state dict, is far smaller


@dataclass(frozen=True)
class InputSizes:
    """What preparing records needs from the checkpoint: images are resized to `image_resolution` pixels,
    captions tokenized to `context_length` tokens."""

    image_resolution: int
    context_length: int

    @classmethod
    def of(cls, architecture: LongCLIPArchitecture) -> "InputSizes":
        return cls(architecture.image_resolution, architecture.context_length)


def read_input_sizes(model: str) -> InputSizes:
    """The input sizes of `model` (as `resolve_checkpoint` takes it), reading a header only.

    Raises `CheckpointNotFoundError` or `CheckpointFormatError`, whose message says to give
    `image_resolution` and `context_length` where the header cannot be read.
    """
    model = str(model)
    try:
        if "://" in model:
            return _sizes_at_uri(model)
        if is_hub_id(model):
            return _sizes_on_hub(model)
        return InputSizes.of(read_architecture(resolve_checkpoint(model)))
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        raise type(exc)(
            f"{exc} (to build the pipeline without reading the checkpoint, give image_resolution and "
            "context_length, e.g. 336 and 248 for LongCLIP-L-336px)"
        ) from exc


def sizes_from_stream(stream: IO[bytes], name: str) -> InputSizes:
    """Input sizes from a seekable binary stream of a checkpoint file called `name` (its suffix tells
    safetensors from a `torch.save` zip), reading its header only."""
    if name.lower().endswith(SAFETENSORS_SUFFIX):
        tensors = _safetensors_shapes(stream, name)
        if any(key.startswith("text_model.") for key in tensors):
            raise CheckpointFormatError(
                f"{name} holds Hugging Face CLIPModel weights; pass the folder (or Hub repo) with its {HF_CONFIG}"
            )
    else:
        tensors = _torch_zip_shapes(stream, name)
    checkpoint = Checkpoint(unwrap_state_dict(tensors, name), name, rounded_by_original_loader=True)
    return InputSizes.of(LongCLIPArchitecture.from_checkpoint(checkpoint))


def sizes_from_huggingface_config(config: dict) -> InputSizes:
    """Input sizes from a CLIPModel `config.json`, with transformers' defaults where it leaves them out."""
    vision = config.get("vision_config") or config.get("vision_config_dict") or {}
    text = config.get("text_config") or config.get("text_config_dict") or {}
    return InputSizes(int(vision.get("image_size", 224)), int(text.get("max_position_embeddings", 77)))


def _sizes_at_uri(uri: str) -> InputSizes:
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    size = checkpoint_size(uri)
    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        stream = _CountingReader(raw)
        sizes = sizes_from_stream(stream, uri)
    _LOGGER.info("Read the input sizes of %s from %d of its %d bytes: %s", uri, stream.consumed, size, sizes)
    return sizes


def _sizes_on_hub(repo_id: str) -> InputSizes:
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download

    try:
        cached = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        cached = None
    if cached is not None and (cached / HF_CONFIG).is_file():  # a CLIPModel repo seen before
        return sizes_from_huggingface_config(json.loads((cached / HF_CONFIG).read_text(encoding="utf-8")))
    if cached is not None:  # downloaded before (or offline): read it here
        try:
            return InputSizes.of(read_architecture(resolve_checkpoint(str(cached))))
        except CheckpointNotFoundError:
            pass  # the cache holds other files of the repo, not its weights: ask the Hub
    try:
        names = [name for name in HfApi().list_repo_files(repo_id) if "/" not in name]
    except Exception as exc:
        raise CheckpointNotFoundError(
            f"cannot list Hub repo {repo_id!r} to read its input sizes ({type(exc).__name__}: {exc})"
        ) from exc
    chosen = choose_files(names, f"Hub repo {repo_id}")
    if chosen[0] == HF_CONFIG:
        return sizes_from_huggingface_config(json.loads(Path(hf_hub_download(repo_id, HF_CONFIG)).read_text()))
    with HfFileSystem().open(f"{repo_id}/{chosen[0]}", "rb") as stream:
        return sizes_from_stream(stream, chosen[0])


def _safetensors_shapes(stream: IO[bytes], name: str) -> dict[str, torch.Tensor]:
    """safetensors files start with an 8-byte little-endian header length, then that much JSON."""
    try:
        (length,) = struct.unpack("<Q", stream.read(8))
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"a {length}-byte header")
        header = json.loads(stream.read(length))
        return {
            key: torch.empty(entry["shape"], device="meta") for key, entry in header.items() if key != "__metadata__"
        }
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CheckpointFormatError(f"cannot read {name} as safetensors ({exc}). Accepted: {ACCEPTED_FORMATS}") from exc


def _torch_zip_shapes(stream: IO[bytes], name: str) -> Any:
    """The object `torch.save` pickled, with every tensor a meta tensor of its shape: only the zip's directory
    and its `data.pkl` are read, never the storages."""
    try:
        with zipfile.ZipFile(stream) as archive:
            pickles = [entry for entry in archive.infolist() if entry.filename.rsplit("/", 1)[-1] == "data.pkl"]
            if len(pickles) != 1 or pickles[0].file_size > _MAX_HEADER_BYTES:
                raise CheckpointFormatError(f"{name} is a zip file but not one torch.save wrote")
            return _ShapesUnpickler(io.BytesIO(archive.read(pickles[0]))).load()
    except zipfile.BadZipFile:
        raise CheckpointFormatError(
            f"{name} is not a zip-format torch.save file, so its header cannot be read without the whole file"
        ) from None
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read the tensor shapes in {name}: {exc}") from exc


def _rebuild_tensor(storage, storage_offset, size, stride, *args) -> torch.Tensor:
    return torch.empty(tuple(size), device="meta")


def _rebuild_parameter(data, *args) -> torch.Tensor:
    return data


class _ShapesUnpickler(pickle.Unpickler):
    """Unpickles a plain state dict: dicts, tensors and their storages' type names; anything else is refused
    (nothing runs), and storages are never loaded (`persistent_load` hands back nothing)."""

    _CLASSES: dict[tuple[str, str], Callable[..., Any]] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "dict"): dict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return name
        try:
            return self._CLASSES[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain state dict") from None

    def persistent_load(self, pid: Any) -> None:
        return None


class _CountingReader(io.RawIOBase):
    """A seekable stream that counts the bytes read through it, for the log."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.consumed += len(data)
        return len(data)
