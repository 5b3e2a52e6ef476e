"""Any value from a scored file as short, inert text for the page and the charts.

Scored files are data, possibly hostile: a caption may be a megabyte, a list, or hold bidi overrides that
make a path read backwards on the page. `shown_text` bounds the length (also of a value that is not a
string, without serialising all of it) and writes control, bidi and other invisible format characters as
visible `<U+202E>` marks.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

# Line breaks and tabs read as spaces; every other control or format character (Unicode categories Cc,
# Cf: bidi embeddings, overrides and isolates, zero-width joiners, ...) and the line and paragraph
# separators are shown as their code point.
_SPACES = {ord(c): " " for c in "\t\n\r"}
_CHECKED = ("Cc", "Cf", "Zl", "Zp", "Cs")


def shown_text(value: Any, limit: int) -> str:
    """`value` as at most about `limit` characters: strings as they are, anything else as JSON; a cut
    value ends with "…"."""
    text = value if isinstance(value, str) else _json_head(value, limit + 1)
    cut = len(text) > limit
    return neutralised(text[:limit]) + ("…" if cut else "")


def neutralised(text: str) -> str:
    """`text` with control, bidi and invisible format characters written as `<U+XXXX>`."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for character in text.translate(_SPACES):
        if unicodedata.category(character) in _CHECKED:
            out.append(f"<U+{ord(character):04X}>")
        else:
            out.append(character)
    return "".join(out)


def _json_head(value: Any, limit: int) -> str:
    """The first `limit` characters of `value` as JSON, encoding no more of it than that."""
    pieces, size = [], 0
    encoder = json.JSONEncoder(ensure_ascii=False, default=_fallback, check_circular=False)
    try:
        for piece in encoder.iterencode(value):
            pieces.append(piece)
            size += len(piece)
            if size >= limit:
                break
    except (TypeError, ValueError, RecursionError):
        return f"({type(value).__name__})"
    return "".join(pieces)


def _fallback(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"({len(value):,} bytes)"
    return f"({type(value).__name__})"
