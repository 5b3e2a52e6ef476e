"""Turning one input record into model-ready inputs: validated, tokenized text and a uint8 image.

No Beam here; `ScoreLongCLIP` runs this in its own step so that fetching and decoding happen
before, and apart from, batched inference. It is thread-safe: that step runs it on a thread pool.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Hashable, Mapping, NamedTuple, Optional

import torch

from transforms import reasons as errors
from transforms.inputs import images as image_io
from transforms.inputs.tokenizer import LongCLIPTokenizer, TokenizedText
from transforms.reasons import InputError
from transforms.settings import ImageSettings, RecordFields


class PreparedPair(NamedTuple):
    """One model input: uint8 image [3,R,R], unpadded token ids, and caller data passed through untouched.

    Pairs with the same `image_digest` (a digest of the image file's bytes) hold the same pixels, so a
    batch encodes that image once; None means "not known to be shared with any other pair".
    """

    image: torch.Tensor
    token_ids: tuple[int, ...]
    context: Any = None
    image_digest: Optional[str] = None


class LoadedImage(NamedTuple):
    """Preprocessed uint8 pixels and the digest of the bytes they were decoded from."""

    pixels: torch.Tensor
    digest: str


class PairPreparer:
    """Reads a record's text and image fields; every problem becomes an `InputError` with a reason."""

    def __init__(
        self,
        *,
        image_resolution: int,
        context_length: int,
        fields: RecordFields = RecordFields(),
        images: ImageSettings = ImageSettings(),
        recent_images: int = 64,
    ):
        self.fields = fields
        self.images = images
        self._tokenizer = LongCLIPTokenizer(context_length)
        self._preprocess = image_io.ImagePreprocessor(image_resolution, images.max_image_pixels)
        self._recent = _RecentLoads(recent_images)

    def tokenize_text(self, record: Mapping[str, Any]) -> TokenizedText:
        key = self.fields.text_key
        text = record.get(key)
        if text is None or (isinstance(text, float) and math.isnan(text)):
            raise InputError(errors.TEXT_MISSING, f"the record has no {key!r}")
        if not isinstance(text, str):
            raise InputError(errors.TEXT_WRONG_TYPE, f"{key!r} must be a string, got {type(text).__name__}")
        if not text.split():
            raise InputError(errors.TEXT_EMPTY, f"{key!r} is empty or only whitespace")
        return self._tokenizer(text)

    def load_image(self, record: Mapping[str, Any]) -> LoadedImage:
        """The record's image; a location among the last few loaded is fetched and decoded only once.

        Captioned datasets often list one image several times in a row (COCO has 5 captions each).
        Inline image bytes (`images.image_source`) pass the same size limit and decoding, and identical
        bytes among the last few are decoded only once too.
        """
        source = image_io.image_source(record.get(self.fields.image_key), self.images.image_root)
        if isinstance(source, str):
            return self._recent.get(source, self._load)
        data = image_io.check_size(source, "the inline image", self.images.max_image_bytes)
        digest = _digest(data)
        return self._recent.get(("inline", digest), lambda _: self._decode(data, digest, "the inline image"))

    def without_image_bytes(self, record: dict) -> dict:
        """The record as outputs carry it: inline image bytes replaced (`images.without_image_bytes`)."""
        key = self.fields.image_key
        if key not in record:
            return record
        kept = image_io.without_image_bytes(record[key])
        return record if kept is record[key] else {**record, key: kept}

    def _load(self, location: str) -> LoadedImage:
        data = image_io.read_image_bytes(
            location, max_bytes=self.images.max_image_bytes, http_timeout_secs=self.images.http_timeout_secs
        )
        return self._decode(data, _digest(data), location)

    def _decode(self, data: bytes, digest: str, location: str) -> LoadedImage:
        image = image_io.decode_image(data, max_pixels=self.images.max_image_pixels)
        try:
            return LoadedImage(self._preprocess(image), digest)
        except InputError:
            raise
        except Exception as exc:  # e.g. degenerate sizes Pillow cannot resample
            raise InputError(errors.IMAGE_UNDECODABLE, f"cannot preprocess {location}: {exc}") from None


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _RecentLoads:
    """Shares the result (or `InputError`) of loading a location among threads asking for it at about the same time.

    Bounded to the `size` most recent locations, so memory stays flat however long the input.
    Unexpected errors are not kept: a retried bundle tries the load again.
    """

    def __init__(self, size: int):
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Future] = OrderedDict()

    def get(self, location: Hashable, load) -> LoadedImage:
        with self._lock:
            future = self._entries.get(location)
            owner = future is None
            if owner:
                future = self._entries[location] = Future()
                if len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(location)
        if owner:
            try:
                future.set_result(load(location))
            except InputError as exc:
                # A fresh error, without the traceback whose frames hold the image bytes.
                future.set_exception(InputError(exc.code, exc.message))
            except BaseException as exc:
                with self._lock:
                    if self._entries.get(location) is future:
                        del self._entries[location]
                future.set_exception(exc)
        return future.result()
