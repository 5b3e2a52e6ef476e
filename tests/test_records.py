"""Parsing JSONL lines: records, or a dead-letter reason, never an exception."""

import json

import pytest

from pipeline.records import MalformedRecord, dead_letter_entry, parse_record, to_json


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
