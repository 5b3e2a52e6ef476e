"""`--retry_failed`: 200 records, 30 of them on an HTTP server that is down (503) for the first run and back for
the retry; the retried output has every id once and equals a clean run; other scoring settings are refused."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli.command import parse
from pipeline.cli.kit import UsageError
from pipeline.preflight import preflight
from pipeline.retry import SplitForRetry
from tests.support.cli import run_job
from tests.support.http_servers import ImageServer
from transforms.settings import RecordFields
from transforms.testing.captions import CAPTIONS

RECORDS = 200


def _read(prefix) -> dict:
    rows = [json.loads(line) for path in sorted(prefix.parent.glob(prefix.name + "-*.jsonl")) for line in path.open()]
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "an id came out twice"
    return by_id


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, longclip_checkpoint, good_images):
    """The first run, while the server is down: 30 records `image_unavailable`. Yields (folder, flags, server)."""
    folder = tmp_path_factory.mktemp("retry")
    server = ImageServer({name: path.read_bytes() for name, path in good_images.items()})
    names, captions = sorted(good_images), sorted(CAPTIONS.values())
    records = []
    for i in range(RECORDS):
        name = names[i % len(names)]
        remote = i % 20 < 3  # 30 of 200
        image = f"{server.url}/outage/503/{name}" if remote else name
        records.append({"id": i, "image_path": image, "text": captions[i % len(captions)], "remote": remote})
    (folder / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    image_root = str(good_images[names[0]].parent)
    # 5 s: the retries of a 503 (5 attempts, at most 3 s of backoff) run out before the deadline, so the records
    # are image_unavailable, not cut short by the deadline (image_timeout).
    flags = ["--model", str(longclip_checkpoint), "--image_root", image_root, "--http_timeout_secs", "5"]
    server.outage.set()
    try:
        done = run_job("--input", str(folder / "in.jsonl"), "--output", str(folder / "first" / "scored"), *flags)
    finally:
        server.outage.clear()
    assert done.returncode == 0, done.stderr[-3000:]
    yield folder, flags, server
    server.close()


@pytest.mark.slow
def test_retry_failed_scores_the_unavailable_rows_again_and_equals_a_clean_run(first_run):
    folder, flags, server = first_run
    first = _read(folder / "first" / "scored")
    assert len(first) == RECORDS
    failed = {i for i, row in first.items() if row["longclip_score_reason"] is not None}
    assert failed == {i for i, row in first.items() if row["remote"]} and len(failed) == 30
    assert {first[i]["longclip_score_reason"] for i in failed} == {"image_unavailable"}

    asked_before = len(server.requests)
    retried = run_job(
        *["--input", str(folder / "first" / "scored-*.jsonl"), "--output", str(folder / "retried" / "scored")],
        *["--retry_failed", *flags],
    )
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "Retry: 30 rows scored again, 30 of them now pass; 170 rows kept as they were" in retried.stderr
    asked = {request.path for request in server.requests[asked_before:]}
    assert asked == {first[i]["image_path"].removeprefix(server.url) for i in failed}  # fetched again (once each)
    clean = run_job("--input", str(folder / "in.jsonl"), "--output", str(folder / "clean" / "scored"), *flags)
    assert clean.returncode == 0, clean.stderr[-3000:]

    out, expected = _read(folder / "retried" / "scored"), _read(folder / "clean" / "scored")
    assert sorted(out) == list(range(RECORDS))  # every id once
    assert all(row["longclip_score_reason"] is None for row in out.values())
    worst = max(abs(out[i]["longclip_score"] - expected[i]["longclip_score"]) for i in out)
    assert worst < 1e-6, worst
    for i in set(out) - failed:  # kept as they were, field for field
        assert out[i] == first[i]
    for i in failed:  # the earlier fields were stripped, then added again by this run
        assert set(out[i]) == set(first[i]) and out[i]["longclip_score_error"] is None
    record = json.loads((folder / "retried" / "scored.run.json").read_text())
    assert record["retry"] == {"retried": 30, "now_pass": 30, "kept": 170} and record["status"] == "done"


@pytest.mark.slow
def test_retry_failed_refuses_an_output_scored_with_other_settings(first_run):
    folder, flags, _ = first_run
    done = run_job(
        *["--input", str(folder / "first" / "scored-*.jsonl"), "--output", str(folder / "bf16" / "scored")],
        *["--retry_failed", *flags, "--precision", "bf16"],
    )
    assert done.returncode == 2, done.stderr[-3000:]
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("python -m pipeline: error:")]
    assert "--retry_failed:" in error and "precision: fp32 (that run), bf16 (this run)" in error
    assert "scored.run.json" in error and not (folder / "bf16").exists()


@pytest.mark.slow
def test_retry_failed_needs_a_run_record_and_a_new_output(first_run):
    folder, flags, _ = first_run
    with pytest.raises(UsageError, match=r"in\.jsonl has no run record beside it"):
        preflight(parse(["--input", str(folder / "in.jsonl"), "--output", str(folder / "x"), "--retry_failed", *flags]))
    prefix = folder / "first" / "scored"
    with pytest.raises(UsageError, match=r"--input .* also matches the files --output writes"):
        preflight(parse(["--input", f"{prefix}-*.jsonl", "--output", str(prefix), "--retry_failed", *flags]))
    with pytest.raises(UsageError, match="without --resume"):
        parse(["--input", f"{prefix}-*.jsonl", "--output", str(folder / "y"), "--retry_failed", "--resume"])


def test_the_rows_scored_again_lose_the_fields_the_scoring_added():
    fields = RecordFields(output_key="s")
    added = {"s": 0.0, "s_error": "x", "s_truncated": False, "s_image_embedding": None, "s_text_embedding": None}
    rows = [
        {"id": 1, "image_path": "https://h/a.png", "s_reason": "image_timeout", **added, "s_cutoff": 0.5},
        {"id": 2, "image_path": "b.png", "s_reason": "inference_failed", **added},
        {"id": 3, "image_path": None, "s_reason": "inference_failed", **added},  # inline bytes, not kept
        {"id": 4, "image_path": "c.png", "s_reason": "image_not_found", **added},
        {"id": 5, "image_path": "d.png", "s_reason": None, **added, "s": 0.7},
    ]
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        again, kept = pipeline | beam.Create(rows) | SplitForRetry(fields)
        assert_that(again, equal_to([{"id": 1, "image_path": "https://h/a.png"}, {"id": 2, "image_path": "b.png"}]))
        assert_that(kept | beam.Map(lambda row: row["id"]), equal_to([3, 4, 5]), label="Kept")


@pytest.mark.slow
def test_retry_failed_over_parquet_files_keeps_their_columns(tmp_path, longclip_checkpoint, good_images):
    import pyarrow.parquet as pq

    from pipeline import run

    server = ImageServer({name: path.read_bytes() for name, path in good_images.items()})
    records = [
        {"id": i, "image_path": f"{server.url}/outage/503/rgb.png" if i < 2 else str(good_images["la.png"]), "text": t}
        for i, t in enumerate(["a red square", "a cat", "a bird", "a grey field"])
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    flags = ["--model", str(longclip_checkpoint), "--http_timeout_secs", "5", "--output_format", "parquet"]
    server.outage.set()
    try:
        run(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "first" / "scored"), *flags])
    finally:
        server.outage.clear()
    run(["--input", str(tmp_path / "first" / "scored-*.parquet"), "--output", str(tmp_path / "again" / "scored")]
        + ["--retry_failed", *flags])  # fmt: skip
    server.close()
    (first,), (again,) = (list((tmp_path / name).glob("scored-*.parquet")) for name in ("first", "again"))
    before, after = pq.read_table(first), pq.read_table(again)
    assert after.schema.remove_metadata() == before.schema.remove_metadata()  # the same columns, the record's too
    # From JSONL input, the records' fields are typed columns of the Parquet rows.
    rows = {row["id"]: row for row in after.to_pylist()}
    first_rows = {row["id"]: row for row in before.to_pylist()}
    assert sorted(rows) == [0, 1, 2, 3] and all(row["longclip_score_reason"] is None for row in rows.values())
    assert [first_rows[i]["longclip_score_reason"] for i in (0, 1)] == ["image_unavailable"] * 2
    assert rows[2] == first_rows[2] and rows[3] == first_rows[3]  # kept as they were
