"""Pub/Sub in and out: JSON messages read as records (attributes and event time kept as asked, malformed
messages to the dead letter), and dicts published as JSON messages."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from pipeline import local_streaming
from pipeline.io import records
from pipeline.io.records import to_json


class ReadPubSubRecords(beam.PTransform):
    """Reads JSON messages from a subscription or a topic (streaming); attributes can be kept on the record.

    `stoppable`: on Beam's local streaming runner, read with `local_streaming.StoppableRead`, which a
    `LocalStreamingResult.drain()` (Ctrl-C, SIGTERM) stops so that what was pulled is still written.
    """

    def __init__(
        self,
        *,
        subscription: Optional[str] = None,
        topic: Optional[str] = None,
        id_label: Optional[str] = None,
        timestamp_attribute: Optional[str] = None,
        attributes_key: Optional[str] = None,
        stoppable: bool = False,
    ):
        super().__init__()
        if (subscription is None) == (topic is None):
            raise ValueError("pass exactly one of subscription and topic")
        self._subscription = subscription
        self._topic = topic
        self._id_label = id_label
        self._timestamp_attribute = timestamp_attribute
        self._attributes_key = attributes_key
        self._stoppable = stoppable

    def expand(self, begin: beam.pvalue.PBegin):
        read = beam.io.ReadFromPubSub(
            topic=self._topic,
            subscription=self._subscription,
            id_label=self._id_label,
            with_attributes=True,
        )
        if self._stoppable:
            read = local_streaming.StoppableRead(read._source)
        messages = begin | "ReadFromPubSub" >> read
        return messages | "Parse" >> records.ParsePubSubMessages(
            self._subscription or self._topic, self._attributes_key, self._timestamp_attribute
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
