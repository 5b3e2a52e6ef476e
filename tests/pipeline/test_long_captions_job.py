"""`--long_captions chunks --sentence_scores` everywhere the score goes: JSONL, Parquet and WebDataset in,
JSONL and Parquet out, streaming from Pub/Sub into files and BigQuery, --resume and the filters. Every part
reported equals the independent reference's score of (image, caption[start:end]) within 1e-6."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import pubsub_v1

from pipeline import run, summarize
from pipeline.io import bigquery as bq_sink
from tests.support.reference_longclip import ReferenceScorer
from transforms.testing.datasets import img2dataset_sample, jpeg, write_shard
from transforms.testing.emulators import GCP_PROJECT
from transforms.testing.sentence_cases import STREET, long_caption

PARTS = ["--long_captions", "chunks", "--sentence_scores"]
CAPTIONS = [
    "a small red house",
    STREET.text,
    long_caption(27, seed=11),  # about 600 tokens
    long_caption(66, seed=12),  # about 1,500 tokens
    "公園のベンチに女性が座っています。" * 40,
]


def _records(good_images) -> list[dict]:
    images = ("rgb.jpg", "rgb.png", "grey.png")
    return [
        {"id": n, "image_path": str(good_images[images[n % len(images)]]), "text": caption}
        for n, caption in enumerate(CAPTIONS)
    ]


def _check_parts(rows: list[dict], records: list[dict], reference: ReferenceScorer, image_of=None) -> int:
    """Every chunk and sentence of every row equals the reference; the score is the chunks' mean. Returns the
    number of parts checked."""
    by_id = {record["id"]: record for record in records}
    checked = 0
    for row in rows:
        record = by_id[int(row["id"])]
        text = record["text"]
        image = image_of(row) if image_of else record["image_path"]
        chunks, sentences = row["longclip_score_chunks"], row["longclip_score_sentences"]
        assert row["longclip_score_reason"] is None and row["longclip_score_truncated"] is False
        for span in list(chunks) + list(sentences):
            assert abs(span["score"] - reference.score(image, text[span["start"] : span["end"]])) <= 1e-6
            checked += 1
        assert abs(row["longclip_score"] - sum(c["score"] for c in chunks) / len(chunks)) <= 1e-7
        assert row["longclip_score_min"] == min(c["score"] for c in chunks)
        solid = [i for i, character in enumerate(text) if not character.isspace()]
        assert [i for c in chunks for i in range(c["start"], c["end"]) if not text[i].isspace()] == solid
    return checked


def _jsonl(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob(pattern)) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_jsonl_parquet_and_webdataset_in_jsonl_and_parquet_out(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    records = _records(good_images)
    reference = ReferenceScorer(longclip_state_dict)
    model = ["--model", str(longclip_checkpoint)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "in.parquet")
    members = [m for r in records for m in img2dataset_sample(f"{r['id']:06d}", jpeg(Path(r["image_path"])), r["text"])]
    write_shard(tmp_path / "shards" / "00000.tar", members)

    summarize(run(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "j" / "s"), *PARTS, *model]))
    assert _check_parts(_jsonl(tmp_path / "j", "s-*.jsonl"), records, reference) > 80

    run(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "p" / "s"), "--output_format", "parquet"]
        + PARTS + model)  # fmt: skip
    table = pq.read_table(next((tmp_path / "p").glob("s-*.parquet")))
    span = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
    assert table.schema.field("longclip_score_chunks").type == pa.list_(span)
    assert table.schema.field("longclip_score_sentences").type == pa.list_(span)
    rows = table.to_pylist()  # the records' own fields are typed columns beside the added ones
    _check_parts(rows, records, reference)

    run(["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "q" / "s")] + PARTS + model)
    _check_parts(_jsonl(tmp_path / "q", "s-*.jsonl"), records, reference)

    run(["--input", str(tmp_path / "shards" / "*.tar"), "--output", str(tmp_path / "w" / "s"), "--text_key", "text"]
        + PARTS + model)  # fmt: skip
    shard_rows = _jsonl(tmp_path / "w", "s-*.jsonl")
    for row in shard_rows:
        row["id"] = int(row["__key__"])
    # The shard holds the images re-encoded as JPEG: the reference reads those very bytes.
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    for row in shard_rows:
        (jpegs / f"{row['id']}.jpg").write_bytes(jpeg(Path(records[row["id"]]["image_path"])))
    _check_parts(shard_rows, records, reference, image_of=lambda row: jpegs / f"{row['id']}.jpg")


@pytest.mark.slow
def test_resume_and_filters_keep_the_parts(tmp_path, longclip_checkpoint, longclip_state_dict, good_images):
    records = _records(good_images)
    reference = ReferenceScorer(longclip_state_dict)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    base = ["--input", str(tmp_path / "in.jsonl"), "--model", str(longclip_checkpoint), *PARTS]
    run(base + ["--output", str(tmp_path / "r" / "s"), "--resume"])
    _check_parts(_jsonl(tmp_path / "r", "s-part-*.jsonl"), records, reference)
    run(base + ["--output", str(tmp_path / "f" / "s"), "--keep_min_score", "0.5"])
    kept, rejected = _jsonl(tmp_path / "f", "s-*.jsonl"), _jsonl(tmp_path / "f", "s.rejected-*.jsonl")
    assert sorted(r["id"] for r in kept + rejected) == [r["id"] for r in records]
    assert all(r["longclip_score"] >= 0.5 for r in kept) and all(r["longclip_score"] < 0.5 for r in rejected)
    _check_parts(kept + rejected, records, reference)


@pytest.fixture
def emulators(pubsub_emulator, bigquery_emulator, restore_environ):
    restore_environ["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    restore_environ[bq_sink.EMULATOR_HOST_VARIABLE] = bigquery_emulator
    suffix = str(time.monotonic_ns())
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{GCP_PROJECT}/topics/long-{suffix}").name
    subscription = pubsub_v1.SubscriberClient().create_subscription(
        name=f"projects/{GCP_PROJECT}/subscriptions/long-{suffix}", topic=topic
    )
    client = bq_sink.client(GCP_PROJECT)
    return publisher, topic, subscription.name, client, client.create_dataset(f"long_{suffix}").dataset_id


def test_streaming_into_files_and_bigquery_repeated_records(
    tmp_path, emulators, longclip_checkpoint, longclip_state_dict, good_images
):
    publisher, topic, subscription, client, dataset = emulators
    records = _records(good_images) + [{"id": 99, "image_path": "/no/such.png", "text": long_caption(30)}]
    table = f"{GCP_PROJECT}:{dataset}.scored"
    result = run(
        ["--streaming", "--input_subscription", subscription, "--output", str(tmp_path / "s"), "--output_table", table]
        + ["--window_seconds", "3", "--project", GCP_PROJECT, "--model", str(longclip_checkpoint), *PARTS],
        wait=False,
    )
    try:
        for record in records:
            publisher.publish(topic, json.dumps(record).encode())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_jsonl(tmp_path, "s-*.jsonl")) < len(records):
            time.sleep(1)
        while time.monotonic() < deadline and len(list(client.list_rows(table.replace(":", ".")))) < len(records):
            time.sleep(1)
    finally:
        result.cancel()
    reference = ReferenceScorer(longclip_state_dict)
    files = _jsonl(tmp_path, "s-*.jsonl")
    assert sorted(r["id"] for r in files) == sorted(r["id"] for r in records)
    _check_parts([r for r in files if r["id"] != 99], records, reference)
    rows = {row["record"]["id"]: dict(row) for row in client.list_rows(table.replace(":", "."))}
    assert set(rows) == {r["id"] for r in records}
    for row in rows.values():
        source = next(r for r in files if r["id"] == row["record"]["id"])
        for column in ("chunks", "sentences"):
            spans = [(s["start_offset"], s["end_offset"], s["score"]) for s in row[column]]
            assert spans == [(s["start"], s["end"], s["score"]) for s in source[f"longclip_score_{column}"] or []]
        assert row["score_min"] == source["longclip_score_min"]
        assert "longclip_score_chunks" not in row["record"]
    assert rows[99]["chunks"] == [] and rows[99]["reason"] == "image_not_found"
