"""Where records come from: JSONL files, or a Pub/Sub subscription or topic (one JSON object per message).

Both transforms return a tagged result: `.records` (dicts) and `[records.DEAD_LETTER]` (entries for
lines or messages that are not a JSON object), as do the WebDataset and Parquet readers beside them
(`webdataset.py`, `parquet.py`); `input_format` tells which one a file pattern needs.
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam import coders

from pipeline import records


def input_format(file_pattern: str, chosen: str = "auto") -> str:
    """`chosen`, or with "auto" the format the pattern's extension names: .tar is WebDataset, .parquet
    Parquet, anything else JSONL."""
    if chosen != "auto":
        return chosen
    name = file_pattern.lower()
    return "webdataset" if name.endswith(".tar") else "parquet" if name.endswith(".parquet") else "jsonl"


class ReadJsonLines(beam.PTransform):
    """Reads a JSONL file or glob (local or any Beam FileSystems URI)."""

    def __init__(self, file_pattern: str):
        super().__init__()
        self._pattern = file_pattern

    def expand(self, begin: beam.pvalue.PBegin):
        return (
            begin
            | "ReadLines" >> beam.io.ReadFromTextWithFilename(self._pattern, coder=coders.BytesCoder())
            | "Parse" >> records.ParseJsonLines()
        )


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
