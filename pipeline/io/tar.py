"""Walking a tar archive's members without trusting its headers: a small reader of the ustar, GNU and PAX
headers that WebDataset shards are written with, bounded so that no header can make it loop, allocate
what the file does not hold, or raise.

Every size a header declares is checked before it is used: it must not be negative, a GNU long name or
PAX header may hold at most MAX_METADATA_BYTES, and a member's data must lie inside the file. Each valid
header moves the walk at least a block forward, so it yields at most two items per block. What cannot be
read becomes a `Damage` (a byte range and why) and the walk resumes at the next valid header (its checksum
holds) after it: a whole number of blocks on, or anywhere its ustar magic is (bytes lost or added put the
headers that follow out of step); never inside the data of a member it accepted, and never inside a tar
archive stored whole as a member whose header was damaged (`_stored_archive`).

The end of an archive is a zero block followed by zeros only, at most two blocks and one record of padding
(tar writers pad to 10 KiB records); zeros that go on longer to the end of the file are a file cut short
(a copy stopped in a preallocated file). Zeros followed by more data are damage, read past; except the
end-of-archive marker of a tar writer (two zero blocks and the padding to a whole record) followed by a
valid header: another archive appended with `cat`, read on (`NextArchive`), as GNU tar's --ignore-zeros
does. GNU sparse members (old GNU `S` headers, PAX sparse formats 0.0, 0.1 and 1.0) are stepped over by
their stored size and flagged `sparse`: their stored bytes are data segments, not the file.
"""

from __future__ import annotations

import re
import struct
from typing import BinaryIO, Iterator, NamedTuple, Optional, Union

from pipeline.io import compression

BLOCK = 512
RECORD = 20 * BLOCK  # tar writers (GNU tar, bsdtar, Python's tarfile) pad an archive to a multiple of this
MAX_METADATA_BYTES = 64 << 10  # a GNU long name or a PAX header's records

TAR_CORRUPT = "tar_corrupt"
TAR_TRUNCATED = "tar_truncated"
TAR_COMPRESSED = "tar_compressed"

_REGULAR = frozenset((b"0", b"\0", b"7", b"S"))
_WITHOUT_DATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))  # others: data of their size (as in tarfile)
_METADATA = frozenset((b"L", b"K", b"x", b"g", b"X"))
_ZEROS = bytes(BLOCK)
_SCAN_BYTES = 128 * BLOCK
_PAX_LENGTH = re.compile(rb"([0-9]{1,10}) ")
_DECIMAL = re.compile(r"[0-9]{1,20}")


class Entry(NamedTuple):
    """A member whose headers could be read."""

    name: str  # bytes that are not UTF-8 as `\xNN` escapes
    offset: int  # its first header block (a PAX or GNU long-name header, when it has one)
    data: int  # where its stored bytes start
    size: int  # how many bytes are stored there (all inside the file)
    type: bytes  # the typeflag
    sparse: bool  # a GNU sparse file: the stored bytes are its data segments (and map), not its content

    @property
    def is_file(self) -> bool:
        return self.type in _REGULAR

    @property
    def is_folder(self) -> bool:
        return self.type == b"5" or self.name.endswith("/")


class Damage(NamedTuple):
    """Bytes `[start, end)` that cannot be read as members; `member`: the name in its first header, when that
    header is valid (its checksum holds) but what it declares is not possible."""

    start: int
    end: int
    reason: str
    message: str
    member: Optional[str] = None


class NextArchive(NamedTuple):
    """Another archive starts at `offset`, after a tar writer's end-of-archive marker (`cat a.tar b.tar`)."""

    offset: int


class HeaderError(ValueError):
    """A block that is not a valid header, or a long name or PAX header that cannot be read."""


class _Pending(NamedTuple):  # what a long-name or PAX header says of the member after it
    offset: int
    long_name: Optional[str]
    pax: dict


def entries(stream: BinaryIO, size: int) -> Iterator[Union[Entry, Damage, NextArchive]]:
    """Every member of the tar file `stream` (seekable, `size` bytes), in order, a `Damage` for each part that
    cannot be read, and a `NextArchive` where archives joined with `cat` meet. The caller may read a member's
    data from the stream between items."""
    walk = _Walk(stream, size)
    at, archive, pending = 0, 0, None
    while at is not None:
        start = pending.offset if pending else at
        block = walk.read(at, BLOCK) if at < size else b""
        if at == 0 and (compression := _compression(block)):
            yield Damage(0, size, TAR_COMPRESSED, compression)
            return
        if len(block) < BLOCK:
            reason = "it is empty" if size == 0 else f"it ends at byte {size} without its end-of-archive marker"
            yield Damage(min(start, size), size, TAR_TRUNCATED, f"the shard was cut short: {reason}")
            return
        if block != _ZEROS:
            try:
                header = _parse(block)
            except HeaderError as error:
                message = f"cannot read the header at byte {at}: {error}"
                at, pending = (yield from walk.damaged(start, walk.resync(at, block), message)), None
            else:
                at, pending = yield from walk.member(at, start, header, pending)
            continue
        after = walk.first_nonzero(at)
        if after is None:  # zeros to the end
            if pending or size - at > 2 * BLOCK + RECORD:
                message = f"the shard ends in {size - at} zero bytes from byte {at}, more than an end-of-archive"
                message += " marker and its padding: it was cut short (a copy stopped in a preallocated file?)"
                yield Damage(start, size, TAR_TRUNCATED, message)
            return
        if not pending and _writer_padding(at, after, archive) and walk.header(after) is not None:
            yield NextArchive(after)
            at = archive = after
            continue
        message = f"{after - at} zero bytes at byte {at}, where a header belongs, and more data after them"
        at, pending = (yield from walk.damaged(start, after, message)), None


def _writer_padding(at: int, after: int, archive: int) -> bool:
    """Whether zeros `[at, after)` are a tar writer's end-of-archive marker (2 blocks, padded to a record)."""
    return 2 * BLOCK <= after - at < 2 * BLOCK + RECORD and (after - archive) % RECORD == 0


class _Header(NamedTuple):
    name: str
    size: int
    type: bytes
    extended: bool  # an old GNU sparse header whose map goes on in the blocks after it


class _Walk:
    def __init__(self, stream: BinaryIO, size: int):
        self._stream, self._size = stream, size
        self.floor = 0  # the end of what has been read: the data of the last member (unpadded), or a valid header

    def read(self, offset: int, length: int) -> bytes:
        self._stream.seek(offset)
        return self._stream.read(length)

    def member(self, at: int, start: int, header: _Header, pending: Optional[_Pending]):
        """Reads the member (or long name, or PAX header) whose valid header is at `at`; returns where the next
        header is (None: nowhere, the walk ends) and what is pending for it."""
        long_name, pax = (pending.long_name, pending.pax) if pending else (None, {})
        is_metadata = header.type in _METADATA
        name = None if is_metadata else pax.get("GNU.sparse.name") or pax.get("path") or long_name or header.name
        size = header.size
        if "size" in pax and not is_metadata:
            size = int(pax["size"]) if _DECIMAL.fullmatch(pax["size"]) else None
        data, extended = at + BLOCK, header.extended
        while extended and data + BLOCK <= self._size:  # an old GNU sparse map goes on in the blocks after it
            extended, data = self.read(data + 504, 1) != b"\0", data + BLOCK
        stored = size if size is not None and size > 0 and header.type not in _WITHOUT_DATA else 0
        problem = None  # what makes this valid header impossible to follow
        if size is None or size < 0:
            problem = f"the header at byte {at} declares a " + (
                f"size that is not a byte count: {pax['size'][:40]!r}" if size is None else f"negative size ({size})"
            )
        elif is_metadata and size > MAX_METADATA_BYTES:
            problem = f"the {_KINDS.get(header.type, 'PAX')} header at byte {at} declares {size} bytes (over the limit)"
        elif extended or data + stored > self._size:  # a valid header: all after it is its data, cut short
            where = f"member {name}" if name else f"the header at byte {at}"
            message = f"the shard was cut short: it ends at byte {self._size}, inside {where}"
            yield Damage(start, self._size, TAR_TRUNCATED, message, name)
            return None, None
        elif is_metadata:
            payload = self.read(data, size)
            try:
                if header.type == b"L":
                    long_name = _decode(payload.split(b"\0", 1)[0])
                    if not long_name:
                        raise HeaderError("the name is empty")
                elif header.type != b"K":
                    records = _pax_records(payload)
                    pax = {**pax, **records} if header.type != b"g" else pax  # global headers are not applied
            except HeaderError as error:
                problem = f"the {_KINDS.get(header.type, 'PAX')} header at byte {at}: {error}"
            else:
                self.floor = data + size
                return data + _padded(size), _Pending(start, long_name, pax)
        if problem is not None:
            self.floor = at + BLOCK
            return (yield from self.damaged(start, self.scan(at + BLOCK), problem, name)), None
        self.floor = data + stored
        sparse = header.type == b"S" or any(keyword.startswith("GNU.sparse.") for keyword in pax)
        yield Entry(name, start, data, stored, header.type, sparse)
        return data + _padded(stored), None

    def damaged(self, start: int, resume: Optional[int], message: str, member: Optional[str] = None):
        """Yields the damage from `start` to `resume` (the next valid header, or the end); returns `resume`."""
        if resume is not None and self.header(resume) is None:
            resume = self.scan(resume, self.floor)
        if resume is None:
            yield Damage(start, self._size, TAR_CORRUPT, message + "; no valid header after it", member)
        else:  # a header out of step (bytes were lost before it) may start before `start`, after what was read
            yield Damage(min(start, resume), resume, TAR_CORRUPT, f"{message}; read on from byte {resume}", member)
        return resume

    def header(self, at: int) -> Optional[_Header]:
        return _header(self.read(at, BLOCK))

    def scan(self, position: int, unaligned: Optional[int] = None) -> Optional[int]:
        """The first valid header a whole number of blocks after `position`, or, from byte `unaligned` on, where
        its ustar magic is (after bytes were lost or added, the headers that follow are out of step)."""
        start = position if unaligned is None else min(max(unaligned, position - 2 * BLOCK), position)
        while position + BLOCK <= self._size:
            chunk = self.read(start, position - start + _SCAN_BYTES + BLOCK)
            candidates = set(range(position - start, min(position - start + _SCAN_BYTES, len(chunk)), BLOCK))
            magic = chunk.find(b"ustar", 257)
            while 0 <= magic < position - start + _SCAN_BYTES + 257:
                candidates.add(magic - 257)
                magic = chunk.find(b"ustar", magic + 1)
            found = next((offset for offset in sorted(candidates) if _header(chunk[offset : offset + BLOCK])), None)
            if found is not None:
                return start + found
            start = position = position + _SCAN_BYTES
        return None

    def first_nonzero(self, position: int) -> Optional[int]:
        """The first block at or after `position` holding a byte that is not zero."""
        while position < self._size:
            chunk = self.read(position, _SCAN_BYTES)
            if not chunk:
                return None
            rest = chunk.lstrip(b"\0")
            if rest:
                return position + (len(chunk) - len(rest)) // BLOCK * BLOCK
            position += len(chunk)
        return None

    def resync(self, at: int, block: bytes) -> Optional[int]:
        """Where to read on after the damaged header `block` at `at`: the next valid header; but when its data
        starts right after it and is a whole tar archive that ends where the size field of the damaged header
        says, after that archive (a tar stored as a member: its headers are not this shard's)."""
        found = self.scan(at + BLOCK, self.floor)
        if found != at + BLOCK:
            return found
        try:
            end = at + BLOCK + _padded(_octal(block[124:136]))
        except HeaderError:
            return found
        return end if found < end <= self._size and self._stored_archive(found, end) else found

    def _stored_archive(self, position: int, end: int) -> bool:
        """Whether `[position, end)` is a tar archive as a tar writer leaves one: headers, then the end-of-archive
        marker and its padding to a whole record; followed by a header, zeros or the end of the file."""
        start = position
        while position < end:
            block = self.read(position, BLOCK)
            if block == _ZEROS:
                after = self.first_nonzero(position)
                return (
                    (after is None or after >= end)
                    and _writer_padding(position, end, start)
                    and (end == self._size or self.read(end, BLOCK) == _ZEROS or self.header(end) is not None)
                )
            header = _header(block)
            if header is None or header.size < 0:
                return False
            position += BLOCK + (_padded(header.size) if header.type not in _WITHOUT_DATA else 0)
        return False


_KINDS = {b"L": "GNU long name", b"K": "GNU long link name", b"g": "PAX global", b"x": "PAX"}


def _header(block: bytes) -> Optional[_Header]:
    try:
        return _parse(block)
    except HeaderError:
        return None


def _parse(block: bytes) -> _Header:
    if not _checksum_holds(block):
        raise HeaderError("not a tar header (its checksum does not match)")
    name = block[:100].split(b"\0", 1)[0]
    if block[257:265] == b"ustar\x0000":  # POSIX ustar: a prefix to the name (in GNU headers: other fields)
        prefix = block[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    typeflag = block[156:157]
    return _Header(_decode(name), _number(block[124:136]), typeflag, typeflag == b"S" and block[482] != 0)


def _checksum_holds(block: bytes) -> bool:
    try:
        stored = _octal(block[148:156])
    except HeaderError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 256  # the checksum field counts as eight spaces
    return len(block) == BLOCK and (stored == unsigned or stored == 256 + sum(struct.unpack_from("148b8x356b", block)))


def _number(field: bytes) -> int:
    """A numeric field: octal, or GNU base-256 (first byte 0x80, or 0xff for a negative number)."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    return _octal(field)


def _octal(field: bytes) -> int:
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if digits.translate(None, b"01234567"):
        raise HeaderError(f"not an octal number: {digits[:12]!r}")
    return int(digits, 8) if digits else 0


def _pax_records(payload: bytes) -> dict:
    """`"%d %s=%s\\n"` records filling `payload`, each length counting the whole record."""
    records, position = {}, 0
    while position < len(payload):
        match = _PAX_LENGTH.match(payload, position)
        end = position + int(match.group(1)) if match else 0
        if not match or end <= match.end() or end > len(payload) or payload[end - 1] != 0x0A:
            raise HeaderError(f"a malformed record at byte {position} of its {len(payload)}")
        keyword, equals, value = payload[match.end() : end - 1].partition(b"=")
        if not equals:
            raise HeaderError(f"a record without '=' at byte {position} of its {len(payload)}")
        records[_decode(keyword)] = _decode(value)
        position = end
    return records


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _compression(block: bytes) -> Optional[str]:
    """What is wrong with a shard that starts with `block`, if it is a compressed file (not a tar header)."""
    if _checksum_holds(block) or (name := compression.compressed_format(block)) is None:
        return None
    return f"the shard is {name}-compressed, not a tar: decompress it to a .tar to read it (compressed shards are not)"
