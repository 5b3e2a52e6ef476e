"""Where records come from: JSONL files, or a Pub/Sub subscription or topic (one JSON object per message).

Both transforms return a tagged result: `.records` (dicts) and `[records.DEAD_LETTER]` (entries for
lines or messages that are not a JSON object).
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics

from pipeline import progress, records


class ReadJsonLines(beam.PTransform):
    """Reads a JSONL file or glob (local or any Beam FileSystems URI).

    Counts the bytes read (`pipeline/input_bytes_read`); with `progress_folder` (a local job's
    `ProgressMonitor`), also tallies lines and bytes there as they are read.
    """

    def __init__(self, file_pattern: str, progress_folder: Optional[str] = None):
        super().__init__()
        self._pattern = file_pattern
        self._progress_folder = progress_folder

    def expand(self, begin: beam.pvalue.PBegin):
        lines = begin | "ReadLines" >> beam.io.ReadFromTextWithFilename(self._pattern, coder=coders.BytesCoder())
        lines = lines | "CountBytes" >> beam.Map(_count_bytes)
        if self._progress_folder:
            lines = lines | "Progress" >> beam.ParDo(
                progress.CountProgress(self._progress_folder, progress.READ, with_bytes=True)
            )
        return lines | "Parse" >> records.ParseJsonLines()


def _count_bytes(line: tuple[str, bytes]) -> tuple[str, bytes]:
    Metrics.counter(records.METRICS_NAMESPACE, "input_bytes_read").inc(len(line[1]) + 1)
    return line


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
