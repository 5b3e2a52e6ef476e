"""JSON Lines files in and out: the lines of `parts.InputPart`s parsed into records (malformed ones to the dead
letter), and records written as `<prefix>-SSSSS-of-NNNNN.jsonl` (per window in streaming)."""

from __future__ import annotations

import time
from typing import Iterator, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline import progress
from pipeline.io import records
from pipeline.io.lines import LongLine, line_bytes, read_lines
from pipeline.io.parts import InputPart
from pipeline.io.records import to_json


class ReadJsonLines(beam.PTransform):
    """Reads the parts of JSONL files (`parts.plan_parts`), each line at most `max_line_bytes`.

    Parts are spread over the workers and each is read in one go, in linear time. Counts the bytes read
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
            | "Parts" >> beam.Create(list(self._parts))
            | "ReadLines" >> beam.FlatMap(read_part, self._max_line_bytes)
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


def read_part(part: InputPart, max_line_bytes: int) -> Iterator[tuple[str, Union[bytes, LongLine]]]:
    """`(path, line)` for each line whose first byte is in the part; a line over the limit as a `LongLine`."""
    compression = CompressionTypes.AUTO if part.compressed else CompressionTypes.UNCOMPRESSED
    with FileSystems.open(part.path, compression_type=compression) as stream:
        for line in read_lines(stream, part.start, None if part.compressed else part.end, max_line_bytes):
            yield part.path, line


class WriteJsonLines(beam.PTransform):
    """Writes dicts as JSON Lines, UTF-8: `<prefix>-SSSSS-of-NNNNN.jsonl` from a bounded input, and from
    an unbounded one a set of files per window of `window_seconds`, named after the window's bounds."""

    def __init__(self, file_path_prefix: str, window_seconds: Optional[float] = None):
        super().__init__()
        self._prefix = file_path_prefix
        self._window_seconds = window_seconds

    def expand(self, rows: beam.PCollection):
        if not rows.is_bounded:
            # Windows by arrival at the writer, not by event time: the file windows close once and take
            # nothing late, and a backlog, a batch that waited, or an old --timestamp_attribute arrives late.
            rows = rows | "StampArrival" >> beam.Map(lambda record: beam.window.TimestampedValue(record, time.time()))
        return (
            rows
            | "ToJson" >> beam.Map(to_json)
            | "WriteText"
            >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", triggering_frequency=self._window_seconds)
        )
