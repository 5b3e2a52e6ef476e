"""Reading JSONL parts in a real Beam pipeline: every line once, long lines dead-lettered, each line read by the
part that holds its first byte; which reader a file pattern needs: by its extension, unless --input_format says."""

import gzip
import json
import re
import time
from datetime import datetime, timezone

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from pipeline.io import jsonl
from pipeline.io.formats import input_format
from pipeline.io.jsonl import ReadJsonLines
from pipeline.io.parts import plan_parts


def test_every_line_once_read_by_its_part(tmp_path):
    lines = [json.dumps({"n": n, "pad": "x" * (n % 7) * 9}) for n in range(60)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:30]) + "\n")
    (tmp_path / "b.jsonl").write_text("\r\n".join(lines[30:50]))  # Windows line ends, no final one
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines[50:]) + "\n").encode()))
    long = json.dumps({"n": "long", "text": "word " * 400})
    (tmp_path / "d.jsonl").write_text(long + "\nnot json\n")
    parts = plan_parts(str(tmp_path / "*.jsonl*"), part_bytes=200)
    assert len(parts) > 10

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    read = pipeline | ReadJsonLines(parts, max_line_bytes=1000)
    (
        read.records
        | "Records" >> beam.Map(lambda r, path=str(tmp_path / "records"): open(path, "a").write(json.dumps(r) + "\n"))
    )
    read.dead_letter | "Dead" >> beam.Map(
        lambda d, path=str(tmp_path / "dead"): open(path, "a").write(json.dumps(d) + "\n")
    )
    pipeline.run().wait_until_finish()

    records = [json.loads(line) for line in (tmp_path / "records").read_text().splitlines()]
    assert sorted(r["n"] for r in records) == list(range(60))
    dead = {d["reason"]: d for d in map(json.loads, (tmp_path / "dead").read_text().splitlines())}
    assert set(dead) == {"line_too_long", "not_json"}
    assert dead["line_too_long"]["raw"] == long[:1024] and dead["line_too_long"]["source"].endswith("d.jsonl")
    assert f"at byte 0 is {len(long)} bytes, more than --max_line_bytes" in dead["line_too_long"]["error"]
    by_n = {  # the JSON object lines each part reads on its own
        json.loads(line)["n"]: part
        for part in parts
        for _, line in jsonl.read_part(part, 1000)
        if isinstance(line, bytes) and line.startswith(b"{")
    }
    assert sorted(by_n) == list(range(60))
    text = {path: open(path, "rb").read() for path in {part.path for part in parts} if not path.endswith(".gz")}
    for n, part in by_n.items():  # each line's part holds the line's first byte
        if not part.compressed:
            assert part.start <= text[part.path].index(lines[n].encode()) < part.end, n


@pytest.mark.parametrize(
    "pattern, chosen, expected",
    [
        ("data/captions-*.jsonl", "auto", "jsonl"),
        ("gs://bucket/laion/part-*.parquet", "auto", "parquet"),
        ("img2dataset/out/*.tar", "auto", "webdataset"),
        ("shards/00000.TAR", "auto", "webdataset"),
        ("data/captions.json", "auto", "jsonl"),
        ("shards/*", "webdataset", "webdataset"),
        ("export/*.tar", "jsonl", "jsonl"),
    ],
)
def test_input_format_follows_the_extension_unless_chosen(pattern, chosen, expected):
    assert input_format(pattern, chosen) == expected


@pytest.mark.parametrize("window_seconds", [2, 0.25])
def test_streaming_files_are_named_after_their_window_in_words_a_shell_takes(tmp_path, window_seconds):
    """`<prefix>-<start>-<end>-SSSSS-of-NNNNN.jsonl`, the window's bounds in UTC: no brackets, commas or spaces
    (Beam names them `<prefix>-[1796569500.0, 1796569510.0)-…`); windows shorter than a second keep their fraction."""
    stream = test_stream.TestStream()
    for n in range(6):
        stream = stream.add_elements([{"n": n}])
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | stream.advance_watermark_to_infinity()
            | "Slowly" >> beam.Map(lambda record: (time.sleep(0.1), record)[1])  # the writer stamps arrival times
            | jsonl.WriteJsonLines(str(tmp_path / "scored"), window_seconds)
        )

    names = sorted(path.name for path in tmp_path.glob("scored-*"))
    assert names, list(tmp_path.iterdir())
    written = []
    for name in names:
        match = re.fullmatch(r"scored-(\d{8}T\d{6}(?:\.\d+)?Z)-(\d{8}T\d{6}(?:\.\d+)?Z)-00000-of-00001\.jsonl", name)
        assert match, name
        start, end = (_utc_seconds(bound) for bound in match.groups())
        assert end - start == pytest.approx(window_seconds)
        assert start / window_seconds == pytest.approx(round(start / window_seconds), abs=1e-6)
        written += [json.loads(line)["n"] for line in (tmp_path / name).read_text().splitlines()]
    assert sorted(written) == list(range(6))


def _utc_seconds(bound: str) -> float:
    """`20261206T101500Z` or `20261206T101500.25Z` as seconds since the epoch."""
    whole, _, fraction = bound.rstrip("Z").partition(".")
    moment = datetime.strptime(whole, "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return moment.timestamp() + float(f"0.{fraction or 0}")
