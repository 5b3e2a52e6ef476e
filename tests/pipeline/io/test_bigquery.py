"""The BigQuery sink in batch jobs, against the real BigQuery API emulator: rows read back through the API."""

import json
import math
import time

import apache_beam as beam
import pytest
import torch
from google.cloud import bigquery

from pipeline import UsageError, parse, run, summarize
from pipeline.build import build
from pipeline.io import bigquery as bq_sink
from pipeline.preflight import plan_destinations, preflight
from transforms.testing.emulators import GCP_PROJECT


@pytest.fixture
def dataset(bigquery_emulator, restore_environ):
    restore_environ[bq_sink.EMULATOR_HOST_VARIABLE] = bigquery_emulator
    client = bq_sink.client(GCP_PROJECT)
    return client, client.create_dataset(f"batch_{time.monotonic_ns()}").dataset_id


def _write_input(path, good_images):
    records = [
        {"id": 1, "image_path": str(good_images["rgb.png"]), "text": "a red square", "nested": {"a": [1, 2]}},
        {"id": 2, "image_path": str(good_images["grey.png"]), "text": "x", "weird": math.nan, "big": math.inf},
        {"id": 3, "image_path": 42, "text": "an image field that is a number"},
        {"id": 4, "image_path": str(good_images["rgb.png"]), "text": ""},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    return records


def test_batch_job_writes_every_record_to_bigquery(tmp_path, dataset, longclip_checkpoint, good_images):
    client, name = dataset
    records = _write_input(tmp_path / "in.jsonl", good_images)
    args = ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{name}.scores", "--project", GCP_PROJECT]
    counts = summarize(run(args + ["--model", str(longclip_checkpoint)]))
    assert (counts["read"], counts["scored"], counts["failed"], counts["dead_lettered"]) == (5, 2, 2, 1)

    rows = sorted((dict(r) for r in client.list_rows(f"{GCP_PROJECT}.{name}.scores")), key=lambda r: r["record"]["id"])
    assert [r["record"]["id"] for r in rows] == [1, 2, 3, 4]
    for row, record in zip(rows, records, strict=True):
        kept = {key: row["record"][key] for key in record}
        if record["id"] == 2:  # JSON has no NaN or Infinity: kept as the strings Python's json writes
            assert (kept.pop("weird"), kept.pop("big")) == ("NaN", "Infinity")
            record = {k: v for k, v in record.items() if k not in ("weird", "big")}
        assert kept == record
        assert row["score"] == row["record"]["longclip_score"] and row["model"] == str(longclip_checkpoint)
        assert row["text"] == record["text"] and row["truncated"] is False
    assert rows[2]["image"] == "42" and rows[2]["error"].startswith("image_wrong_type: ")
    assert rows[2]["reason"] == "image_wrong_type" == rows[2]["record"]["longclip_score_reason"]
    assert rows[3]["reason"] == "text_empty" and rows[3]["score"] == 0.0
    assert rows[0]["error"] is None and rows[0]["reason"] is None and 0 < rows[0]["score"] < 1

    (dead,) = client.list_rows(f"{GCP_PROJECT}.{name}.scores_dead_letter")  # the default dead letter
    assert (dead["reason"], dead["raw"], dead["message_id"]) == ("not_json", "not json", None)
    assert dead["source"].endswith("in.jsonl")


def test_a_filter_sends_rejected_rows_to_their_own_table(tmp_path, dataset, longclip_checkpoint, good_images):
    client, name = dataset
    _write_input(tmp_path / "in.jsonl", good_images)
    args = ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{name}.kept", "--project", GCP_PROJECT]
    counts = summarize(run(args + ["--model", str(longclip_checkpoint), "--keep_top_fraction", "0.5"]))
    assert (counts["kept"], counts["rejected"], counts["dead_lettered"]) == (1, 3, 1)

    (kept,) = client.list_rows(f"{GCP_PROJECT}.{name}.kept")
    rejected = sorted(client.list_rows(f"{GCP_PROJECT}.{name}.kept_rejected"), key=lambda r: r["record"]["id"])
    assert [r["record"]["id"] for r in rejected] == sorted({1, 2, 3, 4} - {kept["record"]["id"]})
    assert {r["cutoff"] for r in rejected} == {kept["score"]}  # one of two scored rows: the higher one
    assert all(r["record"]["longclip_score_cutoff"] == kept["score"] for r in rejected)
    assert [r["reason"] for r in rejected if r["reason"]] == ["image_wrong_type", "text_empty"]
    (dead,) = client.list_rows(f"{GCP_PROJECT}.{name}.kept_dead_letter")
    assert dead["reason"] == "not_json"


def test_rows_bigquery_rejects_go_to_the_dead_letter(tmp_path, dataset, longclip_checkpoint, good_images):
    """The table vanishes between the check at start and the writes: every row comes back as a dead letter."""
    client, name = dataset
    _write_input(tmp_path / "in.jsonl", good_images)
    plan = preflight(
        parse(
            ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{GCP_PROJECT}:{name}.doomed"]
            + ["--dead_letter", str(tmp_path / "dead"), "--model", str(longclip_checkpoint)]
        )
    )
    client.delete_table(f"{GCP_PROJECT}.{name}.doomed")
    pipeline = beam.Pipeline(options=plan.beam)
    build(pipeline, plan)
    result = pipeline.run()
    result.wait_until_finish()

    dead = [json.loads(line) for shard in tmp_path.glob("dead-*.jsonl") for line in shard.read_text().splitlines()]
    rejected = [d for d in dead if d["reason"] == "bigquery_rejected"]
    rows = [json.loads(d["raw"]) for d in rejected]  # the row as it was sent, its record column as JSON text
    assert sorted(json.loads(row["record"])["id"] for row in rows) == [1, 2, 3, 4]
    assert all(d["source"] == f"bigquery:{GCP_PROJECT}:{name}.doomed" and "Not Found" in d["error"] for d in rejected)
    assert [d["reason"] for d in dead if d not in rejected] == ["not_json"]
    assert summarize(result)["bigquery_rejected"] == 4


def _ensure(argv):
    plan_destinations(parse(argv))


def test_an_existing_table_needs_our_columns(dataset, longclip_checkpoint):
    client, name = dataset
    client.create_table(bigquery.Table(f"{GCP_PROJECT}.{name}.other", schema=[bigquery.SchemaField("score", "STRING")]))
    base = ["--input", "x", "--project", GCP_PROJECT, "--model", str(longclip_checkpoint)]
    with pytest.raises(UsageError, match=r"--output_table: .*exists without the column\(s\) image STRING, text STRING"):
        _ensure(base + ["--output_table", f"{name}.other"])
    ours = [bigquery.SchemaField.from_api_repr(field) for field in bq_sink.SCORED_SCHEMA["fields"]]
    client.create_table(
        bigquery.Table(
            f"{GCP_PROJECT}.{name}.stricter", schema=ours + [bigquery.SchemaField("batch", "STRING", "REQUIRED")]
        )
    )
    with pytest.raises(UsageError, match=r"has column\(s\) batch that no row of this job can fill"):
        _ensure(base + ["--output_table", f"{name}.stricter"])
    client.create_table(
        bigquery.Table(f"{GCP_PROJECT}.{name}.wider", schema=ours + [bigquery.SchemaField("batch", "STRING")])
    )
    _ensure(base + ["--output_table", f"{name}.wider"])  # extra NULLABLE columns are fine
    with pytest.raises(UsageError, match="dataset test-project:no_such_dataset does not exist"):
        _ensure(base + ["--output_table", "no_such_dataset.t"])


def test_a_table_from_before_the_reason_column_still_takes_the_rows(
    dataset, tmp_path, longclip_checkpoint, good_images, caplog
):
    """Tables made by an earlier version lack `reason`: the job writes to them without it, and says how to add it."""
    client, name = dataset
    older = [f for f in bq_sink.SCORED_SCHEMA["fields"] if f["name"] != "reason"]
    client.create_table(
        bigquery.Table(f"{GCP_PROJECT}.{name}.older", schema=[bigquery.SchemaField.from_api_repr(f) for f in older])
    )
    _write_input(tmp_path / "in.jsonl", good_images)
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{name}.older", "--project", GCP_PROJECT]
    counts = summarize(run(argv + ["--model", str(longclip_checkpoint), "--dead_letter", str(tmp_path / "dead")]))
    assert "ADD COLUMN reason STRING" in caplog.text and counts.get("bigquery_rejected", 0) == 0
    rows = list(client.list_rows(f"{GCP_PROJECT}.{name}.older"))
    assert sorted(row["record"]["longclip_score_reason"] or "" for row in rows) == [
        "",
        "",
        "image_wrong_type",
        "text_empty",
    ]


def test_embeddings_go_to_repeated_float_columns(tmp_path, dataset, longclip_checkpoint, good_images):
    client, name = dataset
    _write_input(tmp_path / "in.jsonl", good_images)
    base = ["--project", GCP_PROJECT, "--model", str(longclip_checkpoint), "--embeddings"]
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{name}.embedded"]
    counts = summarize(run(argv + base + ["--dead_letter", str(tmp_path / "dead")]))
    assert counts["scored"] == 2 and counts.get("bigquery_rejected", 0) == 0
    table = client.get_table(f"{GCP_PROJECT}.{name}.embedded")
    assert {(f.name, f.field_type, f.mode) for f in table.schema} >= {
        ("image_embedding", "FLOAT", "REPEATED"),
        ("text_embedding", "FLOAT", "REPEATED"),
    }
    rows = sorted((dict(r) for r in client.list_rows(table)), key=lambda r: r["record"]["id"])
    assert [r["record"]["id"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert not any("embedding" in key for key in row["record"]), "the vectors are in their own columns only"
        if row["error"] is not None:
            assert row["image_embedding"] == row["text_embedding"] == []  # BigQuery arrays cannot be null
            continue
        image, text = torch.tensor(row["image_embedding"]).double(), torch.tensor(row["text_embedding"]).double()
        assert image.shape == text.shape == (32,)
        assert abs(image.norm() - 1) < 1e-5 and abs(text.norm() - 1) < 1e-5
        assert abs(min(max((image @ text + 1) / 2, 0.0), 1.0) - row["score"]) < 1e-6

    ours = [bigquery.SchemaField.from_api_repr(field) for field in bq_sink.SCORED_SCHEMA["fields"]]
    client.create_table(bigquery.Table(f"{GCP_PROJECT}.{name}.plain", schema=ours))
    with pytest.raises(UsageError, match=r"without the column\(s\) image_embedding FLOAT, text_embedding FLOAT"):
        _ensure(["--input", "x", "--output_table", f"{name}.plain"] + base)
    single = [bigquery.SchemaField(column, "FLOAT") for column in ("image_embedding", "text_embedding")]
    client.create_table(bigquery.Table(f"{GCP_PROJECT}.{name}.single", schema=ours + single))
    with pytest.raises(UsageError, match=r"image_embedding \(NULLABLE\), text_embedding \(NULLABLE\) where this job"):
        _ensure(["--input", "x", "--output_table", f"{name}.single"] + base)


def test_rejected_rows_go_to_their_own_table_with_the_cutoff(tmp_path, dataset, longclip_checkpoint, good_images):
    """A filtered job with --output_table: kept rows in it, the rest in <table>_rejected, which has the same
    columns (embeddings included) plus the cutoff."""
    client, name = dataset
    _write_input(tmp_path / "in.jsonl", good_images)
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output_table", f"{name}.kept", "--keep_top_fraction", "0.5"]
    base = ["--project", GCP_PROJECT, "--model", str(longclip_checkpoint), "--embeddings"]
    counts = summarize(run(argv + base + ["--dead_letter", str(tmp_path / "dead")]))
    assert (counts["kept"], counts["rejected"]) == (1, 3) and counts.get("bigquery_rejected", 0) == 0
    rejected_table = client.get_table(f"{GCP_PROJECT}.{name}.kept_rejected")
    assert [f.name for f in rejected_table.schema] == [
        f.name for f in client.get_table(f"{GCP_PROJECT}.{name}.kept").schema
    ] + ["cutoff"]
    (kept,) = client.list_rows(f"{GCP_PROJECT}.{name}.kept")
    rejected = sorted((dict(r) for r in client.list_rows(rejected_table)), key=lambda r: r["record"]["id"])
    assert sorted([kept["record"]["id"]] + [r["record"]["id"] for r in rejected]) == [1, 2, 3, 4]
    assert {r["cutoff"] for r in rejected} == {kept["score"]}
    scored = [r for r in rejected if r["reason"] is None]
    assert len(scored) == 1 and scored[0]["score"] < kept["score"] and len(scored[0]["image_embedding"]) == 32
