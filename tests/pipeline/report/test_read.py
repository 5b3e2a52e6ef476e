"""The report reads scored files as the job reads its input: lines in linear time, each within a limit; Parquet
a few rows at a time, without the image bytes."""

import json
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.parts import plan_parts
from pipeline.report.job import run
from pipeline.report.read import ImageCell, ReadScoredRows
from tests.support.scored import make_scored_rows, write_jsonl
from transforms import RecordFields


@pytest.mark.slow
def test_a_long_line_is_read_in_linear_time(tmp_path):
    """One 40 MB line costs a second more than none (Beam's text reader: about a minute; 85 s for 48 MB)."""
    rows = make_scored_rows(20, seed=2)
    elapsed = {}
    for name, text in (("plain", rows[3]["text"]), ("long", "word " * 8_000_000)):
        rows[3]["text"] = text
        write_jsonl(tmp_path / name / "scored.jsonl", rows)
        started = time.monotonic()
        argv = ["--input", str(tmp_path / name / "*.jsonl"), "--output", str(tmp_path / name / "report")]
        summary = run([*argv, "--max_line_bytes", str(64 << 20)])
        elapsed[name] = time.monotonic() - started
        assert summary["rows"] == 20 and summary["unreadable_lines"] == 0
    assert elapsed["long"] - elapsed["plain"] < 15, elapsed


@pytest.mark.slow
def test_a_line_over_max_line_bytes_is_counted_unreadable_not_loaded(tmp_path):
    rows = make_scored_rows(30, seed=4)
    rows[7]["text"] = "x" * 50_000
    write_jsonl(tmp_path / "in" / "scored.jsonl", rows)
    argv = ["--input", str(tmp_path / "in" / "*.jsonl"), "--output", str(tmp_path / "report")]
    summary = run([*argv, "--max_line_bytes", "10000"])
    assert summary["rows"] == 30 and summary["unreadable_lines"] == 1
    assert summary["scored"] + sum(summary["failed"].values()) == 29


def test_parquet_rows_come_without_their_image_bytes_but_say_where_they_are(tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": b"\xff" * 1000, "path": f"{i}.jpg"} for i in range(5)], image),
            "text": [f"caption {i}" for i in range(5)],
            "longclip_score": [0.1 * i for i in range(5)],
            "longclip_score_reason": [None] * 5,
            "longclip_score_image_embedding": [[0.5] * 8] * 5,  # not read either
        }
    )
    path = tmp_path / "scored.parquet"
    pq.write_table(table, path, row_group_size=2)
    expected = [
        {
            "image": ImageCell(str(path), i, "image"),
            "text": f"caption {i}",
            "longclip_score": 0.1 * i,
            "longclip_score_reason": None,
        }
        for i in range(5)
    ]
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        rows = pipeline | ReadScoredRows(plan_parts(str(path)), RecordFields(image_key="image"), 1 << 20)
        assert_that(rows, equal_to(expected))


def test_lines_that_are_not_json_objects_are_none(tmp_path):
    path = tmp_path / "scored.jsonl"
    deep = "[" * 100_000 + "]" * 100_000  # deeper than JSON parsers recurse
    path.write_text("\n".join([json.dumps({"a": 1}), "not json", "[1]", deep, "", '{"b": 2}']) + "\n")
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        rows = pipeline | ReadScoredRows(plan_parts(str(path)), RecordFields(), 1 << 20)
        assert_that(rows, equal_to([{"a": 1}, None, None, None, {"b": 2}]))
