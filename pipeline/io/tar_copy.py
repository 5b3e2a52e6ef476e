"""Copying samples out of a WebDataset shard into a new tar, member by member, without Beam: the shard walked as
`ReadWebDataset` groups it into samples, each chosen sample's members copied byte for byte in their order, and
its `.json` given the scores.

Headers are written as Python's `tarfile` writes POSIX PAX archives (a plain ustar header when the name fits,
a PAX header before it for a long or non-ASCII name), with mode 0644, mtime 0 and no owner, and the archive
ends with two zero blocks padded to a 10 KiB record: the same samples always give the same bytes. A member
that is not a regular file (a link, a device, a GNU sparse file, whose stored bytes are not its content) is
not copied; the caller is told of each. A shard that no longer holds a chosen sample where its record said
(it changed while the job ran) raises `ShardChanged`.
"""

from __future__ import annotations

import json
import tarfile
from typing import BinaryIO, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

from pipeline.io import records, tar
from pipeline.io.webdataset import _split_name as split_name  # the reader's own key/extension rule

CHUNK_BYTES = 1 << 20  # member data is copied in pieces of this size, never held whole
_JSON_SPACE = b" \t\n\r"  # what Python's JSON parser takes around a value
_KINDS = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device"}


class ShardChanged(RuntimeError):
    """A source shard does not hold a sample where its record said: it changed after it was read."""


class Wanted(NamedTuple):
    """A sample to copy: where it starts in its shard (`__offset__`), its key, and the fields its `.json` gets."""

    offset: int
    key: str
    added: Mapping[str, object]


class SourceSample(NamedTuple):
    """A sample as the reader groups it: its key, where its first member starts, and its members' entries.
    `whole`: False when damage cut it (the reader made no record of it)."""

    key: str
    offset: int
    members: tuple[tar.Entry, ...]
    whole: bool


class NotCopied(NamedTuple):
    """A member of a copied sample that was left out (from shard `url`), and why."""

    url: str
    key: str
    entry: tar.Entry
    why: str


class TarStream:
    """A tar archive written to a binary stream member by member, as `tarfile` writes PAX archives."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self.written = 0  # bytes so far

    def add(self, name: str, size: int, chunks: Iterable[bytes]) -> None:
        """Adds a regular file `name` of `size` bytes, given in `chunks`."""
        info = tarfile.TarInfo(name)  # mode 0644, mtime 0, uid and gid 0, no user or group names
        info.size = size
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        copied = 0
        for chunk in chunks:
            self._write(chunk)
            copied += len(chunk)
        if copied != size:
            raise ValueError(f"member {name}: {copied} bytes given for a size of {size}")
        self._write(bytes(-size % tar.BLOCK))

    def close(self) -> None:
        """Writes the end-of-archive marker, padded to a whole record (the stream stays open)."""
        self._write(bytes(2 * tar.BLOCK))
        self._write(bytes(-self.written % tar.RECORD))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.written += len(data)


def source_samples(stream: BinaryIO, size: int) -> Iterator[SourceSample]:
    """The samples of a shard, in order, grouped as `pipeline.io.webdataset` groups them: members with the same key
    one after the other, until a key changes, an extension repeats, damage or another archive (`cat`) starts.
    Folders, names without a key or extension and macOS `._` files belong to no sample."""
    key, offset, members, extensions = None, 0, [], set()
    for item in tar.entries(stream, size):
        if isinstance(item, tar.Entry):
            if item.is_folder:
                continue
            name_key, extension = split_name(item.name)
            if name_key is None:
                continue
            if members and (name_key != key or extension in extensions):
                yield SourceSample(key, offset, tuple(members), True)
                members = []
            if not members:
                key, offset, extensions = name_key, item.offset, set()
            members.append(item)
            extensions.add(extension)
        elif members:
            # A damaged header whose member starts another sample ends this one whole (the reader read it so);
            # any other damage cuts it.
            whole = isinstance(item, tar.NextArchive)
            if isinstance(item, tar.Damage) and item.member is not None:
                damaged_key, extension = split_name(item.member)
                whole = damaged_key is not None and (damaged_key != key or extension in extensions)
            yield SourceSample(key, offset, tuple(members), whole)
            members = []
    if members:
        yield SourceSample(key, offset, tuple(members), True)


def copy_samples(
    stream: BinaryIO, size: int, url: str, wanted: Sequence[Wanted], out: TarStream
) -> Iterator[NotCopied]:
    """Copies the `wanted` samples of the shard `stream` (`size` bytes, read from `url`) into `out`, in the
    shard's order; yields each member left out. Raises `ShardChanged`."""
    left = {sample.offset: sample for sample in wanted}
    for sample in source_samples(stream, size):
        chosen = left.pop(sample.offset, None)
        if chosen is not None:
            if not sample.whole or sample.key != chosen.key:
                raise _changed(url, chosen)
            yield from _copy(stream, sample, chosen.added, url, out)
        if not left:
            return
    if left:
        raise _changed(url, min(left.values()))


def _copy(stream: BinaryIO, sample: SourceSample, added: Mapping, url: str, out: TarStream) -> Iterator[NotCopied]:
    """One sample: its `.json` is made first, so that nothing of the sample is written when it cannot be."""
    meta: Optional[tuple[tar.Entry, bytes]] = None
    for entry in sample.members:
        if split_name(entry.name)[1] == "json" and entry.is_file and not entry.sparse:
            try:
                meta = entry, with_scores(_read(stream, entry, url), added)
            except records.MalformedRecord as bad:
                raise ShardChanged(f"{url}: {entry.name} is no longer a JSON object ({bad.message})") from None
    for entry in sample.members:
        if entry.sparse or not entry.is_file:
            why = "a GNU sparse file, whose stored bytes are not its content" if entry.sparse else None
            yield NotCopied(url, sample.key, entry, why or _KINDS.get(entry.type, f"of tar type {entry.type!r}"))
        elif meta is not None and entry is meta[0]:
            out.add(entry.name, len(meta[1]), [meta[1]])
        else:
            out.add(entry.name, entry.size, _chunks(stream, entry, url))
    if meta is None:
        text = records.to_json(dict(added)).encode("utf-8")
        out.add(f"{sample.key}.json", len(text), [text])


def with_scores(data: bytes, added: Mapping[str, object]) -> bytes:
    """A sample's `.json` with `added` fields: its own text kept byte for byte and the fields written before its
    closing brace; rewritten whole (its values kept) when it already has one of them. Raises `MalformedRecord`."""
    own = records.parse_record(data)
    if own.keys() & added.keys():
        return json.dumps({**own, **added}, ensure_ascii=False).encode("utf-8")
    body = data.rstrip(_JSON_SPACE)  # ends with the object's closing brace
    inside = body[:-1].rstrip(_JSON_SPACE)
    fields = ", ".join(f"{records.to_json(name)}: {records.to_json(value)}" for name, value in added.items())
    comma = b"" if inside.endswith(b"{") or not fields else b", "
    return inside + comma + fields.encode("utf-8") + b"}" + data[len(body) :]


def _read(stream: BinaryIO, entry: tar.Entry, url: str) -> bytes:
    return b"".join(_chunks(stream, entry, url))


def _chunks(stream: BinaryIO, entry: tar.Entry, url: str) -> Iterator[bytes]:
    stream.seek(entry.data)
    left = entry.size
    while left:
        chunk = stream.read(min(left, CHUNK_BYTES))
        if not chunk:
            raise ShardChanged(f"{url} ends inside member {entry.name}: it was cut short after it was read")
        left -= len(chunk)
        yield chunk


def _changed(url: str, sample: Wanted) -> ShardChanged:
    return ShardChanged(
        f"{url} changed after it was read: sample {sample.key} is no longer at byte {sample.offset}; "
        "run the job again on shards that stay as they are while it runs"
    )
