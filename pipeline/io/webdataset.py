"""Reading WebDataset `.tar` shards (img2dataset's layout) as records, streamed through Beam FileSystems.

A shard holds each sample as consecutive members named `<key>.<extension>`, the key being the member's
path up to the first dot of its file name (`part/000001.jpg` -> `part/000001`). One record per sample:
its image member (the first of `image_extensions` present) as a Hugging Face image struct
`{"bytes": ..., "path": <member name>}`, `.txt` as the caption, the fields of `.json` merged in, and
`__key__` and `__url__` (the shard). Other members are skipped. A member whose extension the sample
already has starts a new sample with the same key, so no member is dropped unseen.

A shard that cannot be read to the end loses only what cannot be read: every sample before a damaged
part is kept, reading resumes at the next readable header after it, and the unreadable bytes (with the
sample they cut, on both sides) become one dead-letter entry naming the shard, the byte offsets and the
reason. Nothing is unpacked to disk; member data is read only for the members a record uses.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.io import records
from pipeline.io.formats import DEFAULT_IMAGE_EXTENSIONS
from transforms.settings import ImageSettings, RecordFields

TAR_CORRUPT = "tar_corrupt"
TAR_TRUNCATED = "tar_truncated"

_BLOCK = tarfile.BLOCKSIZE
_SCAN_CHUNK = 128 * _BLOCK


@dataclass(frozen=True)
class SampleLayout:
    """Which record fields a sample's members fill, and what may be read of an image member."""

    image_key: str = RecordFields.image_key
    text_key: str = RecordFields.text_key
    image_extensions: Sequence[str] = DEFAULT_IMAGE_EXTENSIONS
    # An image member larger than this is read only this far, enough for the scorer to refuse it as too large.
    max_image_bytes: int = ImageSettings.max_image_bytes


class _Member(NamedTuple):
    key: str
    extension: str
    name: str
    offset: int
    data: Optional[bytes]  # None for the members no record uses


class _Damage(NamedTuple):
    """Bytes `[start, end)` of the shard that cannot be read as tar members."""

    start: int
    end: int
    reason: str
    message: str


@dataclass
class _Sample:
    key: str
    offset: int
    names: list[str] = field(default_factory=list)
    data: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # extension -> (member name, data)
    extensions: set[str] = field(default_factory=set)
    cut: bool = False  # its first members were lost to damage: it goes with that damage to the dead letter

    def add(self, member: _Member) -> None:
        self.names.append(member.name)
        self.extensions.add(member.extension)
        if member.data is not None:
            self.data[member.extension] = (member.name, member.data)


class Unreadable(NamedTuple):
    """What could not be made a record: a dead-letter reason, message, and where it lies (as JSON text)."""

    reason: str
    error: str
    where: dict


def read_shard(stream: BinaryIO, size: int, url: str, layout: SampleLayout) -> Iterator[Union[dict, Unreadable]]:
    """The records of one shard, in order, and an `Unreadable` for each part that cannot be read.

    `stream` must be seekable (every Beam FileSystems stream of an uncompressed file is): a damaged part is
    skipped by looking for the next valid header.
    """
    samples = _SampleGrouper(url, layout)
    for item in _members(stream, size, layout):
        yield from samples.add(item)
    yield from samples.finish()


class _SampleGrouper:
    """Groups members into samples; keeps damage open until it is known whether the next sample was cut by it."""

    def __init__(self, url: str, layout: SampleLayout):
        self._url = url
        self._layout = layout
        self._sample: Optional[_Sample] = None
        self._damage: Optional[_Damage] = None
        self._lost: list[_Sample] = []
        self._cut_key: Optional[str] = None

    def add(self, item: Union[_Member, _Damage]) -> Iterator[Union[dict, Unreadable]]:
        if isinstance(item, _Damage):
            # The sample being read is cut: it is lost to the open damage if it continues one, else to this one.
            sample, self._sample = self._sample, None
            cut_key = self._cut_key if sample is None else sample.key
            if sample is not None:
                self._lost.append(sample)
            if self._damage is not None:
                yield self._damage_entry()
            self._damage, self._cut_key = item, cut_key
            return
        sample = self._sample
        if sample is None or item.key != sample.key or item.extension in sample.extensions:
            yield from self._close()
            sample = self._sample = _Sample(item.key, item.offset)
            if self._damage is not None:
                sample.cut = item.key == self._cut_key
                if not sample.cut:
                    yield self._damage_entry()
        sample.add(item)

    def finish(self) -> Iterator[Union[dict, Unreadable]]:
        yield from self._close()
        if self._damage is not None:
            yield self._damage_entry()

    def _close(self) -> Iterator[Union[dict, Unreadable]]:
        sample, self._sample = self._sample, None
        if sample is None:
            return
        if sample.cut:
            self._lost.append(sample)
            yield self._damage_entry()
        else:
            yield self._record(sample)

    def _damage_entry(self) -> Unreadable:
        damage, lost = self._damage, self._lost
        self._damage, self._lost, self._cut_key = None, [], None
        where = {"__url__": self._url, "offset": damage.start, "end": damage.end}
        where["lost"] = [{"__key__": sample.key, "members": sample.names} for sample in lost]
        keys = ", ".join(dict.fromkeys(sample.key for sample in lost))
        message = f"bytes {damage.start}-{damage.end} of the shard cannot be read: {damage.message}"
        message += f"; lost the sample(s) they cut: {keys}" if lost else ""
        return Unreadable(damage.reason, message, where)

    def _record(self, sample: _Sample) -> Union[dict, Unreadable]:
        layout = self._layout
        where = {"__url__": self._url, "__key__": sample.key, "offset": sample.offset, "members": sample.names}
        record: dict = {}
        if "json" in sample.data:
            name, data = sample.data["json"]
            try:
                record.update(records.parse_record(data))
            except records.MalformedRecord as bad:
                reason = records.NOT_JSON if bad.reason == records.EMPTY_LINE else bad.reason
                return Unreadable(reason, f"{name}: {bad.message}", where)
        record["__key__"] = sample.key
        record["__url__"] = self._url
        if "txt" in sample.data:
            name, data = sample.data["txt"]
            try:
                record[layout.text_key] = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                return Unreadable(records.NOT_UTF8, f"{name}: {exc}", where)
        image = next((ext.lower() for ext in layout.image_extensions if ext.lower() in sample.data), None)
        if image is not None:
            name, data = sample.data[image]
            record[layout.image_key] = {"bytes": data, "path": name}
        return record


def _members(stream: BinaryIO, size: int, layout: SampleLayout) -> Iterator[Union[_Member, _Damage]]:
    """Every member from the start, and a `_Damage` for each part that cannot be read; resumes after each."""
    start: Optional[int] = 0
    while start is not None:
        start = yield from _members_from(stream, size, start, layout)


def _members_from(stream: BinaryIO, size: int, start: int, layout: SampleLayout):
    """Reads members from header offset `start`; returns where to resume after damage, or None at the end."""
    images = {extension.lower() for extension in layout.image_extensions}
    wanted = images | {"txt", "json"}
    stream.seek(start)
    header = start  # the header being read
    member = None  # the member whose data is being read
    try:
        tar = tarfile.open(fileobj=stream, mode="r:")
        while (member := tar.next()) is not None:
            if member.offset_data + member.size > size:
                raise tarfile.ReadError("unexpected end of data")
            key, extension = _split_name(member.name)
            data = None
            if member.isfile() and extension in wanted:
                limit = min(member.size, layout.max_image_bytes + 1) if extension in images else member.size
                data = _member_data(tar, stream, member, limit)
            if key is not None:
                yield _Member(key, extension, member.name, member.offset, data)
            header, member = tar.offset, None
    except (tarfile.TarError, EOFError) as exc:
        if member is None:
            return (yield from _damaged(stream, size, header, f"cannot read the header at byte {header}: {exc}"))
        key, extension = _split_name(member.name)
        if key is not None:  # its header was read: the sample it belongs to is the one cut
            yield _Member(key, extension, member.name, member.offset, None)
        if member.offset_data + member.size > size:
            yield _Damage(member.offset, size, TAR_TRUNCATED, _truncated(size, f"inside member {member.name}"))
            return None
        return (yield from _damaged(stream, size, header, f"cannot read member {member.name}: {exc}"))
    stream.seek(header)
    block = stream.read(_BLOCK)
    if len(block) == _BLOCK and not any(block):
        return None  # the end-of-archive marker
    return (yield from _damaged(stream, size, header, f"invalid header at byte {header}"))


def _member_data(tar: tarfile.TarFile, stream: BinaryIO, member: tarfile.TarInfo, limit: int) -> bytes:
    """The first `limit` bytes of a member: read straight from the stream (tarfile's own file object reads in
    small pieces, ten times slower), except for sparse members, whose data is not stored in one piece."""
    if member.issparse():
        return tar.extractfile(member).read(limit)
    stream.seek(member.offset_data)
    data = stream.read(limit)
    if len(data) < limit:
        raise tarfile.ReadError("unexpected end of data")
    return data


def _damaged(stream: BinaryIO, size: int, position: int, message: str):
    """Damage from `position` to the next valid header (where reading resumes), or to the end of the shard."""
    if position + _BLOCK > size:
        yield _Damage(position, size, TAR_TRUNCATED, _truncated(size, "without its end-of-archive marker"))
        return None
    resume = _next_header(stream, position + _BLOCK, size)
    end = size if resume is None else resume
    yield _Damage(position, end, TAR_CORRUPT, message + ("" if resume is None else f"; resumed at byte {resume}"))
    return resume


def _truncated(size: int, where: str) -> str:
    return f"the shard ends at byte {size}, {where}: it was cut short"


def _next_header(stream: BinaryIO, position: int, size: int) -> Optional[int]:
    """The offset of the first block at or after `position` that is a valid tar header, if any."""
    while position + _BLOCK <= size:
        stream.seek(position)
        chunk = stream.read(min(_SCAN_CHUNK, (size - position) // _BLOCK * _BLOCK))
        if not chunk:
            return None
        for offset in range(0, len(chunk) - _BLOCK + 1, _BLOCK):
            block = chunk[offset : offset + _BLOCK]
            if not any(block):
                continue
            try:
                tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
            except tarfile.HeaderError:
                continue
            return position + offset
        position += len(chunk)
    return None


def _split_name(name: str) -> tuple[Optional[str], str]:
    """`part/000001.seg.png` -> (`part/000001`, `seg.png`); (None, "") for a name without an extension."""
    folder, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    if not stem or not dot:
        return None, ""
    return posixpath.join(folder, stem) if folder else stem, extension.lower()


class ReadWebDataset(beam.PTransform):
    """Reads WebDataset `.tar` shards (a file or glob, local or any Beam FileSystems URI) into records.

    Returns a tagged result like `ReadJsonLines`: `.records` and `[records.DEAD_LETTER]`. Shards are
    spread across workers; each shard is read by one worker, in order.
    """

    def __init__(self, file_pattern: str, layout: SampleLayout = SampleLayout()):
        super().__init__()
        self._pattern = file_pattern
        self._layout = layout

    def expand(self, begin: beam.pvalue.PBegin):
        return (
            begin
            | "MatchShards" >> fileio.MatchFiles(self._pattern, fileio.EmptyMatchTreatment.DISALLOW)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadSamples" >> beam.ParDo(_ReadShard(self._layout)).with_outputs(records.DEAD_LETTER, main="records")
        )


class _ReadShard(beam.DoFn):
    def __init__(self, layout: SampleLayout):
        self._layout = layout
        self._read = Metrics.counter(records.METRICS_NAMESPACE, "read")

    def process(self, shard) -> Iterator:
        with FileSystems.open(shard.path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            for item in read_shard(stream, shard.size_in_bytes, shard.path, self._layout):
                self._read.inc()
                if isinstance(item, Unreadable):
                    Metrics.counter(records.METRICS_NAMESPACE, "dead_lettered").inc()
                    Metrics.counter(records.METRICS_NAMESPACE, f"dead_lettered_{item.reason}").inc()
                    raw = json.dumps(item.where, ensure_ascii=False).encode("utf-8")
                    yield beam.pvalue.TaggedOutput(
                        records.DEAD_LETTER, records.dead_letter_entry(shard.path, raw, item.reason, item.error)
                    )
                else:
                    yield item
