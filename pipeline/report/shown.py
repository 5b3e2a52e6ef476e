"""The rows the page shows (the lowest- and highest-scoring): what is kept of each, small whatever the row
held, and the dicts the page draws them from, thumbnails included."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from pipeline.report.read import ImageCell
from pipeline.report.text import shown_text
from pipeline.report.thumbnails import Unusable, thumbnails
from transforms import ImageSettings, RecordFields

SHOWN = "shown"  # the tagged output of rows that may be shown
CAPTION_CHARS_SHOWN = 1200
LOCATION_CHARS_SHOWN = 300
LOCATION_CHARS = 8192  # a longer image location, shard or file name is not read
KEY_CHARS = 1024


class Origin(NamedTuple):
    """Where the job read a row's image: `("shard", url, key)` for a WebDataset sample, `("parquet", url, row)`
    for a Parquet input row."""

    kind: str
    url: str
    key: Union[str, int]


class ShownRow(NamedTuple):
    score: float
    caption: str  # as shown: cut, neutralised
    image_text: Optional[str]  # the image field as shown
    image: Any  # what to read: None, a location, bytes, an `ImageCell` or an `Unusable`
    origin: Optional[Origin]


def shown_row(score: float, row: dict, fields: RecordFields, images: ImageSettings) -> ShownRow:
    """What is kept of a scored row that may be shown: bounded, whatever its fields hold."""
    value = row.get(fields.image_key)
    caption = row.get(fields.text_key)
    caption_text = "(no caption)" if caption is None else shown_text(caption, CAPTION_CHARS_SHOWN)
    return ShownRow(score, caption_text, _image_text(value), _image(value, images.max_image_bytes), _origin(row))


def _image_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, ImageCell):
        return f"(image bytes in column {value.column} of the scored file)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"({len(value):,} bytes of image data in the row)"
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        value = value["path"]
    return shown_text(value, LOCATION_CHARS_SHOWN)


def _image(value: Any, max_bytes: int) -> Any:
    """The image field, or what stands for it: never more than `max_bytes` of image data, never a long text."""
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        value = value["bytes"] if value.get("bytes") is not None else value.get("path")
    if value is None or isinstance(value, ImageCell):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > max_bytes:
            return Unusable("over the size limit", f"the row's image bytes are over --max_image_bytes={max_bytes}")
        return bytes(value)
    if isinstance(value, str):
        if len(value) > LOCATION_CHARS:
            return Unusable("path too long", f"the image path is {len(value):,} characters long")
        return value
    return Unusable("not a path", f"the image field holds a {type(value).__name__}, not a path or image bytes")


def _origin(row: dict) -> Optional[Origin]:
    url, key, number = row.get("__url__"), row.get("__key__"), row.get("__row__")
    if not isinstance(url, str) or not 0 < len(url) <= LOCATION_CHARS:
        return None
    if isinstance(key, str) and 0 < len(key) <= KEY_CHARS:
        return Origin("shard", url, key)
    if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
        return Origin("parquet", url, number)
    return None


def _source(row: ShownRow) -> Optional[str]:
    origin = row.origin
    if origin is None:
        return None
    url = shown_text(origin.url, LOCATION_CHARS_SHOWN)
    if origin.kind == "shard":
        return f"sample {shown_text(origin.key, LOCATION_CHARS_SHOWN)} of shard {url}"
    return f"row {origin.key:,} of {url}"


def for_page(rows: list[ShownRow], images: ImageSettings, image_key: str) -> list[dict]:
    """The rows as JSON-ready dicts, with their thumbnails (read with `images`' limits)."""
    made = thumbnails(rows, images, image_key)
    return [
        {
            "score": row.score,
            "image": row.image_text,
            "caption": row.caption,
            "source": _source(row),
            "thumbnail": picture.data_uri,
            "thumbnail_note": picture.note,
            "thumbnail_error": picture.error,
            "unresolved": picture.unresolved,
        }
        for row, picture in zip(rows, made, strict=True)
    ]
