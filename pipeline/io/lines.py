"""Reading the lines of a byte range of a file in linear time, each line at most `max_line_bytes`.

Beam 2.77's text reader grows its buffer by concatenation, so one 50 MB line took minutes; here a line
is gathered in pieces and joined once, and a line over the limit is skipped through (keeping only its
first bytes for the dead letter), so memory stays within the limit whatever the file holds.
Standard library only.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator, NamedTuple, Optional, Union

CHUNK_BYTES = 1 << 20
KEPT_OF_LONG_LINE = 1024  # bytes of an over-long line kept for the dead letter


class LongLine(NamedTuple):
    """A line longer than the limit: where it starts, how long it is, and its first bytes."""

    offset: int
    length: int
    head: bytes


def line_bytes(line) -> int:
    """The length in bytes of a line as `read_lines` gives it: bytes, or a `LongLine` that stands for one."""
    return line.length if isinstance(line, LongLine) else len(line)


class _Reader:
    """Reads a stream in chunks; `offset` is the file offset of the next byte not yet consumed."""

    def __init__(self, stream: BinaryIO, offset: int):
        self._stream = stream
        self._buffer = b""
        self._at = 0  # index in _buffer of the byte at `offset`
        self.offset = offset

    def _fill(self) -> bool:
        if self._at == len(self._buffer):
            self._buffer, self._at = self._stream.read(CHUNK_BYTES), 0
        return self._at < len(self._buffer)

    def skip_past_newline(self, limit: int) -> bool:
        """Consumes bytes up to and including the next newline; False if none comes before `limit` or the end."""
        while self.offset < limit and self._fill():
            newline = self._buffer.find(b"\n", self._at, self._at + (limit - self.offset))
            stop = len(self._buffer) if newline < 0 else newline + 1
            self.offset += stop - self._at
            self._at = stop
            if newline >= 0:
                return True
        return False

    def line(self, max_bytes: int) -> Optional[Union[bytes, LongLine]]:
        """The next line without its `\\n` (or `\\r\\n`), a `LongLine` if over `max_bytes`, None at the end."""
        start = self.offset
        pieces: list[bytes] = []
        length = 0
        last = b""
        while self._fill():
            newline = self._buffer.find(b"\n", self._at)
            stop = len(self._buffer) if newline < 0 else newline
            if length <= max_bytes:  # past the limit only the length is counted
                pieces.append(self._buffer[self._at : stop])
            if stop > self._at:
                last = self._buffer[stop - 1 : stop]
            length += stop - self._at
            self.offset += stop - self._at + (newline >= 0)
            self._at = stop + (newline >= 0)
            if newline >= 0:
                if last == b"\r":
                    length -= 1
                break
        else:
            if self.offset == start:
                return None
        kept = b"".join(pieces)  # whole when length <= max_bytes
        if length > max_bytes:
            return LongLine(start, length, _head(kept, KEPT_OF_LONG_LINE))
        return kept[:length]


def _head(data: bytes, size: int) -> bytes:
    """At most `size` bytes of `data`, not cutting a UTF-8 character in two."""
    if len(data) <= size:
        return data
    for cut in range(size, max(size - 3, 0) - 1, -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return data[:cut]
    return data[:size]


def read_lines(
    stream: BinaryIO, start: int, end: Optional[int], max_line_bytes: int
) -> Iterator[Union[bytes, LongLine]]:
    """The lines that start in bytes [start, end) of `stream` (to its end when `end` is None).

    A line belongs to the range holding its first byte, so consecutive ranges of one file give each
    line exactly once. `stream` must be seekable when `start > 0`; at 0 it is read from where it is.
    """
    if start > 0:
        stream.seek(start - 1)  # a line starts at `start` if the byte before it ends one
        reader = _Reader(stream, start - 1)
        if not reader.skip_past_newline(end if end is not None else 1 << 62):
            return
    else:
        reader = _Reader(stream, 0)
    while end is None or reader.offset < end:
        line = reader.line(max_line_bytes)
        if line is None:
            return
        yield line
