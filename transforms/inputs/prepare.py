"""Turning one input record into model-ready inputs: validated, tokenized text and a uint8 image.

No Beam here; `ScoreLongCLIP` runs this in its own step so that fetching and decoding happen
before, and apart from, batched inference. It is thread-safe: that step runs it on a thread pool.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Hashable, Mapping, NamedTuple, Optional, Sequence

import regex
import torch

from transforms import reasons
from transforms.inputs import images as image_io
from transforms.inputs.chunks import plan_chunks, sentence_pieces, token_counter
from transforms.inputs.fetch import check_size, read_image_bytes
from transforms.inputs.locations import AllowedPrefixes, image_source, redact, without_image_bytes
from transforms.inputs.tokenizer import LongCLIPTokenizer, TokenizedText
from transforms.reasons import InputError
from transforms.settings import ImageSettings, RecordFields

# A character that shows: not whitespace, a control or format character (zero-width, direction marks),
# nor a lone combining mark. A caption without one is empty, whatever the tokenizer would make of it.
_VISIBLE = regex.compile(r"[^\s\p{Cc}\p{Cf}\p{Z}\p{Mn}\p{Me}]")


class PreparedPair(NamedTuple):
    """One model input: uint8 image [3,R,R], unpadded token ids, and caller data passed through untouched.

    Pairs with the same `image_digest` (a digest of the image file's bytes) hold the same pixels, so a
    batch encodes that image once; None means "not known to be shared with any other pair".
    `chunk_token_ids`: a caption past the context, as chunks that fit (its score is then their mean);
    `sentence_token_ids`: its sentences, each scored alone too. Empty: not asked for (or the caption fits).
    """

    image: torch.Tensor
    token_ids: tuple[int, ...]
    context: Any = None
    image_digest: Optional[str] = None
    chunk_token_ids: tuple[tuple[int, ...], ...] = ()
    sentence_token_ids: tuple[tuple[int, ...], ...] = ()


class CaptionParts(NamedTuple):
    """A caption tokenized as the original evaluator does (`text`: truncated to the context, and flagged),
    and, as asked, the spans of its chunks and sentences (offsets into the caption as given) with their ids.

    `chunks` is None when chunks are not asked for, and `((0, len(caption)),)` for a caption that fits (it
    is its own one chunk, scored as `text`: `chunk_ids` is then empty)."""

    text: TokenizedText
    chunks: Optional[tuple[tuple[int, int], ...]] = None
    chunk_ids: tuple[tuple[int, ...], ...] = ()
    sentences: Optional[tuple[tuple[int, int], ...]] = None
    sentence_ids: tuple[tuple[int, ...], ...] = ()


class LoadedImage(NamedTuple):
    """Preprocessed uint8 pixels and the digest of the bytes they were decoded from."""

    pixels: torch.Tensor
    digest: str


class PairPreparer:
    """Reads a record's text and image fields; every problem becomes an `InputError` with a reason.

    Any number of threads may fetch images at once (a stalled read must not keep others from starting),
    but only `images.prepare_threads` threads decode and resize, which bounds memory.
    """

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
        self._room = context_length - 2  # the start and end tokens
        self._count_tokens = token_counter(self._tokenizer, self._room)
        self._preprocess = image_io.ImagePreprocessor(image_resolution, images.max_image_pixels)
        self._recent = _RecentLoads(recent_images)
        self._allowed = AllowedPrefixes(images.allowed_image_prefixes)
        # Decoding runs on these threads only, however many fetch: glibc keeps the freed memory of a decoded
        # image in the malloc arena of the thread that made it, so decoding on every fetching thread would
        # multiply the peak memory by their number.
        self._decoder = ThreadPoolExecutor(images.prepare_threads, thread_name_prefix="decode")

    def tokenize_text(self, record: Mapping[str, Any]) -> TokenizedText:
        key = self.fields.text_key
        text = record.get(key)
        if text is None or (isinstance(text, float) and math.isnan(text)):
            raise InputError(reasons.TEXT_MISSING, f"the record has no {key!r}")
        if not isinstance(text, str):
            raise InputError(reasons.TEXT_WRONG_TYPE, f"{key!r} must be a string, got {type(text).__name__}")
        if not _VISIBLE.search(text):
            raise InputError(
                reasons.TEXT_EMPTY, f"{key!r} has no visible characters (only spaces, control or zero-width)"
            )
        tokens = self._tokenizer(text)
        if len(tokens.ids) <= 2:  # only SOT and EOT
            raise InputError(reasons.TEXT_EMPTY, f"{key!r} leaves no tokens after LongCLIP's text cleaning")
        return tokens

    def caption_parts(self, record: Mapping[str, Any]) -> CaptionParts:
        """The caption tokenized, with its chunks (`long_captions="chunks"`) and sentences (`sentence_scores`):
        each part is `caption[start:end]`, tokenized exactly as a caption is, and fits the context."""
        tokens = self.tokenize_text(record)
        fields = self.fields
        if fields.long_captions != "chunks" and not fields.sentence_scores:
            return CaptionParts(tokens)
        text = record[fields.text_key]
        chunks, chunk_ids = None, ()
        if fields.long_captions == "chunks":
            chunks = ((0, len(text)),)
            if tokens.truncated:
                chunks = tuple(plan_chunks(text, self._count_tokens, self._room))
                chunk_ids = self._part_ids(text, chunks)
        sentences, sentence_ids = None, ()
        if fields.sentence_scores:
            sentences = tuple(sentence_pieces(text, self._count_tokens, self._room))
            sentence_ids = self._part_ids(text, sentences)
        return CaptionParts(
            tokens._replace(truncated=tokens.truncated and chunks is None), chunks, chunk_ids, sentences, sentence_ids
        )

    def _part_ids(self, text: str, spans: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], ...]:
        ids = []
        for start, end in spans:
            part = self._tokenizer(text[start:end])
            assert not part.truncated, "a planned part always fits the context"
            ids.append(part.ids)
        return tuple(ids)

    def load_image(self, record: Mapping[str, Any]) -> LoadedImage:
        """The record's image; a location among the last few loaded is fetched and decoded only once.

        Captioned datasets often list one image several times in a row (COCO has 5 captions each).
        Inline image bytes (`locations.image_source`) pass the same size limit and decoding, and identical
        bytes among the last few are decoded only once too.
        """
        source = image_source(record.get(self.fields.image_key), self.images.image_root)
        if isinstance(source, str):
            return self._recent.get(source, self._load)
        data = check_size(source, "the inline image", self.images.max_image_bytes)
        digest = _digest(data)
        return self._recent.get(("inline", digest), lambda _: self._decoded(data, digest, "the inline image"))

    def without_image_bytes(self, record: dict) -> dict:
        """The record as outputs carry it: inline image bytes replaced (`locations.without_image_bytes`)."""
        key = self.fields.image_key
        if key not in record:
            return record
        kept = without_image_bytes(record[key])
        return record if kept is record[key] else {**record, key: kept}

    def _load(self, location: str) -> LoadedImage:
        data = read_image_bytes(
            location,
            max_bytes=self.images.max_image_bytes,
            timeout_secs=self.images.http_timeout_secs,
            allowed=self._allowed,
        )
        return self._decoded(data, _digest(data), location)

    def _decoded(self, data: bytes, digest: str, location: str) -> LoadedImage:
        return LoadedImage(self._decoder.submit(self._decode, data, location).result(), digest)

    def _decode(self, data: bytes, location: str) -> torch.Tensor:
        image = image_io.decode_image(data, max_pixels=self.images.max_image_pixels)
        try:
            return self._preprocess(image)
        except InputError:
            raise
        except Exception as exc:  # e.g. degenerate sizes Pillow cannot resample
            message = f"cannot preprocess {redact(location)}: {type(exc).__name__}"
            raise InputError(reasons.IMAGE_UNDECODABLE, message) from None

    def close(self) -> None:
        """Stops the decoding threads (a preparer that is dropped leaves them idle until the process ends)."""
        self._decoder.shutdown(wait=True)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _RecentLoads:
    """Shares the result (or `InputError`) of loading a location among threads asking for it at about the same time.

    Bounded to the `size` most recent locations, so memory stays flat however long the input.
    Unexpected errors and transient failures are not kept: a retried bundle or a later record tries again.
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
                if exc.reason in reasons.TRANSIENT_CODES:  # a later record asking again tries again
                    self._forget(location, future)
                # A fresh error, without the traceback whose frames hold the image bytes.
                future.set_exception(InputError(exc.reason, exc.message))
            except BaseException as exc:
                self._forget(location, future)
                future.set_exception(exc)
        return future.result()

    def _forget(self, location: str, future: Future) -> None:
        with self._lock:
            if self._entries.get(location) is future:
                del self._entries[location]
