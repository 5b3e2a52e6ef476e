"""Where records come from: JSONL files, or a Pub/Sub subscription or topic (one JSON object per message).

Both transforms return a tagged result: `.records` (dicts) and `[records.DEAD_LETTER]` (entries for
lines or messages that are not a JSON object), as do the WebDataset and Parquet readers beside them
(`webdataset.py`, `parquet.py`); `options.input_format` tells which one a file pattern needs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from pipeline import progress, records
from pipeline.lines import line_bytes, read_lines
from pipeline.parts import InputPart


class ReadJsonLines(beam.PTransform):
    """Reads the parts of JSONL files (`parts.plan_parts`), each line at most `max_line_bytes`.

    Parts are spread over the workers and each is read in one go, in linear time. Every line carries the
    index of its part in `parts` as its event time (see `part_of`). Counts the bytes read
    (`pipeline/input_bytes_read`); with `progress_folder` (a local job's `ProgressMonitor`), also tallies
    lines and bytes there as they are read.
    """

    def __init__(self, parts: Sequence[InputPart], max_line_bytes: int, progress_folder: Optional[str] = None):
        super().__init__()
        self._parts = tuple(parts)
        self._max_line_bytes = max_line_bytes
        self._progress_folder = progress_folder

    def expand(self, begin: beam.pvalue.PBegin):
        lines = (
            begin
            | "Parts" >> beam.Create(list(enumerate(self._parts)))
            | "ReadLines" >> beam.FlatMap(_lines, self._max_line_bytes)
            | "CountBytes" >> beam.Map(_count_bytes)
        )
        if self._progress_folder:
            lines = lines | "Progress" >> beam.ParDo(
                progress.CountProgress(self._progress_folder, progress.READ, with_bytes=True)
            )
        return lines | "Parse" >> records.ParseJsonLines()


def _count_bytes(line: tuple[str, object]) -> tuple[str, object]:
    Metrics.counter(records.METRICS_NAMESPACE, "input_bytes_read").inc(line_bytes(line[1]) + 1)
    return line


def part_of(timestamp: Timestamp) -> int:
    """The index of a line's part, from the event time `ReadJsonLines` gave it (and every step keeps)."""
    return int(timestamp.micros // 1_000_000)


def _lines(indexed_part: tuple[int, InputPart], max_line_bytes: int):
    index, part = indexed_part
    stamp = Timestamp(seconds=index)
    compression = CompressionTypes.AUTO if part.compressed else CompressionTypes.UNCOMPRESSED
    with FileSystems.open(part.path, compression_type=compression) as stream:
        for line in read_lines(stream, part.start, None if part.compressed else part.end, max_line_bytes):
            yield beam.window.TimestampedValue((part.path, line), stamp)


class ReadPubSubRecords(beam.PTransform):
    """Reads JSON messages from a subscription or a topic (streaming); attributes can be kept on the record."""

    def __init__(
        self,
        *,
        subscription: Optional[str] = None,
        topic: Optional[str] = None,
        id_label: Optional[str] = None,
        timestamp_attribute: Optional[str] = None,
        attributes_key: Optional[str] = None,
    ):
        super().__init__()
        if (subscription is None) == (topic is None):
            raise ValueError("pass exactly one of subscription and topic")
        self._subscription = subscription
        self._topic = topic
        self._id_label = id_label
        self._timestamp_attribute = timestamp_attribute
        self._attributes_key = attributes_key

    def expand(self, begin: beam.pvalue.PBegin):
        messages = begin | "ReadFromPubSub" >> beam.io.ReadFromPubSub(
            topic=self._topic,
            subscription=self._subscription,
            id_label=self._id_label,
            with_attributes=True,
        )
        return messages | "Parse" >> records.ParsePubSubMessages(
            self._subscription or self._topic, self._attributes_key, self._timestamp_attribute
        )
