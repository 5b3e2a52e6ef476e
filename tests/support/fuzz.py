"""Hypothesis strategies for what untrusted sources send: JSON lines, Pub/Sub message data and attributes,
and image files of every supported format with bytes flipped, cut, inserted or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

# Formats the scorer reads (as `transforms.testing.images` writes them), each a real file to mutate.
IMAGE_FORMATS = ("rgb.jpg", "cmyk.jpg", "rgb.png", "grey16.png", "palette.gif", "animated.gif", "grey.webp")
IMAGE_FORMATS += ("rgb.bmp", "rgb.tiff")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

texts = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "   ", "\u200b\u200b", "\x00\x01", "a cat", "&amp; <b>x</b>", "word " * 300]),
    json_values,
)


@st.composite
def records(draw, images: list[str]) -> dict:
    """A JSON object that may or may not be a good record: image and text fields of any type, other fields."""
    record = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    if draw(st.booleans()):
        record["image_path"] = draw(st.one_of(st.sampled_from(images), json_values))
    if draw(st.booleans()):
        record["text"] = draw(texts)
    return record


def _mutate(data: bytes, draw) -> bytes:
    """Replaces, deletes or inserts a few bytes anywhere in `data`, one to three times."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["replace", "delete", "insert"]))
        chunk = draw(st.binary(min_size=1, max_size=6))
        if kind == "replace":
            data[at : at + len(chunk)] = chunk
        elif kind == "delete":
            del data[at : at + len(chunk)]
        else:
            data[at:at] = chunk
    return bytes(data)


@st.composite
def json_lines(draw, images: list[str]) -> bytes:
    """One line (no line break in it): a record as JSON, such a line damaged, deep nesting, or raw bytes."""
    kind = draw(st.sampled_from(["record", "record", "damaged", "value", "deep", "bytes", "escapes"]))
    if kind in ("record", "damaged"):
        line = json.dumps(draw(records(images)), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        line = _mutate(line, draw) if kind == "damaged" else line
    elif kind == "value":
        line = json.dumps(draw(json_values)).encode()
    elif kind == "deep":
        depth = draw(st.integers(30, 3000))
        line = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "escapes":  # lone surrogates and control characters, which JSON allows as escapes
        line = (
            '{"text": "' + draw(st.sampled_from(["\\ud800", "\\udfff x", "\\u0000", "\\ud83d\\ude00"])) + '"}'
        ).encode()
    else:
        line = draw(st.binary(max_size=60))
    return line.replace(b"\n", b" ").replace(b"\r", b" ")


@st.composite
def mutated_image(draw, good_images: dict[str, Path]) -> tuple[str, bytes]:
    """`(format, bytes)`: a real image file of one of `IMAGE_FORMATS`, its bytes damaged a little or cut."""
    name = draw(st.sampled_from(IMAGE_FORMATS))
    data = good_images[name].read_bytes()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    else:
        data = _mutate(data, draw)
    return name, data
