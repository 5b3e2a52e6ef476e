"""Reading lines of byte ranges: every line once whatever the cuts, in linear time, over-long ones set aside."""

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io.lines import KEPT_OF_LONG_LINE, LongLine, read_lines


def _expected(data: bytes, max_bytes: int) -> list:
    """What a line reader must give: Python's own split, less the empty tail after a final newline."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out, offset = [], 0
    for line in lines:
        text = line[:-1] if line.endswith(b"\r") and offset + len(line) < len(data) else line
        out.append(text if len(text) <= max_bytes else ("long", offset, len(text)))
        offset += len(line) + 1
    return out


def _read(data: bytes, part_bytes: int, max_bytes: int) -> list:
    out = []
    for start in range(0, len(data), part_bytes):
        for line in read_lines(io.BytesIO(data), start, min(start + part_bytes, len(data)), max_bytes):
            out.append(("long", line.offset, line.length) if isinstance(line, LongLine) else line)
    return out


@settings(max_examples=300)
@given(
    data=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b"a", b"{}", b"\xff", b"xyz" * 7]), max_size=60).map(
        b"".join
    ),
    part_bytes=st.integers(1, 40),
    max_bytes=st.integers(0, 30),
)
def test_ranges_of_a_file_give_each_line_once(data, part_bytes, max_bytes):
    assert _read(data, part_bytes, max_bytes) == _expected(data, max_bytes)


def test_an_over_long_line_keeps_its_first_bytes_without_cutting_a_character():
    data = b"short\n" + "é".encode() * 5000 + b"\nafter\n"
    short, long, after = read_lines(io.BytesIO(data), 0, None, 1000)
    assert (short, after) == (b"short", b"after")
    assert (long.offset, long.length) == (6, 10_000)
    assert long.head.decode("utf-8") == "é" * (KEPT_OF_LONG_LINE // 2)


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_a_long_line_is_read_once_in_chunks():
    """Beam 2.77's text reader re-read and re-joined its buffer for each chunk of a long line (minutes for
    50 MB); here every byte is read once (the timing is in `bench/long_lines.py`)."""
    data = b'{"text": "' + b"word " * 2_000_000 + b'"}\n{"b": 1}\n'
    stream = _CountingStream(data)
    lines = list(read_lines(stream, 0, None, 1 << 30))
    assert [len(line) for line in lines] == [len(data) - 10, 8]
    assert stream.bytes_read == len(data)
    # Over the limit, only the first bytes are kept, and the rest of the file still comes.
    stream = _CountingStream(data)
    long, short = read_lines(stream, 0, None, 1000)
    assert (long.length, len(long.head), short) == (len(data) - 10, KEPT_OF_LONG_LINE, b'{"b": 1}')
    assert stream.bytes_read == len(data)
