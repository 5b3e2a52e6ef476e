"""Telling a compressed file named `.tar` from a tar, by its first block.

A few magic bytes alone are also what a damaged tar can start with (`BZh` before a header hid every sample of
a shard), so gzip, bzip2 and xz must also decompress as the start of a stream; zstd, which the standard
library cannot read, is taken at its 4-byte magic number.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Callable, Optional

_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_DECOMPRESSORS: dict[str, Callable[[], object]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "bzip2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
}


def compressed_format(block: bytes) -> Optional[str]:
    """ "gzip", "bzip2", "xz" or "zstd" when `block` starts a stream of that format, else None."""
    name = next((name for magic, name in _MAGIC.items() if block.startswith(magic)), None)
    if name is None or name not in _DECOMPRESSORS:
        return name
    try:
        _DECOMPRESSORS[name]().decompress(block)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError):
        return None
    return name
