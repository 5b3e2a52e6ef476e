"""Writing records as JSON Lines files, or as JSON messages to a Pub/Sub topic."""

from __future__ import annotations

import time
from typing import Optional

import apache_beam as beam

from pipeline.records import to_json


class WriteJsonLines(beam.PTransform):
    """Writes dicts as JSON Lines, UTF-8: `<prefix>-SSSSS-of-NNNNN.jsonl` from a bounded input, and from
    an unbounded one a set of files per window of `window_seconds`, named after the window's bounds."""

    def __init__(self, file_path_prefix: str, window_seconds: Optional[float] = None):
        super().__init__()
        self._prefix = file_path_prefix
        self._window_seconds = window_seconds

    def expand(self, records: beam.PCollection):
        if not records.is_bounded:
            # Windows by arrival at the writer, not by event time: the file windows close once and take
            # nothing late, and a backlog, a batch that waited, or an old --timestamp_attribute arrives late.
            records = records | "StampArrival" >> beam.Map(
                lambda record: beam.window.TimestampedValue(record, time.time())
            )
        return (
            records
            | "ToJson" >> beam.Map(to_json)
            | "WriteText"
            >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", triggering_frequency=self._window_seconds)
        )


class PublishJson(beam.PTransform):
    """Publishes each dict as one UTF-8 JSON message to a Pub/Sub topic."""

    def __init__(self, topic: str):
        super().__init__()
        self._topic = topic

    def expand(self, records: beam.PCollection):
        return (
            records
            | "ToJson" >> beam.Map(lambda record: to_json(record).encode("utf-8"))
            | "Publish" >> beam.io.WriteToPubSub(self._topic)
        )
