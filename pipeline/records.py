"""Parsing JSONL lines into records; anything that is not a JSON object goes to the dead letter."""

from __future__ import annotations

import base64
import json
from typing import Iterator, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

METRICS_NAMESPACE = "pipeline"
DEAD_LETTER = "dead_letter"

NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
EMPTY_LINE = "empty_line"
TOO_DEEP = "too_deep"
BAD_UNICODE = "bad_unicode"

# Deeper records break Python's JSON parser and Beam's pickling (both recurse), stopping the job.
MAX_NESTING = 64


def dead_letter_entry(source: str, raw: bytes, reason: str, error: str) -> dict:
    """The dead-letter record: where it came from, why, and the raw payload (base64 when not UTF-8 text)."""
    entry = {"source": source, "reason": reason, "error": error, "raw": None, "raw_base64": None}
    try:
        entry["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(raw).decode("ascii")
    return entry


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


class MalformedRecord(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ParseJsonLines(beam.PTransform):
    """`(source, line bytes)` pairs → dict records (main output) and dead-letter entries (`dead_letter`)."""

    def expand(self, lines: beam.PCollection):
        return lines | "ParseJson" >> beam.ParDo(_ParseDoFn()).with_outputs(DEAD_LETTER, main="records")


class _ParseDoFn(beam.DoFn):
    def __init__(self):
        self._read = Metrics.counter(METRICS_NAMESPACE, "read")

    def process(self, element: tuple[str, bytes]) -> Iterator:
        source, raw = element
        self._read.inc()
        try:
            yield parse_record(raw)
        except MalformedRecord as bad:
            Metrics.counter(METRICS_NAMESPACE, "dead_lettered").inc()
            Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{bad.reason}").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_entry(source, raw, bad.reason, bad.message))
