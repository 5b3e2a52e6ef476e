"""Fetching and decoding images defensively, and LongCLIP's image preprocessing.

Every way an image can fail becomes an `InputError` with a reason code, never an exception that
stops the pipeline. Preprocessing stops at uint8 pixels; scaling and normalisation happen on the
model's device (see `LongCLIPScorer`), which is bit-identical to torchvision's ToTensor+Normalize
and moves 4x fewer bytes.
"""

from __future__ import annotations

import io
import os
import stat
import time
import urllib.error
import urllib.request
from typing import Any, Mapping, Optional, Union

import torch
from apache_beam.io.filesystems import FileSystems
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import CenterCrop, InterpolationMode, PILToTensor, Resize

from transforms import reasons as errors
from transforms.reasons import InputError
from transforms.settings import ImageSettings

_DEFAULTS = ImageSettings()


def image_source(value: object, image_root: Optional[str]) -> Union[str, bytes]:
    """The record's image field as inline bytes, or as a location to read (see `resolve_image_location`).

    The field may hold a location string, the image file's bytes, or a Hugging Face datasets image struct
    `{"bytes": ..., "path": ...}` (bytes win; without them, the path is the location).
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if _is_image_struct(value):
        data = value.get("bytes")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(errors.IMAGE_WRONG_TYPE, f"image bytes must be bytes, got {type(data).__name__}")
            return bytes(data)
        if value.get("path") is None:
            raise InputError(errors.IMAGE_MISSING, "the image struct has neither bytes nor a path")
        value = value["path"]
    return resolve_image_location(value, image_root)


def without_image_bytes(value: Any) -> Any:
    """What an output record keeps of its image field: inline bytes become None, an image struct its path.

    Image bytes would bloat every output (and BigQuery's JSON column refuses them); a location is kept.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if _is_image_struct(value):
        return value.get("path")
    return value


def _is_image_struct(value: object) -> bool:
    return isinstance(value, Mapping) and ("bytes" in value or "path" in value)


def resolve_image_location(location: object, image_root: Optional[str]) -> str:
    """Validates the record's image field and joins a relative path to `image_root`."""
    if location is None:
        raise InputError(errors.IMAGE_MISSING, "the record has no image path")
    if not isinstance(location, str):
        raise InputError(errors.IMAGE_WRONG_TYPE, f"image path must be a string, got {type(location).__name__}")
    location = location.strip()
    if not location:
        raise InputError(errors.IMAGE_MISSING, "the image path is empty")
    if _has_scheme(location) or os.path.isabs(location) or not image_root:
        return location
    return FileSystems.join(image_root, location) if _has_scheme(image_root) else os.path.join(image_root, location)


def read_image_bytes(
    location: str,
    *,
    max_bytes: int = _DEFAULTS.max_image_bytes,
    http_timeout_secs: float = _DEFAULTS.http_timeout_secs,
) -> bytes:
    """Reads at most `max_bytes` from a local path, an http(s) URL or any Beam FileSystems URI."""
    if location[:8].lower().startswith(("http://", "https://")):
        return _read_http(location, max_bytes, http_timeout_secs)
    try:
        data = _read_filesystems(location, max_bytes) if _has_scheme(location) else _read_local(location, max_bytes)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(errors.IMAGE_NOT_FOUND, f"{location} does not exist") from None
    except Exception as exc:  # permissions, network file systems, bad URIs: all per-record failures
        raise InputError(errors.IMAGE_UNREADABLE, f"cannot read {location}: {exc}") from None
    return _within_limit(data, location, max_bytes)


def _read_filesystems(uri: str, max_bytes: int) -> bytes:
    """Reads through Beam FileSystems; only a failed read pays the extra existence check that names it."""
    try:
        with FileSystems.open(uri, compression_type="uncompressed") as stream:
            return stream.read(max_bytes + 1)
    except Exception:
        if not FileSystems.exists(uri):  # each scheme raises its own "not found"; this asks them all alike
            raise FileNotFoundError(uri) from None
        raise


def _read_local(path: str, max_bytes: int) -> bytes:
    """Reads a regular file; FIFOs, devices and directories are refused without blocking on them."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as stream:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(errors.IMAGE_UNREADABLE, f"{path} is a directory, not an image file")
        if not stat.S_ISREG(mode):
            raise InputError(errors.IMAGE_UNREADABLE, f"{path} is not a regular file")
        return stream.read(max_bytes + 1)


def _read_http(url: str, max_bytes: int, timeout: float) -> bytes:
    """GETs at most `max_bytes`; `timeout` bounds the whole fetch, not only each socket operation."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "longclip-beam"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputError(errors.IMAGE_TOO_LARGE, f"{url} is {declared} bytes, over the {max_bytes}-byte limit")
            chunks, size = [], 0
            while size <= max_bytes:
                if time.monotonic() > deadline:
                    raise InputError(errors.IMAGE_UNREADABLE, f"GET {url} took longer than {timeout:g} s")
                chunk = response.read1(min(1 << 16, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
    except InputError:
        raise
    except urllib.error.HTTPError as exc:
        code = errors.IMAGE_NOT_FOUND if exc.code in (404, 410) else errors.IMAGE_UNREADABLE
        raise InputError(code, f"GET {url} answered HTTP {exc.code}") from None
    except Exception as exc:  # timeouts, DNS, refused connections, TLS
        raise InputError(errors.IMAGE_UNREADABLE, f"GET {url} failed: {exc}") from None
    return _within_limit(data, url, max_bytes)


def check_size(data: bytes, location: str, max_bytes: int) -> bytes:
    """`data`, unless it is over `max_bytes` (`image_too_large`); for inline bytes, checked like fetched ones."""
    return _within_limit(data, location, max_bytes)


def _within_limit(data: bytes, location: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise InputError(errors.IMAGE_TOO_LARGE, f"{location} is over the {max_bytes}-byte limit")
    return data


def decode_image(data: bytes, *, max_pixels: int = _DEFAULTS.max_image_pixels) -> Image.Image:
    """Decodes the first frame of any Pillow-readable image and converts it with `convert("RGB")`.

    The pixel limit is checked from the header, before any pixel is decoded. Pillow's own
    decompression-bomb error (at twice its 89.5 Mpixel warning level) caps any higher limit.
    """
    if not data:
        raise InputError(errors.IMAGE_UNDECODABLE, "the image file is empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(errors.IMAGE_TOO_LARGE, f"{width}x{height} pixels is over the {max_pixels}-pixel limit")
        image.seek(0)
        return image.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(errors.IMAGE_TOO_LARGE, str(exc)) from None
    except UnidentifiedImageError:
        raise InputError(errors.IMAGE_UNDECODABLE, "not an image format Pillow can read") from None
    except Exception as exc:  # truncated files, corrupt streams, unsupported modes
        raise InputError(errors.IMAGE_UNDECODABLE, f"cannot decode the image: {type(exc).__name__}: {exc}") from None


class ImagePreprocessor:
    """LongCLIP's `_transform(n_px)` up to the uint8 tensor: shorter side to n_px (bicubic), centre crop.

    An extreme aspect ratio would make the resized intermediate huge (2x100000 pixels resizes to
    336x16.8M), so the resized size is held to the same pixel limit as decoded images.
    """

    def __init__(self, resolution: int, max_pixels: int = _DEFAULTS.max_image_pixels):
        self.resolution = resolution
        self.max_pixels = max_pixels
        self._resize = Resize(resolution, interpolation=InterpolationMode.BICUBIC)
        self._crop = CenterCrop(resolution)
        self._to_tensor = PILToTensor()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        short, long = sorted(image.size)
        resized_long = int(self.resolution * long / short)
        if self.resolution * resized_long > self.max_pixels:
            raise InputError(
                errors.IMAGE_TOO_LARGE,
                f"a {image.size[0]}x{image.size[1]} image resizes to {self.resolution}x{resized_long}, "
                f"over the {self.max_pixels}-pixel limit (aspect ratio too extreme)",
            )
        return self._to_tensor(self._crop(self._resize(image)))


def _has_scheme(location: str) -> bool:
    return "://" in location
