"""Turning one input record into model-ready inputs: validated, tokenized text and a uint8 image.

No Beam here; `ScoreLongCLIP` runs this in its own step so that fetching and decoding happen
before, and apart from, batched inference.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional

import torch

from transforms import images
from transforms import input_errors as errors
from transforms.input_errors import InputError
from transforms.tokenizer import LongCLIPTokenizer, TokenizedText


class PreparedPair(NamedTuple):
    """One model input: uint8 image [3,R,R], unpadded token ids, and caller data passed through untouched."""

    image: torch.Tensor
    token_ids: tuple[int, ...]
    context: Any = None


class PairPreparer:
    """Reads a record's text and image fields; every problem becomes an `InputError` with a reason."""

    def __init__(
        self,
        *,
        image_resolution: int,
        context_length: int,
        image_key: str = "image_path",
        text_key: str = "text",
        image_root: Optional[str] = None,
        max_image_bytes: int = images.DEFAULT_MAX_IMAGE_BYTES,
        max_image_pixels: int = images.DEFAULT_MAX_IMAGE_PIXELS,
        http_timeout_secs: float = images.DEFAULT_HTTP_TIMEOUT_SECS,
    ):
        self.image_key = image_key
        self.text_key = text_key
        self.image_root = image_root
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.http_timeout_secs = http_timeout_secs
        self._tokenizer = LongCLIPTokenizer(context_length)
        self._preprocess = images.ImagePreprocessor(image_resolution, max_image_pixels)

    def tokenize_text(self, record: Mapping[str, Any]) -> TokenizedText:
        text = record.get(self.text_key)
        if text is None or (isinstance(text, float) and math.isnan(text)):
            raise InputError(errors.TEXT_MISSING, f"the record has no {self.text_key!r}")
        if not isinstance(text, str):
            raise InputError(errors.TEXT_WRONG_TYPE, f"{self.text_key!r} must be a string, got {type(text).__name__}")
        if not text.split():
            raise InputError(errors.TEXT_EMPTY, f"{self.text_key!r} is empty or only whitespace")
        return self._tokenizer(text)

    def load_image(self, record: Mapping[str, Any]) -> torch.Tensor:
        location = images.resolve_image_location(record.get(self.image_key), self.image_root)
        data = images.read_image_bytes(
            location, max_bytes=self.max_image_bytes, http_timeout_secs=self.http_timeout_secs
        )
        image = images.decode_image(data, max_pixels=self.max_image_pixels)
        try:
            return self._preprocess(image)
        except InputError:
            raise
        except Exception as exc:  # e.g. degenerate sizes Pillow cannot resample
            raise InputError(errors.IMAGE_UNDECODABLE, f"cannot preprocess {location}: {exc}") from None
