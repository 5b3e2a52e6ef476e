"""Writing records as JSON Lines files, or as JSON messages to a Pub/Sub topic."""

from __future__ import annotations

import json
from typing import Optional

import apache_beam as beam


def _to_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


class WriteJsonLines(beam.PTransform):
    """Writes dicts as JSON Lines, UTF-8: `<prefix>-SSSSS-of-NNNNN.jsonl` from a bounded input, and from
    an unbounded one a set of files per window of `window_seconds`, named after the window's bounds."""

    def __init__(self, file_path_prefix: str, window_seconds: Optional[float] = None):
        super().__init__()
        self._prefix = file_path_prefix
        self._window_seconds = window_seconds

    def expand(self, records: beam.PCollection):
        return (
            records
            | "ToJson" >> beam.Map(_to_json)
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
            | "ToJson" >> beam.Map(lambda record: _to_json(record).encode("utf-8"))
            | "Publish" >> beam.io.WriteToPubSub(self._topic)
        )
