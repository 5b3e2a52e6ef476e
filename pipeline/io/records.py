"""Parsing JSONL lines and Pub/Sub messages into records; anything else goes to the dead letter."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import re
import secrets
import uuid
from typing import Iterator, Mapping, Optional, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

from pipeline.io import values
from pipeline.io.lines import LongLine

METRICS_NAMESPACE = "pipeline"
DEAD_LETTER = "dead_letter"

NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
EMPTY_LINE = "empty_line"
TOO_DEEP = "too_deep"
BAD_UNICODE = "bad_unicode"
ATTRIBUTES_KEY_TAKEN = "attributes_key_taken"
BAD_TIMESTAMP = "bad_timestamp"
LINE_TOO_LONG = "line_too_long"

# Deeper records break Python's JSON parser and Beam's pickling (both recurse), stopping the job.
MAX_NESTING = 64


def dead_letter_entry(
    source: str,
    raw: bytes,
    reason: str,
    error: str,
    *,
    message_id: Optional[str] = None,
    attributes: Optional[Mapping[str, str]] = None,
) -> dict:
    """The dead-letter record: where it came from, why, and the raw payload (base64 when not UTF-8 text).

    Every entry has the same fields, whatever its source, so one table or reader takes them all;
    `message_id` and `attributes` are set for Pub/Sub messages only.
    """
    entry = {
        "source": source,
        "reason": reason,
        "error": error,
        "raw": None,
        "raw_base64": None,
        "message_id": message_id,
        "attributes": dict(attributes) if attributes is not None else None,
    }
    try:
        entry["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return entry


def to_json(value) -> str:
    """Strict JSON text on one line: NaN and ±Infinity, which Python's parser accepts, are written as the
    strings "NaN", "Infinity" and "-Infinity", so every reader (BigQuery, `bq load`, JavaScript) takes the
    output; U+0085, U+2028 and U+2029 are escaped, since `str.splitlines()` and others break lines there.
    Values of Parquet columns that JSON lacks (docs/formats.md): timestamps, times and dates in ISO 8601 with
    their unit's digits, durations as exact numbers of seconds, decimals as strings, bytes in base64 (as
    BigQuery writes its BYTES in JSON), extension types as strings."""
    numbers: list[str] = []  # exact number texts json.dumps cannot write, put in by their marks
    text = json.dumps(
        _finite(value), ensure_ascii=False, allow_nan=False, default=lambda item: _json_default(item, numbers)
    )
    if numbers:
        text = _NUMBER_MARK.sub(lambda match: numbers[int(match.group(1))], text)
    return text.translate(_LINE_BREAKS) if not text.isascii() else text


def text_value(value) -> Optional[str]:
    """A value for a text column: strings and None as they are, anything else as its JSON text."""
    return value if value is None or isinstance(value, str) else to_json(value)


_LINE_BREAKS = {ord(character): f"\\u{ord(character):04x}" for character in "\x85\u2028\u2029"}
# A JSON string no record holds (a private-use character and a nonce drawn at start), standing for a number.
_NONCE = secrets.token_hex(8)
_NUMBER_MARK = re.compile(f'"\ue000{_NONCE}(\\d+)"')


def _json_default(value, numbers: list[str]):
    if isinstance(value, values.Duration):
        numbers.append(value.json_value())
        return f"\ue000{_NONCE}{len(numbers) - 1}"
    if isinstance(value, (values.Timestamp, values.TimeOfDay, values.Day)):
        return value.json_value()
    if isinstance(value, values.Extension):
        text = value.text()
        return text if text is not None else to_json(value.storage)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} values cannot be written as JSON")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):  # tuples: the entries of a Parquet map column
        return [_finite(item) for item in value]
    return value


def parse_record(raw: Union[bytes, str]) -> dict:
    """Decodes one JSON object; raises `MalformedRecord` with a reason code otherwise."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRecord(NOT_UTF8, str(exc)) from None
    raw = raw.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as Windows tools write it
    if not raw.strip():
        raise MalformedRecord(EMPTY_LINE, "the line is empty")
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise MalformedRecord(NOT_JSON, str(exc)) from None
    except RecursionError:
        raise MalformedRecord(TOO_DEEP, f"nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(record, dict):
        raise MalformedRecord(NOT_OBJECT, f"expected a JSON object, got {type(record).__name__}")
    _check_values(record)
    return record


def _check_values(record: dict) -> None:
    """Refuses what later steps cannot carry: deep nesting, and lone surrogates (`"\\ud800"`), which
    JSON allows but UTF-8 cannot encode."""
    stack = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise MalformedRecord(TOO_DEEP, f"nested deeper than {MAX_NESTING} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            for text in (key, item):
                if isinstance(text, str) and not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise MalformedRecord(BAD_UNICODE, f"a string holds an unpaired surrogate: {exc}") from None
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))


def long_line_message(line: LongLine) -> str:
    return (
        f"the line at byte {line.offset} is {line.length} bytes, more than --max_line_bytes; "
        f"only its first {len(line.head)} bytes are kept here"
    )


class MalformedRecord(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ParseJsonLines(beam.PTransform):
    """`(source, line bytes)` pairs → dict records (main output) and dead-letter entries (`dead_letter`).

    A line over the length limit comes as a `lines.LongLine`: it is dead-lettered as `line_too_long`,
    with its first bytes.
    """

    def expand(self, lines: beam.PCollection):
        return lines | "ParseJson" >> beam.ParDo(_ParseDoFn()).with_outputs(DEAD_LETTER, main="records")


class _ParseDoFn(beam.DoFn):
    def __init__(self):
        self._read = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, element: tuple[str, Union[bytes, LongLine]]) -> Iterator:
        source, raw = element
        self._read.inc()
        try:
            if isinstance(raw, LongLine):
                raw = raw.head
                raise MalformedRecord(LINE_TOO_LONG, long_line_message(element[1]))
            yield parse_record(raw)
        except MalformedRecord as bad:
            Metrics.counter(METRICS_NAMESPACE, "dead_lettered").inc()
            Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{bad.reason}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_entry(source, raw, bad.reason, bad.message))


class ParsePubSubMessages(beam.PTransform):
    """`PubsubMessage`s → dict records (main output) and dead-letter entries (`dead_letter`).

    Args:
      source: the subscription or topic read, named in dead-letter entries.
      attributes_key: when set, each record gets its message's attributes as an object under this field.
      timestamp_attribute: when set, each record's event time comes from this attribute (milliseconds
        since the epoch, or RFC 3339). Read here rather than by Beam's source, which stops the job
        (local runner) or cannot process the message (Dataflow) when the value is bad: here a bad or
        missing value sends the message to the dead letter.
    """

    def __init__(self, source: str, attributes_key: Optional[str] = None, timestamp_attribute: Optional[str] = None):
        super().__init__()
        self._source = source
        self._attributes_key = attributes_key
        self._timestamp_attribute = timestamp_attribute

    def expand(self, messages: beam.PCollection):
        parse = _ParseMessageDoFn(self._source, self._attributes_key, self._timestamp_attribute)
        return messages | "ParseJson" >> beam.ParDo(parse).with_outputs(DEAD_LETTER, main="records")


def event_time(attributes: Mapping[str, str], name: str) -> Timestamp:
    """The time in attribute `name`: milliseconds since the epoch, or RFC 3339 (as Pub/Sub I/O takes it)."""
    value = attributes.get(name)
    if value is None:
        raise MalformedRecord(BAD_TIMESTAMP, f"the message has no attribute {name!r} (--timestamp_attribute)")
    try:
        timestamp = (
            Timestamp(micros=int(value) * 1000) if value.lstrip("-").isdigit() else Timestamp.from_rfc3339(value)
        )
    except (ValueError, OverflowError) as exc:
        raise MalformedRecord(
            BAD_TIMESTAMP, f"attribute {name}={value!r} is neither milliseconds since the epoch nor RFC 3339: {exc}"
        ) from None
    if not MIN_TIMESTAMP < timestamp < MAX_TIMESTAMP:
        raise MalformedRecord(BAD_TIMESTAMP, f"attribute {name}={value!r} is outside the times Beam can carry")
    return timestamp


class _ParseMessageDoFn(beam.DoFn):
    def __init__(self, source: str, attributes_key: Optional[str], timestamp_attribute: Optional[str]):
        self._source = source
        self._attributes_key = attributes_key
        self._timestamp_attribute = timestamp_attribute
        self._read = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, message) -> Iterator:
        self._read.inc()
        attributes = dict(message.attributes or {})
        try:
            record = parse_record(message.data)
            if self._attributes_key:
                if self._attributes_key in record:
                    raise MalformedRecord(
                        ATTRIBUTES_KEY_TAKEN,
                        f"the record already has a field {self._attributes_key!r}; choose another --attributes_key",
                    )
                record[self._attributes_key] = attributes
            if self._timestamp_attribute:
                yield beam.window.TimestampedValue(record, event_time(attributes, self._timestamp_attribute))
            else:
                yield record
        except MalformedRecord as bad:
            Metrics.counter(METRICS_NAMESPACE, "dead_lettered").inc()
            Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{bad.reason}").inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                dead_letter_entry(
                    self._source,
                    message.data,
                    bad.reason,
                    bad.message,
                    message_id=message.message_id,
                    attributes=attributes,
                ),
            )
