"""Decoding images defensively, and LongCLIP's image preprocessing.

Every way an image can fail becomes an `InputError` with a reason code, never an exception that
stops the pipeline, and no message quotes the file's content. Only the decoders of ordinary image
formats are enabled (`ENABLED_FORMATS`): Pillow's others (EPS, which would start Ghostscript, PSD,
ICO, FITS, ...) never see a record's bytes. Preprocessing stops at uint8 pixels; scaling and
normalisation happen on the model's device (see `LongCLIPScorer`), which is bit-identical to
torchvision's ToTensor+Normalize and moves 4x fewer bytes. Reading the bytes is `fetch.py`'s.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from transforms import reasons
from transforms.reasons import InputError
from transforms.settings import ImageSettings

if TYPE_CHECKING:  # torch is imported where pixels become a tensor: the report decodes images without it
    import torch

_DEFAULTS = ImageSettings()

# The Pillow decoders records may reach, tried in this order (those this Pillow build has); JPEG includes MPO,
# the multi-picture JPEG that cameras write.
ORDINARY_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "BMP", "TIFF")
Image.init()  # registers every plugin (imports only); nothing outside ENABLED_FORMATS ever sees a record's bytes
ENABLED_FORMATS = tuple(name for name in ORDINARY_FORMATS if name in Image.OPEN)


def decode_image(
    data: bytes, *, max_pixels: int = _DEFAULTS.max_image_pixels, reduce_to: Optional[int] = None
) -> Image.Image:
    """Decodes the first frame of an image in an enabled format and converts it as `convert("RGB")` does.

    The pixel limit is checked from the header, before any pixel is decoded. An image already in RGB is
    returned as decoded, not copied (what `convert` would do), so that it is in memory once. With
    `reduce_to` (for previews, never for scoring), a JPEG is decoded at the smallest scale (1/2 to 1/8)
    that keeps both sides at least that many pixels: a fraction of the memory and time.
    """
    if not data:
        raise InputError(reasons.IMAGE_UNDECODABLE, "the image file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ENABLED_FORMATS)  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(reasons.IMAGE_TOO_LARGE, f"{width}x{height} pixels is over the {max_pixels}-pixel limit")
        image.seek(0)
        if reduce_to is not None:
            image.draft("RGB", (reduce_to, reduce_to))
        if image.mode == "RGB":
            image.load()
            return image
        return image.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError:
        limit = 2 * Image.MAX_IMAGE_PIXELS
        raise InputError(reasons.IMAGE_TOO_LARGE, f"over Pillow's {limit}-pixel decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise InputError(
            reasons.IMAGE_UNDECODABLE, f"not an image in an enabled format ({', '.join(ENABLED_FORMATS)})"
        ) from None
    except Exception as exc:  # truncated files, corrupt streams, unsupported modes: never quote the message
        raise InputError(reasons.IMAGE_UNDECODABLE, f"cannot decode the image: {_decoding_failure(exc)}") from None


def _decoding_failure(exc: Exception) -> str:
    """What went wrong, in words of ours: Pillow's messages can quote bytes of the file."""
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError):
        return "the file is truncated"
    if isinstance(exc, (SyntaxError, ValueError, OSError)):
        return f"corrupt or unsupported image data ({type(exc).__name__})"
    return type(exc).__name__


class ImagePreprocessor:
    """LongCLIP's `_transform(n_px)` up to the uint8 tensor: shorter side to n_px (bicubic), centre crop.

    The same Pillow calls torchvision's `Resize(n_px, BICUBIC)`, `CenterCrop(n_px)` and `PILToTensor`
    make on a PIL image (sizes and crop offsets computed as they compute them), without importing
    torchvision, which costs a job's start about a second. An extreme aspect ratio would make the
    resized intermediate huge (2x100000 pixels resizes to 336x16.8M), so the resized size is held to
    the same pixel limit as decoded images.
    """

    def __init__(self, resolution: int, max_pixels: int = _DEFAULTS.max_image_pixels):
        self.resolution = resolution
        self.max_pixels = max_pixels

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        short, long = sorted(image.size)
        resized_long = int(self.resolution * long / short)
        if self.resolution * resized_long > self.max_pixels:
            raise InputError(
                reasons.IMAGE_TOO_LARGE,
                f"a {width}x{height} image resizes to {self.resolution}x{resized_long}, "
                f"over the {self.max_pixels}-pixel limit (aspect ratio too extreme)",
            )
        size = (self.resolution, resized_long) if width <= height else (resized_long, self.resolution)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        left = int(round((size[0] - self.resolution) / 2.0))
        top = int(round((size[1] - self.resolution) / 2.0))
        image = image.crop((left, top, left + self.resolution, top + self.resolution))
        import torch

        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
