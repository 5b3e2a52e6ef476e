"""When nothing worked: exit code 3 with hints that name the flag to fix (the job run as a user runs it), the
threshold, and a streaming job's warning for a minute in which every record failed."""

import json
import logging

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.failure_rate import WarnWhenAllFail, hints, verdict
from tests.support.cli import run_job
from transforms.settings import ImageSettings, RecordFields


def _write(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.mark.slow
def test_a_wrong_image_root_exits_3_with_a_hint_naming_it(tmp_path, longclip_checkpoint, good_images):
    records = [{"id": i, "image_path": name, "text": "a cat"} for i, name in enumerate(good_images)]
    _write(tmp_path / "in.jsonl", records)
    wrong_root = tmp_path / "not-the-images"
    done = run_job(
        *["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored")],
        *["--model", str(longclip_checkpoint), "--image_root", str(wrong_root)],
    )
    assert done.returncode == 3, done.stderr[-3000:]
    assert f"failed_image_not_found: {len(good_images)}" in done.stderr  # the counts by reason
    assert f"Nothing worked: {len(good_images)} of {len(good_images)} records failed" in done.stderr
    (hint,) = [line for line in done.stderr.splitlines() if "Hint:" in line]
    assert f"--image_root: {len(good_images)} images were not found, under --image_root '{wrong_root}'" in hint
    record = json.loads((tmp_path / "out" / "scored.run.json").read_text())
    assert (record["status"], record["exit_code"]) == ("nothing_worked", 3)


@pytest.mark.slow
def test_shards_that_are_compressed_or_damaged_get_hints_of_their_own(tmp_path, longclip_checkpoint, good_images):
    """A gzip'd shard named .tar was hinted at as "lines that were not JSON objects" (wrong --input_format)."""
    import gzip

    from transforms.testing.datasets import img2dataset_sample, jpeg, shard_bytes

    members = img2dataset_sample("000000", jpeg(good_images["rgb.png"]), "a red square")
    data, spans = shard_bytes(members + img2dataset_sample("000001", jpeg(good_images["grey.png"]), "grey"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "compressed.tar").write_bytes(gzip.compress(data))
    (tmp_path / "in" / "cut.tar").write_bytes(data[: spans[3].data + 10])  # inside 000001's image: it is lost
    done = run_job(
        *[
            "--input_format",
            "webdataset",
            "--input",
            str(tmp_path / "in" / "*.tar"),
            "--output",
            str(tmp_path / "scored"),
        ],
        *["--model", str(longclip_checkpoint), "--max_failed_fraction", "0.5"],
    )
    assert done.returncode == 3, done.stderr[-3000:]
    found = [line.split("Hint: ", 1)[1] for line in done.stderr.splitlines() if "Hint:" in line]
    assert found == [
        "1 shards named .tar are compressed (the dead letter says how): decompress them (gunzip, zstd -d, ...) into "
        ".tar files and score those",
        "1 parts or members of WebDataset shards could not be read (damaged, cut short, sparse or without a key): "
        "the dead letter names each shard, its byte range and the samples lost",
    ], done.stderr[-3000:]


@pytest.mark.slow
def test_keys_the_records_do_not_have_exit_3_naming_the_fields_seen(tmp_path, longclip_checkpoint, good_images):
    records = [{"id": i, "image_path": str(path), "text": "a cat"} for i, path in enumerate(good_images.values())]
    _write(tmp_path / "in.jsonl", records)
    done = run_job(
        *["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored")],
        *["--model", str(longclip_checkpoint), "--image_key", "url", "--text_key", "caption"],
    )
    assert done.returncode == 3, done.stderr[-3000:]
    hinted = [line.split("Hint: ", 1)[1] for line in done.stderr.splitlines() if "Hint:" in line]
    assert hinted == [
        "--image_key 'url': the first records have no such field, only id, image_path, text: pass the one with the "
        "image's path or URL, e.g. --image_key image_path",
        "--text_key 'caption': the first records have no such field, only id, image_path, text: pass the one with the "
        "caption, e.g. --text_key text",
    ]


COUNTS = {"read": 10, "scored": 7, "failed": 2, "failed_image_timeout": 2, "dead_lettered": 1}


@pytest.mark.parametrize(
    ("counts", "fraction", "code"),
    [
        (COUNTS, 1.0, 0),  # 30% failed: the default asks for all
        (COUNTS, 0.3, 0),  # not more than 30%
        (COUNTS, 0.29, 3),
        ({"read": 4, "failed": 3, "dead_lettered": 1, "failed_text_empty": 3}, 1.0, 3),  # all, dead letters too
        ({"read": 0}, 0.0, 0),  # nothing read: nothing failed
    ],
)
def test_the_threshold(counts, fraction, code):
    assert verdict(counts, fraction, RecordFields(), ImageSettings(), {})[0] == code


def test_the_hints_come_most_common_first():
    counts = {"failed_image_timeout": 2, "failed_image_not_found": 5, "failed_inference_failed": 1}
    found = hints(counts, RecordFields(), ImageSettings(image_root="gs://bucket/images"), {"image_path": 5})
    assert [hint.split(" ", 1)[0] for hint in found] == ["--image_root:", "2", "the"]
    assert "under --image_root 'gs://bucket/images'" in found[0] and "--retry_failed" in found[1]


def _stream(tmp_path, reasons: list) -> list:
    from apache_beam.testing.test_stream import TestStream  # imported here: pytest would take it for a test class

    stream = TestStream().add_elements([{"id": i, "longclip_score_reason": r} for i, r in enumerate(reasons)])
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    out = tmp_path / f"tallies-{len(reasons)}"
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | stream.advance_watermark_to_infinity()
            | WarnWhenAllFail(RecordFields(), window_seconds=60)
            | beam.Map(lambda tally, path=str(out): open(path, "a").write(json.dumps(tally) + "\n"))
        )
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_streaming_warns_for_a_minute_in_which_every_record_failed(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="pipeline.failure_rate")
    assert _stream(tmp_path, ["image_timeout", "image_timeout", "text_empty"]) == [
        {"failed": {"image_timeout": 2, "text_empty": 1}}
    ]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.failure_rate"]
    assert "Nothing worked in the last 60s: all 3 records failed (image_timeout: 2, text_empty: 1)" in warning
    caplog.clear()
    assert _stream(tmp_path, ["image_timeout", None, "text_empty", None]) == []  # some were scored
    assert not [r for r in caplog.records if r.name == "pipeline.failure_rate"]
