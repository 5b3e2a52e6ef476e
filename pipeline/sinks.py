"""Writing records as JSON Lines shards."""

from __future__ import annotations

import json

import apache_beam as beam


class WriteJsonLines(beam.PTransform):
    """Writes dicts as `<prefix>-SSSSS-of-NNNNN.jsonl`, one JSON object per line, UTF-8."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._prefix = file_path_prefix

    def expand(self, records: beam.PCollection):
        return (
            records
            | "ToJson" >> beam.Map(lambda record: json.dumps(record, ensure_ascii=False))
            | "WriteText" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        )
