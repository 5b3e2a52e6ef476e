"""JSON Lines files in and out: the lines of `parts.InputPart`s parsed into records (malformed ones to the dead
letter), and records written as `<prefix>-SSSSS-of-NNNNN.jsonl` (per window in streaming)."""

from __future__ import annotations

import time
from typing import Iterator, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io import textio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

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
    an unbounded one a file per window of `window_seconds`, named after the window's bounds in UTC:
    `<prefix>-20261206T101500Z-20261206T101510Z-00000-of-00001.jsonl`."""

    def __init__(self, file_path_prefix: str, window_seconds: Optional[float] = None):
        super().__init__()
        self._prefix = file_path_prefix
        self._window_seconds = window_seconds

    def expand(self, rows: beam.PCollection):
        if not rows.is_bounded:
            # Windows by arrival at the writer, not by event time: the file windows close once and take
            # nothing late, and a backlog, a batch that waited, or an old --timestamp_attribute arrives late.
            rows = rows | "StampArrival" >> beam.Map(lambda record: beam.window.TimestampedValue(record, time.time()))
        if rows.is_bounded:
            write = beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        else:
            sink = _WindowNamedTextSink(self._prefix, ".jsonl", triggering_frequency=self._window_seconds)
            write = beam.io.Write(sink)
        return rows | "ToJson" >> beam.Map(to_json) | "WriteText" >> write


class _WindowNamedTextSink(textio._TextSink):
    """Beam's text sink, with window file names a shell takes as they are: Beam's `WriteToText` can only name them
    `<prefix>-[1796569500.0, 1796569510.0)-…` or `<prefix>-[2026-12-06T10-15-00, 2026-12-06T10-15-10)-…`."""

    def _get_final_name(self, shard_num, num_shards, w=None):
        return self._with_window(super()._get_final_name(shard_num, num_shards), w)

    def _get_final_name_glob(self, num_shards, w=None):
        return self._with_window(super()._get_final_name_glob(num_shards), w)

    def _with_window(self, name: str, window) -> str:
        if window is None or isinstance(window, GlobalWindow):
            return name
        prefix = self.file_path_prefix.get()
        return f"{prefix}-{window_bound(window.start)}-{window_bound(window.end)}{name[len(prefix) :]}"


def window_bound(moment: Timestamp) -> str:
    """A window's bound in UTC, as `20261206T101500Z` (`20261206T101500.25Z` within a second)."""
    utc = moment.to_utc_datetime()
    fraction = f".{utc.microsecond:06d}".rstrip("0") if utc.microsecond else ""
    return f"{utc:%Y%m%dT%H%M%S}{fraction}Z"
