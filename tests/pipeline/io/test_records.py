"""Parsing JSONL lines and Pub/Sub messages: records, or a dead-letter reason, never an exception."""

import datetime
import decimal
import json
import pickle

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io import records
from pipeline.io.records import (
    MalformedRecord,
    ParsePubSubMessages,
    _ParseMessageDoFn,
    dead_letter_entry,
    parse_record,
    to_json,
)
from tests.support.fuzz import json_lines

DEAD_LETTER_REASONS = {
    records.NOT_UTF8, records.NOT_JSON, records.NOT_OBJECT, records.EMPTY_LINE, records.TOO_DEEP,
    records.BAD_UNICODE, records.ATTRIBUTES_KEY_TAKEN, records.BAD_TIMESTAMP,
}  # fmt: skip


@pytest.mark.parametrize(
    "raw, record",
    [
        (b'{"a": 1}', {"a": 1}),
        (b'\xef\xbb\xbf{"a": "caf\xc3\xa9"}', {"a": "café"}),  # UTF-8 byte-order mark on the first line
        (b'  {"a": [1, {"b": null}]}  ', {"a": [1, {"b": None}]}),
        (b'{"a": ' + b"[" * 60 + b"]" * 60 + b"}", {"a": json.loads("[" * 60 + "]" * 60)}),
        (b'{"emoji": "\\ud83d\\ude00"}', {"emoji": "\U0001f600"}),  # a proper surrogate pair is fine
    ],
)
def test_objects_parse(raw, record):
    assert parse_record(raw) == record


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\xff\xfe{}", "not_utf8"),
        (b"{'single': 'quotes'}", "not_json"),
        (b'{"a": 1} trailing', "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (b"null", "not_object"),
        (b"   ", "empty_line"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),  # RecursionError in the parser
        (b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}", "too_deep"),  # parses, but Beam cannot pickle it
        (b'{"text": "\\ud800 cat"}', "bad_unicode"),
        (b'{"\\udfff": 1}', "bad_unicode"),
    ],
)
def test_malformed_lines_have_a_reason(raw, reason):
    with pytest.raises(MalformedRecord) as caught:
        parse_record(raw)
    assert caught.value.reason == reason


def test_dead_letter_keeps_the_raw_payload():
    assert dead_letter_entry("f.jsonl", b"oops", "not_json", "e")["raw"] == "oops"
    binary = dead_letter_entry("f.jsonl", b"\xff\x00", "not_utf8", "e")
    assert binary["raw"] is None and binary["raw_base64"] == "/wA="


def test_output_json_is_strict():
    """Python's parser takes NaN and Infinity; what we write must be JSON every reader takes."""
    text = to_json({"a": float("nan"), "b": [float("inf"), -float("inf")], "c": "café", "d": 1.5})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name}")) == {
        "a": "NaN",
        "b": ["Infinity", "-Infinity"],
        "c": "café",
        "d": 1.5,
    }


def test_output_json_is_one_line_for_every_reader():
    """Found by fuzzing: U+2028, U+2029 and U+0085 are legal in JSON strings, but `str.splitlines()` (and
    JavaScript before ES2019) break lines there, so a JSONL file written raw read back as broken lines."""
    text = to_json({"text": "a\u2028b\u2029c\x85d\x1ce", "é": "ü"})
    assert len(text.splitlines()) == 1 and "é" in text
    assert json.loads(text) == {"text": "a\u2028b\u2029c\x85d\x1ce", "é": "ü"}


def test_values_of_parquet_columns_are_written_as_json_text():
    """Parquet rows hold times, decimals, bytes and map entries (tuples), which JSON has no words for."""
    record = {
        "at": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 5, 1),
        "price": decimal.Decimal("1.50"),
        "blob": b"\x00\x01",
        "wait": datetime.timedelta(seconds=1.5),
        "map": [("a", float("nan"))],
    }
    assert json.loads(to_json(record)) == {
        "at": "2024-05-01T12:30:00+00:00",
        "day": "2024-05-01",
        "price": "1.50",
        "blob": "AAE=",
        "wait": 1.5,
        "map": [["a", "NaN"]],
    }
    with pytest.raises(TypeError, match="set values cannot be written as JSON"):
        to_json({"a": {1, 2}})


def test_pubsub_messages_take_their_event_time_from_the_attribute_or_go_to_the_dead_letter(tmp_path):
    """Beam's own source stops the job on a bad timestamp attribute; ours dead-letters the message."""
    messages = [
        PubsubMessage(b'{"n": 1}', {"ts": "1700000000123"}, message_id="m1"),
        PubsubMessage(b'{"n": 2}', {"ts": "2026-11-29T03:00:00.5Z"}, message_id="m2"),
        PubsubMessage(b'{"n": 3}', {"ts": "yesterday"}, message_id="m3"),
        PubsubMessage(b'{"n": 4}', {}, message_id="m4"),
        PubsubMessage(b'{"n": 5}', {"ts": "9" * 30}, message_id="m5"),
    ]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    parsed = pipeline | beam.Create(messages) | ParsePubSubMessages("projects/p/subscriptions/s", None, "ts")
    (
        parsed.records
        | beam.Map(lambda record, t=beam.DoFn.TimestampParam: json.dumps([record["n"], float(t)]))
        | "WriteRecords" >> beam.io.WriteToText(str(tmp_path / "records"), shard_name_template="")
    )
    (
        parsed.dead_letter
        | beam.Map(json.dumps)
        | "WriteDead" >> beam.io.WriteToText(str(tmp_path / "dead"), shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    times = sorted(json.loads(line) for line in (tmp_path / "records").read_text().splitlines())
    assert times == [[1, 1700000000.123], [2, 1795921200.5]]
    dead = sorted((json.loads(line) for line in (tmp_path / "dead").read_text().splitlines()), key=lambda d: d["raw"])
    assert [(d["raw"], d["reason"], d["message_id"]) for d in dead] == [
        ('{"n": 3}', "bad_timestamp", "m3"),
        ('{"n": 4}', "bad_timestamp", "m4"),
        ('{"n": 5}', "bad_timestamp", "m5"),
    ]
    assert "'yesterday' is neither milliseconds" in dead[0]["error"] and "no attribute 'ts'" in dead[1]["error"]


# Fuzzing: whatever a file or a publisher sends becomes a record or a dead-letter entry, never an exception.


@settings(max_examples=400)
@given(line=json_lines(["rgb.png", "http://127.0.0.1:9/x.png"]))
def test_any_line_is_a_record_or_has_a_reason(line):
    try:
        record = parse_record(line)
    except MalformedRecord as bad:
        assert bad.reason in DEAD_LETTER_REASONS
        json.loads(to_json(dead_letter_entry("f", line, bad.reason, bad.message)))
        return
    assert isinstance(record, dict)
    pickle.loads(pickle.dumps(record))  # what Beam does to it between steps
    json.loads(to_json(record))  # what the sinks do


@settings(max_examples=300)
@given(
    data=json_lines(["rgb.png"]),
    attributes=st.dictionaries(st.sampled_from(["ts", "n", "x"]), st.text(max_size=30) | st.integers().map(str)),
    attributes_key=st.sampled_from([None, "attrs", "text"]),
)
def test_any_pubsub_message_gives_exactly_one_record_or_dead_letter(data, attributes, attributes_key):
    parse = _ParseMessageDoFn("projects/p/subscriptions/s", attributes_key, "ts")
    (out,) = list(parse.process(PubsubMessage(data, attributes, message_id="m1")))
    if isinstance(out, beam.pvalue.TaggedOutput):
        assert out.tag == "dead_letter" and out.value["reason"] in DEAD_LETTER_REASONS
        assert out.value["message_id"] == "m1" and out.value["attributes"] == attributes
        json.loads(to_json(out.value))
    else:
        assert isinstance(out.value, dict) and MIN_TIMESTAMP < out.timestamp < MAX_TIMESTAMP
        pickle.loads(pickle.dumps(out.value))
