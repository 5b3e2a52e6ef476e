"""Fetching and decoding images defensively, and LongCLIP's image preprocessing.

Every way an image can fail becomes an `InputError` with a reason code, never an exception that
stops the pipeline. Preprocessing stops at uint8 pixels; scaling and normalisation happen on the
model's device (see `LongCLIPScorer`), which is bit-identical to torchvision's ToTensor+Normalize
and moves 4x fewer bytes.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from typing import Optional

import numpy as np
import torch
from apache_beam.io.filesystems import FileSystems
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import CenterCrop, InterpolationMode, PILToTensor, Resize

from transforms import input_errors as errors
from transforms.input_errors import InputError

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold
DEFAULT_HTTP_TIMEOUT_SECS = 30.0

_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


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
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    http_timeout_secs: float = DEFAULT_HTTP_TIMEOUT_SECS,
) -> bytes:
    """Reads at most `max_bytes` from a local path, an http(s) URL or any Beam FileSystems URI."""
    if location.startswith(("http://", "https://")):
        return _read_http(location, max_bytes, http_timeout_secs)
    try:
        if _has_scheme(location):
            if not FileSystems.exists(location):
                raise InputError(errors.IMAGE_NOT_FOUND, f"{location} does not exist")
            stream = FileSystems.open(location, compression_type="uncompressed")
        else:
            stream = open(location, "rb")
        with stream:
            data = stream.read(max_bytes + 1)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(errors.IMAGE_NOT_FOUND, f"{location} does not exist") from None
    except IsADirectoryError:
        raise InputError(errors.IMAGE_UNREADABLE, f"{location} is a directory, not an image file") from None
    except Exception as exc:  # permissions, network file systems, bad URIs: all per-record failures
        raise InputError(errors.IMAGE_UNREADABLE, f"cannot read {location}: {exc}") from None
    return _within_limit(data, location, max_bytes)


def _read_http(url: str, max_bytes: int, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "longclip-beam"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputError(errors.IMAGE_TOO_LARGE, f"{url} is {declared} bytes, over the {max_bytes}-byte limit")
            data = response.read(max_bytes + 1)
    except InputError:
        raise
    except urllib.error.HTTPError as exc:
        code = errors.IMAGE_NOT_FOUND if exc.code in (404, 410) else errors.IMAGE_UNREADABLE
        raise InputError(code, f"GET {url} answered HTTP {exc.code}") from None
    except Exception as exc:  # timeouts, DNS, refused connections, TLS
        raise InputError(errors.IMAGE_UNREADABLE, f"GET {url} failed: {exc}") from None
    return _within_limit(data, url, max_bytes)


def _within_limit(data: bytes, location: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise InputError(errors.IMAGE_TOO_LARGE, f"{location} is over the {max_bytes}-byte limit")
    return data


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decodes the first frame of any Pillow-readable image into RGB, refusing decompression bombs."""
    if not data:
        raise InputError(errors.IMAGE_UNDECODABLE, "the image file is empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(errors.IMAGE_TOO_LARGE, f"{width}x{height} pixels is over the {max_pixels}-pixel limit")
        image.seek(0)
        image.load()
        return _to_rgb(image)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(errors.IMAGE_TOO_LARGE, str(exc)) from None
    except UnidentifiedImageError:
        raise InputError(errors.IMAGE_UNDECODABLE, "not an image format Pillow can read") from None
    except Exception as exc:  # truncated files, corrupt streams, unsupported modes
        raise InputError(errors.IMAGE_UNDECODABLE, f"cannot decode the image: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """`convert("RGB")`, except that 16-bit and float greyscale are scaled, not clipped to white."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(pixels / 257.0, 0, 255).round().astype(np.uint8), mode="L")
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        scale = 255.0 if pixels.size and np.nanmax(pixels) <= 1.0 else 1.0
        image = Image.fromarray(np.clip(np.nan_to_num(pixels * scale), 0, 255).round().astype(np.uint8), mode="L")
    return image.convert("RGB")


class ImagePreprocessor:
    """LongCLIP's `_transform(n_px)` up to the uint8 tensor: shorter side to n_px (bicubic), centre crop."""

    def __init__(self, resolution: int):
        self.resolution = resolution
        self._resize = Resize(resolution, interpolation=InterpolationMode.BICUBIC)
        self._crop = CenterCrop(resolution)
        self._to_tensor = PILToTensor()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self._to_tensor(self._crop(self._resize(image)))


def _has_scheme(location: str) -> bool:
    return "://" in location
