"""Small inline thumbnails of the rows a report shows, read from where the job read each image.

The image is read from the row's WebDataset shard and sample, its Parquet input file and row, the bytes
a scored Parquet file holds, or its location (a path under `--image_root`, a URI, an http(s) URL), with
the job's limits: `--max_image_bytes`, `--max_image_pixels`, `--allowed_image_prefixes` and the deadline of
`--http_timeout_secs`. A JPEG is decoded at a reduced scale, and large images are decoded a few at a time
(`DECODE_PIXELS` at once), so memory stays bounded. An image that cannot be shown says why, in words
(the page shows them in its place): a report never fails because of one image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple, Optional

from PIL import Image

from pipeline.report.read import ImageCell
from pipeline.report.sources import read_parquet_cell, read_shard_images
from transforms import ImageSettings, InputError, reasons
from transforms.inputs.fetch import check_size, read_image_bytes
from transforms.inputs.images import ENABLED_FORMATS, decode_image
from transforms.inputs.locations import AllowedPrefixes, has_scheme, image_source

_LOGGER = logging.getLogger(__name__)

THUMBNAIL_PIXELS = 160
THREADS = 8
DECODE_PIXELS = 100_000_000  # pixels decoded at once across threads (more when one image alone is larger)

# What the page says, in a few words, for each reason an image cannot be read.
NOTES = {
    reasons.IMAGE_MISSING: "no image in the row",
    reasons.IMAGE_WRONG_TYPE: "not a path",
    reasons.IMAGE_NOT_FOUND: "not found",
    reasons.IMAGE_UNREADABLE: "cannot be read",
    reasons.IMAGE_TOO_LARGE: "over the size limit",
    reasons.IMAGE_UNDECODABLE: "not a readable image",
    reasons.IMAGE_TIMEOUT: "took too long",
    reasons.IMAGE_UNAVAILABLE: "server unavailable",
    reasons.IMAGE_NOT_ALLOWED: "not allowed",
}


class Thumbnail(NamedTuple):
    data_uri: Optional[str]  # a JPEG as a data: URI, or None
    error: Optional[str] = None  # why there is none, in a sentence
    note: Optional[str] = None  # the same in a few words
    unresolved: bool = False  # a relative path that is no file under --image_root (or the working directory)


class Unusable(NamedTuple):
    """An image field that is not read at all (too long, not a path): what the page says instead."""

    note: str
    error: str


class _NoImage(Exception):
    def __init__(self, thumbnail: Thumbnail):
        super().__init__(thumbnail.error)
        self.thumbnail = thumbnail


def thumbnail(image: Any, settings: ImageSettings, size: int = THUMBNAIL_PIXELS) -> Thumbnail:
    """A JPEG thumbnail at most `size` pixels on a side, from a location (path, URI, http(s) URL) or bytes."""
    return _thumbnails([(image, None)], settings, "image", size)[0]


def thumbnails(rows: list, settings: ImageSettings, image_key: str) -> list[Thumbnail]:
    """`thumbnail` of each row's `image`, read from its `origin` when it has one, in order, read concurrently."""
    return _thumbnails([(row.image, row.origin) for row in rows], settings, image_key)


def _thumbnails(items: list, settings: ImageSettings, image_key: str, size: int = THUMBNAIL_PIXELS) -> list:
    if not items:
        return []
    budget = _PixelBudget(max(DECODE_PIXELS, settings.max_image_pixels))
    with ThreadPoolExecutor(min(THREADS, len(items)), thread_name_prefix="thumbnail") as pool:
        shards = _read_shards(items, settings, pool)
        return list(pool.map(lambda item: _one(*item, settings, image_key, size, shards, budget), items))


def _read_shards(items: list, settings: ImageSettings, pool: ThreadPoolExecutor) -> dict:
    """The image members the rows from WebDataset shards want: each shard's headers are read once."""
    wanted = defaultdict(set)
    for image, origin in items:
        if origin is not None and origin.kind == "shard":
            wanted[origin.url].add(_member_request(image, origin))
    futures = {url: pool.submit(read_shard_images, url, requests, settings) for url, requests in wanted.items()}
    return {url: future.result() for url, future in futures.items()}


def _member_request(image: Any, origin) -> tuple[str, Optional[str]]:
    return origin.key, image if isinstance(image, str) and image.strip() else None


def _one(image, origin, settings, image_key, size, shards, budget) -> Thumbnail:
    try:
        data = _image_bytes(image, origin, settings, image_key, shards)
        return _encoded(data, settings, size, budget)
    except _NoImage as missing:
        return missing.thumbnail
    except InputError as error:
        return _explained(error)
    except Exception as error:  # whatever else goes wrong with one image, the report goes on
        _LOGGER.warning("No thumbnail for %s: %s", origin or type(image).__name__, type(error).__name__)
        return Thumbnail(None, f"The image could not be shown: {type(error).__name__}", "cannot be shown")


def _image_bytes(image: Any, origin, settings: ImageSettings, image_key: str, shards: dict) -> bytes:
    """The image's bytes, from where the job read them; raises `InputError` or `_NoImage`."""
    if isinstance(image, Unusable):
        raise _NoImage(Thumbnail(None, f"The image cannot be shown: {image.error}", image.note))
    if isinstance(image, (bytes, bytearray)):
        return check_size(bytes(image), "the row's image bytes", settings.max_image_bytes)
    if isinstance(image, ImageCell):
        return _from_field(read_parquet_cell(image.path, image.row, image.column, settings), settings)
    if origin is not None and origin.kind == "shard":
        found = shards[origin.url][_member_request(image, origin)]
        if isinstance(found, InputError):
            raise found
        return found
    if origin is not None and origin.kind == "parquet":
        try:
            value = read_parquet_cell(origin.url, origin.key, image_key, settings)
        except InputError:
            if not isinstance(image, str):
                raise
            value = image  # the input file moved: the row's own location may still lead to the image
        return _from_field(value, settings)
    return _from_field(image, settings)


def _from_field(value: Any, settings: ImageSettings) -> bytes:
    """An image field's bytes as the job reads them: inline bytes, an image struct, or a location."""
    source = image_source(value, settings.image_root)
    if isinstance(source, bytes):
        return check_size(source, "the image bytes", settings.max_image_bytes)
    try:
        return read_image_bytes(
            source,
            max_bytes=settings.max_image_bytes,
            timeout_secs=settings.http_timeout_secs,
            allowed=AllowedPrefixes(settings.allowed_image_prefixes),
        )
    except InputError as error:
        relative = isinstance(value, str) and not has_scheme(value.strip()) and not os.path.isabs(value.strip())
        if error.reason != reasons.IMAGE_NOT_FOUND or not relative:
            raise
        if settings.image_root:
            error_text = f"{value.strip()} is not under --image_root={settings.image_root}"
            raise _NoImage(Thumbnail(None, f"Image not found: {error_text}", "not under --image_root", True)) from None
        error_text = (
            f"{value.strip()} is a relative path and no file in the working directory ({os.getcwd()}): "
            "give the report the --image_root the job had"
        )
        raise _NoImage(Thumbnail(None, f"Image not found: {error_text}", "no --image_root given", True)) from None


def _explained(error: InputError) -> Thumbnail:
    note = NOTES.get(error.reason, "cannot be shown")
    return Thumbnail(None, f"{note[0].upper()}{note[1:]}: {error.message}", note)


class _PixelBudget:
    """At most `limit` pixels decoded at once by all threads; an image larger than that alone."""

    def __init__(self, limit: int):
        self._limit = limit
        self._used = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: self._used == 0 or self._used + pixels <= self._limit)
            self._used += pixels
        try:
            yield
        finally:
            with self._free:
                self._used -= pixels
                self._free.notify_all()


def _encoded(data: bytes, settings: ImageSettings, size: int, budget: _PixelBudget) -> Thumbnail:
    """The thumbnail of an image file's bytes: decoded reduced where the format allows it, within the budget."""
    try:
        width, height = Image.open(io.BytesIO(data), formats=ENABLED_FORMATS).size  # the header only
        pixels = min(width * height, settings.max_image_pixels)
    except Exception:  # noqa: BLE001 - decode_image names what is wrong
        pixels = 1
    with budget.hold(pixels):
        picture = decode_image(data, max_pixels=settings.max_image_pixels, reduce_to=size)
        picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return Thumbnail("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
