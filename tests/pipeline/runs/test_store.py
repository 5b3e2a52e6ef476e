"""Run records beside real outputs: JSONL and BigQuery from one job, Parquet (in bf16) from another, read back
from the files, the Parquet footer and the BigQuery emulator."""

import hashlib
import json
import os
import time

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.io import bigquery as bq_sink
from pipeline.runs import store
from transforms.testing.emulators import GCP_PROJECT

SECRET = "s3cr3t-T0KEN"


def _write_input(path, good_images):
    records = [
        {"id": 1, "image_path": str(good_images["rgb.png"]), "text": "a red square"},
        {"id": 2, "image_path": str(good_images["grey.png"]), "text": "a grey square"},
        {"id": 3, "image_path": "/nonexistent/missing.png", "text": "a cat"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, bigquery_emulator, longclip_checkpoint, good_images):
    """A JSONL + BigQuery job in fp32 and a Parquet job in bf16 over the same 3 records."""
    folder = tmp_path_factory.mktemp("runs")
    _write_input(folder / "in.jsonl", good_images)
    saved = os.environ.get(bq_sink.EMULATOR_HOST_VARIABLE)
    os.environ[bq_sink.EMULATOR_HOST_VARIABLE] = bigquery_emulator
    try:
        client = bq_sink.client(GCP_PROJECT)
        dataset = client.create_dataset(f"runs_{time.monotonic_ns()}").dataset_id
        common = ["--input", str(folder / "in.jsonl"), "--model", str(longclip_checkpoint)]
        # A signed-URL token in a flag's value is redacted; the image root is unused (absolute paths).
        root = f"https://reader:{SECRET}@images.example.com/a?sig={SECRET}"
        run(common + ["--output", str(folder / "a" / "scored"), "--output_table", f"{dataset}.scores"]
            + ["--project", GCP_PROJECT, "--image_root", root])  # fmt: skip
        run(common + ["--output", str(folder / "b" / "scored"), "--output_format", "parquet", "--precision", "bf16"])
        table = client.get_table(f"{GCP_PROJECT}.{dataset}.scores")
        runs_rows = [dict(row) for row in client.list_rows(f"{GCP_PROJECT}.{dataset}.scores_runs")]
    finally:
        if saved is None:
            os.environ.pop(bq_sink.EMULATOR_HOST_VARIABLE, None)
        else:
            os.environ[bq_sink.EMULATOR_HOST_VARIABLE] = saved
    return folder, table, runs_rows


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_jsonl_output_has_its_run_record_with_the_checkpoint_hash(two_runs, longclip_checkpoint):
    folder, _, _ = two_runs
    record = json.loads((folder / "a" / "scored.run.json").read_text())
    assert record["status"] == "done" and record["exit_code"] == 0
    assert record["started_at"] <= record["ended_at"]
    checkpoint = record["checkpoint"]
    assert checkpoint["sha256"] == _sha256(longclip_checkpoint)
    assert checkpoint["size_bytes"] == longclip_checkpoint.stat().st_size
    assert checkpoint["hub_revision"] is None and "launcher" in checkpoint["hashed"]
    assert record["architecture"]["context_length"] == 248 and record["architecture"]["image_resolution"] == 32
    assert record["scoring"] == {
        "precision": "fp32",
        "precision_used": "fp32",
        "precision_why": "as requested",
        "weights": "rounded to fp16 as LongCLIP's loader does",
        "image_resolution": 32,
        "context_length": 248,
    }
    assert set(record["settings"]) == {"ModelSettings", "BatchSettings", "RecordFields", "ImageSettings"}
    assert record["settings"]["BatchSettings"]["max_batch_size"] == 32
    assert set(record["versions"]) >= {"longclip-beam", "torch", "open_clip_torch", "apache-beam", "Pillow"}
    assert all(record["versions"][name] for name in ("torch", "apache-beam", "Pillow"))
    assert record["counts"]["read"] == 3 and record["counts"]["scored"] == 2
    assert record["counts"]["failed_image_not_found"] == 1
    command = " ".join(record["command"])
    assert SECRET not in json.dumps(record) and "https://***@images.example.com/a?sig=***" in command
    assert record["command"][0] == "python -m pipeline" and "--precision" not in command


@pytest.mark.slow
def test_a_parquet_output_has_the_record_in_its_footer_too(two_runs, longclip_checkpoint):
    folder, _, _ = two_runs
    record = json.loads((folder / "b" / "scored.run.json").read_text())
    assert record["checkpoint"]["sha256"] == _sha256(longclip_checkpoint)
    assert record["scoring"]["precision_used"] == "bf16" and record["outputs"]["output_format"] == "parquet"
    (shard,) = (folder / "b").glob("scored-*.parquet")
    metadata = pq.read_schema(shard).metadata
    footer = json.loads(metadata[store.PARQUET_KEY.encode()])
    # As the job started: the same run, without its end and counts.
    assert footer["status"] == "running" and footer["counts"] is None and footer["ended_at"] is None
    assert {key: footer[key] for key in ("checkpoint", "scoring", "settings", "command", "started_at")} == {
        key: record[key] for key in ("checkpoint", "scoring", "settings", "command", "started_at")
    }
    assert pq.read_table(shard).num_rows == 3


@pytest.mark.slow
def test_a_bigquery_output_has_the_record_in_its_description_and_runs_table(two_runs, longclip_checkpoint):
    folder, table, runs_rows = two_runs
    described = json.loads(table.description)
    assert described["status"] == "done" and described["checkpoint"]["sha256"] == _sha256(longclip_checkpoint)
    assert described == json.loads((folder / "a" / "scored.run.json").read_text())
    (row,) = runs_rows
    assert row["status"] == "done" and row["checkpoint_sha256"] == _sha256(longclip_checkpoint)
    assert row["output_table"].endswith(".scores") and row["record"] == described


@pytest.mark.slow
@pytest.mark.parametrize("server", ["answers 500", "never answers", "answers byte by byte"])
def test_a_bigquery_that_does_not_take_the_record_holds_the_end_no_longer_than_its_deadline(
    server, tmp_path, image_server, silent_server, restore_environ, caplog
):
    """The clients retry a 500 for ten minutes (the emulator answers 500 to inserts after a read, which held a
    streaming job's exit in the docs recipe): the record is given up after BIGQUERY_SECONDS, with a warning."""
    from pipeline.plan import Destinations

    endpoint = {
        "answers 500": f"{image_server.url}/status/500",
        "never answers": silent_server.url,
        "answers byte by byte": f"{image_server.url}/stall-headers",  # each read within the clients' timeout
    }[server]
    os.environ[bq_sink.EMULATOR_HOST_VARIABLE] = endpoint
    destinations = Destinations(
        output=str(tmp_path / "scored"), output_format="jsonl", output_table=f"{GCP_PROJECT}:curation.scores",
        dead_letter=None, dead_letter_topic=None, dead_letter_table=None, rejected_output=None,
        rejected_table=None, window_seconds=60.0,
    )  # fmt: skip
    record = {"run_record": 1, "status": "done", "started_at": "2026-12-06T10:00:00+00:00"}
    started = time.monotonic()
    store.write_all(destinations, record, finished=True)
    took = time.monotonic() - started
    assert took < store.BIGQUERY_SECONDS + 10, took
    assert json.loads((tmp_path / "scored.run.json").read_text()) == record  # the file is written all the same
    assert f"Could not write the run record of BigQuery table {GCP_PROJECT}:curation.scores" in caplog.text
