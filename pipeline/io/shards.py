"""Scored WebDataset samples written as new shards, `<prefix>-00000.tar`, `<prefix>-00001.tar`, … (batch only):
every member of each sample copied byte for byte from its source shard, in img2dataset's layout, and its
scores in its `.json` (`pipeline.io.tar_copy`).

Records carry where their sample is, not its members: `__url__` (the shard) and `__offset__` (where the sample
starts in it, from `ReadWebDataset` with `SampleLayout(with_offsets=True)`). Members no record reads (`.npy`,
`.seg.png`, …) and image bytes, which scoring drops, are read again from the source shard when written. The
samples are numbered in a fixed order, by source shard path then offset, and cut into shards of
`samples_per_shard`; each output shard is written by one worker, reading each source shard it draws on in one
streamed pass, to a temporary file renamed into place when whole. So the same samples always give the same
shards, byte for byte, however the work was spread. With no sample at all, one empty shard is written, as Beam's
file sinks write one empty file. Members that cannot be copied (links, devices, sparse files) become dead-letter
entries (`tar_member_not_copied`), which `WriteShards` returns.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton

from pipeline.io import records
from pipeline.io.formats import DEFAULT_SAMPLES_PER_SHARD
from pipeline.io.tar_copy import NotCopied, TarStream, Wanted, copy_samples
from pipeline.io.webdataset import OFFSET_KEY
from transforms.outputs import OutputFields

TAR_MEMBER_NOT_COPIED = "tar_member_not_copied"

_LOGGER = logging.getLogger(__name__)


def shard_path(prefix: str, index: int) -> str:
    """The output shard `index` of `prefix`: `<prefix>-00000.tar` (more digits past 99999)."""
    return f"{prefix}-{index:05d}.tar"


class WriteShards(beam.PTransform):
    """Writes the samples of scored WebDataset records as shards `<prefix>-NNNNN.tar` of `samples_per_shard`.

    Args:
      file_path_prefix: local or any Beam FileSystems path prefix.
      outputs: the fields the scoring added (and the filter's cutoff): these, where a record has them, go into
        the sample's `.json`.
      samples_per_shard: samples per shard; the last one holds the rest.
    Takes records of `ReadWebDataset(..., SampleLayout(with_offsets=True))` (scored, filtered); returns the
    dead-letter entries of members that could not be copied.
    """

    def __init__(
        self, file_path_prefix: str, outputs: OutputFields, samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    ):
        super().__init__()
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
        self._prefix = file_path_prefix
        self._fields = (*outputs.names, outputs.cutoff)
        self._samples_per_shard = samples_per_shard

    def expand(self, scored: beam.PCollection) -> beam.PCollection:
        if not scored.is_bounded:
            raise ValueError("WebDataset output is for batch jobs; write JSONL files in streaming")
        by_source = (
            scored
            | "WhereSamplesAre" >> beam.Map(_wanted, self._fields)
            | "BySourceShard" >> beam.GroupByKey()
            | "InShardOrder" >> beam.MapTuple(lambda url, wanted: (url, sorted(wanted, key=_offset)))
        )
        starts = (
            by_source
            | "SamplesPerSource" >> beam.MapTuple(lambda url, wanted: (url, len(wanted)))
            | "AllSources" >> beam.combiners.ToDict()
            | "FirstNumbers" >> beam.Map(_first_numbers)
        )
        pieces = by_source | "CutIntoShards" >> beam.FlatMap(_pieces, AsSingleton(starts), self._samples_per_shard)
        none = (
            scored.pipeline
            | "Once" >> beam.Create([None])
            | "EmptyShardIfNoSample" >> beam.FlatMap(_empty_shard_if_no_sample, AsSingleton(starts))
        )
        return (
            (pieces, none)
            | "Pieces" >> beam.Flatten()
            | "ByOutputShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self._prefix))
        )


def _wanted(record: Mapping, fields: Sequence[str]) -> tuple[str, Wanted]:
    try:
        url, offset, key = record["__url__"], record[OFFSET_KEY], record["__key__"]
    except KeyError as missing:
        raise ValueError(
            f"a record without {missing}: WriteShards takes the records of ReadWebDataset with "
            "SampleLayout(with_offsets=True)"
        ) from None
    return url, Wanted(offset, key, {name: record[name] for name in fields if name in record})


def _offset(sample: Wanted) -> int:
    return sample.offset


def _first_numbers(counts: Mapping[str, int]) -> dict[str, int]:
    """Each source shard's first sample number: the samples of the shards before it, by path."""
    starts, total = {}, 0
    for url in sorted(counts):
        starts[url], total = total, total + counts[url]
    return starts


def _empty_shard_if_no_sample(_, starts: Mapping[str, int]) -> list[tuple[int, None]]:
    return [] if starts else [(0, None)]


def _pieces(source: tuple[str, list[Wanted]], starts: Mapping[str, int], per_shard: int) -> Iterator[tuple]:
    """`(output shard, (source shard, its samples there))` for each output shard the source's samples go to."""
    url, wanted = source
    number = starts[url]
    while wanted:
        index = number // per_shard
        count = (index + 1) * per_shard - number
        yield index, (url, wanted[:count])
        number, wanted = number + count, wanted[count:]


class _WriteShard(beam.DoFn):
    def __init__(self, prefix: str):
        self._prefix = prefix

    def setup(self) -> None:
        self._shards = Metrics.counter(records.METRICS_NAMESPACE, "webdataset_shards_written")
        self._samples = Metrics.counter(records.METRICS_NAMESPACE, "webdataset_samples_written")
        self._not_copied = Metrics.counter(records.METRICS_NAMESPACE, "webdataset_members_not_copied")

    def process(self, element: tuple[int, Iterable[tuple[str, list[Wanted]]]]) -> Iterator[dict]:
        index, pieces = element
        pieces = sorted((piece for piece in pieces if piece is not None), key=lambda piece: piece[0])  # None: empty
        path = shard_path(self._prefix, index)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # not matched by *.tar; renamed into place when whole
        left_out, count = [], 0
        try:
            with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as out:
                stream = TarStream(out)
                for url, wanted in pieces:
                    with FileSystems.open(url, compression_type=CompressionTypes.UNCOMPRESSED) as source:
                        size = source.seek(0, io.SEEK_END)
                        left_out += copy_samples(source, size, url, wanted, stream)
                    count += len(wanted)
                stream.close()
            FileSystems.rename([temporary], [path])
        except BaseException:
            _delete_quietly(temporary)
            raise
        _LOGGER.info("Wrote %s: %d sample(s)", path, count)
        self._shards.inc()
        self._samples.inc(count)
        for item in left_out:
            self._not_copied.inc()
            yield _dead_letter(item, path)


def _dead_letter(item: NotCopied, path: str) -> dict:
    url = item.url
    where = {"__url__": url, "__key__": item.key, "offset": item.entry.offset, "members": [item.entry.name]}
    message = f"member {item.entry.name} of sample {item.key} is {item.why}: it was not copied into {path}"
    raw = json.dumps(where, ensure_ascii=False).encode("utf-8")
    return records.dead_letter_entry(url, raw, TAR_MEMBER_NOT_COPIED, message)


def _delete_quietly(path: str) -> None:
    try:
        FileSystems.delete([path])
    except Exception:  # noqa: BLE001 - it may never have been made; the error that matters is being raised
        pass
