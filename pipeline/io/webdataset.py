"""Reading WebDataset `.tar` shards (img2dataset's layout) as records, streamed through Beam FileSystems.

A shard holds each sample as consecutive members named `<key>.<extension>`, the key being the member's
path up to the first dot of its file name (`part/000001.jpg` -> `part/000001`). One record per sample:
its image member (the first of `image_extensions` present) as a Hugging Face image struct
`{"bytes": ..., "path": <member name>}`, `.txt` as the caption, the fields of `.json` merged in, and
`__key__` and `__url__` (the shard). Other members are skipped, and so are folders, names without an
extension and macOS `._` files; a member with an extension but no key (`.jpg`, `dir/.txt`) is listed in a
dead letter (`tar_member_without_key`). A member whose extension the sample already has starts a new sample
with the same key, so no member is dropped unseen. Name bytes that are not UTF-8 are kept as `\\xNN` escapes.

The tar headers are read by `pipeline.io.tar`, which trusts none of them (see there). A shard that cannot be
read to the end loses only what cannot be read: every sample before a damaged part is kept, reading resumes
at the next valid header after it, and the unreadable bytes become one dead-letter entry naming the shard,
the byte offsets, the reason and the samples they cut (key and the members read), on both sides: the sample
being read when the damage starts, and the first sample after it when it has that sample's key or the
damaged header's name could not be read (it may have been that sample's first member). Every sample comes
out once, as a record or listed in a dead letter; a sample wholly inside a damaged part cannot be named, but
the bytes it was in are. Archives joined with `cat` (a tar writer's end-of-archive marker, padded to a
record, then another archive) are read on as one shard. A GNU sparse member is stepped over; a sample whose
record would use one is dead-lettered (`tar_sparse_member`), as its stored bytes are not the file. A
compressed shard named `.tar` is reported as such (`tar_compressed`), not read. Nothing is unpacked to disk;
member data is read, straight from the stream, only for the members a record uses.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.io import records, tar
from pipeline.io.formats import DEFAULT_IMAGE_EXTENSIONS
from pipeline.io.tar import TAR_COMPRESSED, TAR_CORRUPT, TAR_TRUNCATED  # noqa: F401  (reasons of this reader)
from transforms.settings import ImageSettings, RecordFields

TAR_SPARSE_MEMBER = "tar_sparse_member"
TAR_MEMBER_WITHOUT_KEY = "tar_member_without_key"
# With SampleLayout(with_offsets=True), each record's sample: the byte offset of its first member's first header.
OFFSET_KEY = "__offset__"


@dataclass(frozen=True)
class SampleLayout:
    """Which record fields a sample's members fill, and what may be read of an image member."""

    image_key: str = RecordFields.image_key
    text_key: str = RecordFields.text_key
    image_extensions: Sequence[str] = DEFAULT_IMAGE_EXTENSIONS
    # An image member larger than this is read only this far, enough for the scorer to refuse it as too large.
    max_image_bytes: int = ImageSettings.max_image_bytes
    # Also give each record OFFSET_KEY, for a writer that copies the sample's members from the shard later.
    with_offsets: bool = False


class _Member(NamedTuple):
    key: str
    extension: str
    name: str
    offset: int
    data: Optional[bytes]  # None for the members no record uses
    sparse: bool = False


@dataclass
class _Sample:
    key: str
    offset: int
    names: list[str] = field(default_factory=list)
    data: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # extension -> (member name, data)
    sparse: dict[str, str] = field(default_factory=dict)  # extension -> name of a sparse member
    extensions: set[str] = field(default_factory=set)
    cut: bool = False  # its first members were lost to damage: it goes with that damage to the dead letter

    def add(self, member: _Member) -> None:
        self.names.append(member.name)
        self.extensions.add(member.extension)
        if member.data is not None:
            self.data[member.extension] = (member.name, member.data)
        elif member.sparse:
            self.sparse[member.extension] = member.name


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
    for item in _members(stream, size, url, layout):
        yield from samples.add(item)
    yield from samples.finish()


class _SampleGrouper:
    """Groups members into samples; keeps damage open until it is known whether the next sample was cut by it."""

    def __init__(self, url: str, layout: SampleLayout):
        self._url = url
        self._layout = layout
        self._sample: Optional[_Sample] = None
        self._damage: Optional[tar.Damage] = None
        self._lost: list[_Sample] = []
        self._cut_key: Optional[str] = None  # the next sample is cut if it has this key (any key: "")

    def add(self, item: Union[_Member, tar.Damage, tar.NextArchive, Unreadable]) -> Iterator[Union[dict, Unreadable]]:
        if isinstance(item, _Member):
            yield from self._add_member(item)
        elif isinstance(item, tar.Damage):
            # The sample being read is cut: it is lost to the open damage if it continues one, else to this one.
            sample, self._sample = self._sample, None
            cut_key = self._cut_key if sample is None else sample.key
            if sample is not None:
                self._lost.append(sample)
            if self._damage is not None:
                yield self._damage_entry()
            # A damaged header whose name is unknown may have been the first member of the next sample.
            self._damage, self._cut_key = item, "" if item.member is None else cut_key
        elif isinstance(item, tar.NextArchive):
            yield from self.finish()
        else:
            yield item

    def _add_member(self, member: _Member) -> Iterator[Union[dict, Unreadable]]:
        sample = self._sample
        if sample is None or member.key != sample.key or member.extension in sample.extensions:
            yield from self._close()
            sample = self._sample = _Sample(member.key, member.offset)
            if self._damage is not None:
                sample.cut = self._cut_key in ("", member.key)
                if not sample.cut:
                    yield self._damage_entry()
        sample.add(member)

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
        image = next((ext.lower() for ext in layout.image_extensions if ext.lower() in sample.extensions), None)
        sparse = [sample.sparse[ext] for ext in (image, "txt", "json") if ext in sample.sparse]
        if sparse:
            message = f"{sparse[0]} is a GNU sparse file: its stored bytes are not its content, and are not expanded"
            return Unreadable(TAR_SPARSE_MEMBER, message, where)
        if "json" in sample.data:
            name, data = sample.data["json"]
            try:
                record.update(records.parse_record(data))
            except records.MalformedRecord as bad:
                reason = records.NOT_JSON if bad.reason == records.EMPTY_LINE else bad.reason
                return Unreadable(reason, f"{name}: {bad.message}", where)
        record["__key__"] = sample.key
        record["__url__"] = self._url
        if layout.with_offsets:
            record[OFFSET_KEY] = sample.offset
        if "txt" in sample.data:
            name, data = sample.data["txt"]
            try:
                record[layout.text_key] = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as exc:
                return Unreadable(records.NOT_UTF8, f"{name}: {exc}", where)
        if image in sample.data:
            name, data = sample.data[image]
            record[layout.image_key] = {"bytes": data, "path": name}
        return record


def _members(stream: BinaryIO, size: int, url: str, layout: SampleLayout) -> Iterator:
    """Every member from the start as a `_Member`, with the walk's `tar.Damage` and `tar.NextArchive` items, and
    an `Unreadable` for each member that has no key."""
    images = {extension.lower() for extension in layout.image_extensions}
    wanted = images | {"txt", "json"}
    for item in tar.entries(stream, size):
        if isinstance(item, tar.Entry):
            if item.is_folder:
                continue
            key, extension = _split_name(item.name)
            if key is None:
                if extension:
                    yield _without_key(item, url)
                continue
            data = None
            if extension in wanted and item.is_file and not item.sparse:
                limit = min(item.size, layout.max_image_bytes + 1) if extension in images else item.size
                stream.seek(item.data)
                data = stream.read(limit)
                if len(data) < limit:  # the stream holds less than its size said
                    yield _Member(key, extension, item.name, item.offset, None)
                    message = f"the shard was cut short: it ends inside member {item.name}"
                    yield tar.Damage(item.offset, size, TAR_TRUNCATED, message, item.name)
                    return
            yield _Member(key, extension, item.name, item.offset, data, item.sparse)
        elif isinstance(item, tar.Damage) and item.member is not None:
            key, extension = _split_name(item.member)
            if key is not None:  # its header was read: the sample it belongs to is the one cut
                yield _Member(key, extension, item.member, item.start, None)
            yield item
        else:
            yield item


def _without_key(entry: tar.Entry, url: str) -> Unreadable:
    message = f"member {entry.name} at byte {entry.offset} has no key (nothing before the first dot of its file"
    message += " name): it belongs to no sample"
    return Unreadable(
        TAR_MEMBER_WITHOUT_KEY, message, {"__url__": url, "offset": entry.offset, "members": [entry.name]}
    )


def _split_name(name: str) -> tuple[Optional[str], str]:
    """`part/000001.seg.png` -> (`part/000001`, `seg.png`); (None, extension) for a name without a key (`.jpg`),
    (None, "") for one that is no sample's member: without an extension, or a macOS `._` file."""
    folder, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    if not stem or not dot:
        return None, "" if not dot or base.startswith("._") else extension.lower()
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
