"""The streaming job against Google's real Pub/Sub emulator and a real BigQuery API emulator.

Messages are published to the emulator; `python -m pipeline --streaming` (the real entry point, on
Beam's local streaming runner) scores them into windowed JSONL files and BigQuery tables at the same
time; the test reads both back and accounts for every message, then cancels the job.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from pipeline import run
from pipeline.io import bigquery as bq_sink
from tests.support.paths import REPO_ROOT
from tests.support.reference_longclip import reference_score
from transforms.testing.captions import CAPTIONS
from transforms.testing.emulators import GCP_PROJECT

BAD_ROWS = {  # message body -> the reason its score 0.0 must carry
    "missing-file": ({"image_path": "/nonexistent/nope.png", "text": "a cat"}, "image_not_found"),
    "empty-text": ({"image_path": "rgb.png", "text": "   "}, "text_empty"),
    "number-text": ({"image_path": "rgb.png", "text": 7}, "text_wrong_type"),
    "no-image": ({"text": "a cat"}, "image_missing"),
}

MALFORMED = {  # raw message data -> dead-letter reason
    b"\xff\xfe not utf-8": "not_utf8",
    b"not json": "not_json",
    b"[1, 2]": "not_object",
    b"": "empty_line",
    b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}": "too_deep",
    b'{"attrs": "taken", "text": "a cat"}': "attributes_key_taken",
    b'{"id": "bad-time", "image_path": "x.png", "text": "a cat"}': "bad_timestamp",  # its "ts" is not a time
}


@pytest.fixture
def emulators(pubsub_emulator, bigquery_emulator, restore_environ):
    """Both emulators, the environment pointing at them, a fresh topic, subscription and dataset."""
    restore_environ["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    restore_environ[bq_sink.EMULATOR_HOST_VARIABLE] = bigquery_emulator
    suffix = str(time.monotonic_ns())
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{GCP_PROJECT}/topics/records-{suffix}").name
    subscription = (
        pubsub_v1.SubscriberClient()
        .create_subscription(name=f"projects/{GCP_PROJECT}/subscriptions/records-{suffix}", topic=topic)
        .name
    )
    client = bq_sink.client(GCP_PROJECT)
    dataset = client.create_dataset(f"scores_{suffix}").dataset_id
    return publisher, topic, subscription, client, dataset


def _messages(good_images) -> list[tuple[bytes, dict]]:
    """About 100 messages: every good image kind with several captions, bad rows, malformed data."""
    messages = []
    for name in sorted(good_images):
        for caption in ("short", "around_77_tokens", "over_248_tokens", "unicode", "html_and_space"):
            body = {"id": f"{name}/{caption}", "image_path": str(good_images[name]), "text": CAPTIONS[caption]}
            messages.append(json.dumps(body).encode())
    for key, (body, _) in BAD_ROWS.items():
        body = dict(body, id=key)
        if body.get("image_path") == "rgb.png":
            body["image_path"] = str(good_images["rgb.png"])
        messages.append(json.dumps(body).encode())
    messages += list(MALFORMED)
    now = str(int(time.time() * 1000))
    return [(data, {"n": str(n), "ts": "yesterday" if b"bad-time" in data else now}) for n, data in enumerate(messages)]


def _row_count(client, dataset: str, table: str) -> int:
    """Polls the table's row count; reading rows while the job inserts would upset bqemulator (its DuckDB
    connection refuses inserts while a read's result is open), so rows are read once, at the end."""
    return client.get_table(f"{GCP_PROJECT}.{dataset}.{table}").num_rows


def _read_jsonl(folder: Path, prefix: str) -> list[dict]:
    return [json.loads(line) for shard in folder.glob(f"{prefix}-*.jsonl") for line in shard.read_text().splitlines()]


def test_pubsub_to_files_and_bigquery_accounts_for_every_message(
    tmp_path, emulators, longclip_checkpoint, longclip_state_dict, good_images
):
    publisher, topic, subscription, client, dataset = emulators
    subscriber = pubsub_v1.SubscriberClient()
    dead_topic = publisher.create_topic(name=f"{topic}-dead").name
    dead_subscription = subscriber.create_subscription(name=f"{subscription}-dead", topic=dead_topic).name
    messages = _messages(good_images)
    assert 95 <= len(messages) <= 110
    out = tmp_path / "out"
    # Half the messages wait in the subscription before the job starts: the first pull moves the watermark
    # past their publish time, so a writer windowed by event time would drop them as late.
    backlog = len(messages) // 2
    for data, attributes in messages[:backlog]:
        publisher.publish(topic, data, **attributes).result()
    time.sleep(6)
    result = run(
        [
            "--streaming",
            "--input_subscription",
            subscription,
            "--attributes_key",
            "attrs",
            "--timestamp_attribute",
            "ts",
            "--output",
            str(out / "scored"),
            "--dead_letter",
            str(out / "dead"),
            "--window_seconds",
            "5",
            "--output_table",
            f"{GCP_PROJECT}:{dataset}.scored",
            "--dead_letter_table",
            f"{dataset}.dead",
            "--dead_letter_topic",
            dead_topic,
            "--project",
            GCP_PROJECT,
            "--model",
            str(longclip_checkpoint),
            "--max_batch_size",
            "8",
        ],
        wait=False,
    )
    try:
        for data, attributes in messages[backlog:]:
            publisher.publish(topic, data, **attributes)
        published = time.monotonic()
        deadline = published + 120
        while time.monotonic() < deadline:
            in_tables = _row_count(client, dataset, "scored") + _row_count(client, dataset, "dead")
            scored, dead = _read_jsonl(out, "scored"), _read_jsonl(out, "dead")
            if in_tables >= len(messages) and len(scored) + len(dead) >= len(messages):
                break
            time.sleep(1)
        waited = time.monotonic() - published
    finally:
        result.cancel()
    assert str(result.state) == "CANCELLED"
    rows = [dict(row) for row in client.list_rows(f"{GCP_PROJECT}.{dataset}.scored")]
    dead_rows = [dict(row) for row in client.list_rows(f"{GCP_PROJECT}.{dataset}.dead")]

    everything = [str(n) for n in range(len(messages))]
    # Files: each message exactly once, as a scored record or a dead-letter entry.
    assert sorted([r["attrs"]["n"] for r in scored] + [d["attributes"]["n"] for d in dead], key=int) == everything
    # BigQuery: the same, read back through the BigQuery API.
    assert (
        sorted([r["record"]["attrs"]["n"] for r in rows] + [d["attributes"]["n"] for d in dead_rows], key=int)
        == everything
    ), f"after {waited:.0f} s"

    by_n = {r["attrs"]["n"]: r for r in scored}
    worst = 0.0
    for row in rows:
        record = row["record"]
        assert record == by_n[record["attrs"]["n"]]  # the whole record, score fields included
        assert (row["image"], row["score"], row["error"], row["truncated"], row["model"]) == (
            record.get("image_path"),
            record["longclip_score"],
            record["longclip_score_error"],
            record["longclip_score_truncated"],
            str(longclip_checkpoint),
        )
        assert row["text"] == (record["text"] if isinstance(record.get("text"), str) else json.dumps(record["text"]))
        assert row["scored_at"] is not None
        if record["id"] in BAD_ROWS:
            assert row["score"] == 0.0
            assert row["error"].split(":")[0] == BAD_ROWS[record["id"]][1]
        else:
            assert row["error"] is None
            expected = reference_score(longclip_state_dict, Path(record["image_path"]), record["text"])
            worst = max(worst, abs(row["score"] - expected))
            assert row["truncated"] == record["id"].endswith("over_248_tokens")
    assert worst < 1e-6, f"max |score - original LongCLIP| = {worst}"

    published_dead = []
    while len(published_dead) < len(MALFORMED):
        response = subscriber.pull(subscription=dead_subscription, max_messages=100, timeout=30)
        assert response.received_messages, f"{len(published_dead)} dead-letter messages on the topic"
        published_dead += [json.loads(m.message.data) for m in response.received_messages]
    for entries in (dead, dead_rows, published_dead):
        assert sorted(d["reason"] for d in entries) == sorted(MALFORMED.values())
        for entry in entries:
            raw = MALFORMED_BY_REASON[entry["reason"]]
            assert entry["source"] == subscription and entry["message_id"]
            if entry["reason"] == "not_utf8":
                assert entry["raw"] is None and entry["raw_base64"]
            else:
                assert entry["raw"] == raw.decode()
    assert all(row["dead_lettered_at"] is not None for row in dead_rows)


MALFORMED_BY_REASON = {reason: raw for raw, reason in MALFORMED.items()}


def test_cli_scores_a_lone_message_at_once_and_stops_cleanly_on_ctrl_c(
    tmp_path, emulators, longclip_checkpoint, good_images
):
    """At one message a minute a record must not sit in a half-full batch (min_batch_size 4, one message);
    `--input_topic` reads through a subscription of its own; Ctrl-C stops the job and reports counts."""
    publisher, topic, subscription, client, dataset = emulators
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--streaming", "--input_topic", topic]
        + ["--output_table", f"{GCP_PROJECT}:{dataset}.scored", "--model", str(longclip_checkpoint)]
        + ["--min_batch_size", "4", "--max_batch_size", "8"],
        cwd=REPO_ROOT,
        stderr=(tmp_path / "job.log").open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(publisher.list_topic_subscriptions(topic=topic))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)  # the job has subscribed once its subscription exists beside the fixture's
        publisher.publish(topic, json.dumps({"image_path": str(good_images["rgb.png"]), "text": "a cat"}).encode())
        published = time.monotonic()
        while not _row_count(client, dataset, "scored") and time.monotonic() < published + 60:
            time.sleep(0.2)
        latency = time.monotonic() - published
        job.send_signal(signal.SIGINT)
        assert job.wait(timeout=120) == 0, (tmp_path / "job.log").read_text()[-3000:]
    finally:
        job.kill()
    log = (tmp_path / "job.log").read_text()
    rows = list(client.list_rows(f"{GCP_PROJECT}.{dataset}.scored"))
    assert len(rows) == 1 and rows[0]["error"] is None, f"after {latency:.1f} s"
    assert "SIGINT: stopping. No more messages are pulled" in log and "Stopped pulling from " in log
    assert "Done: 1 records read, 1 scored" in log
    # The default dead letter of a BigQuery-only job is a table beside it.
    assert client.get_table(f"{GCP_PROJECT}.{dataset}.scored_dead_letter").num_rows == 0
    # The job's temporary subscription went with it.
    assert list(publisher.list_topic_subscriptions(topic=topic)) == [subscription]


def _table_rows(client, table: str) -> int:
    try:
        return _row_count(client, *table.split("."))
    except Exception:  # noqa: BLE001 - not made yet, or the emulator is starting
        return 0


def _start_job(tmp_path, name: str, argv: list) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--streaming", *argv],
        cwd=REPO_ROOT,
        stderr=(tmp_path / f"{name}.log").open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_bigquery_stopped_for_20_s_under_load_loses_no_row(
    tmp_path, pubsub_emulator, restore_environ, longclip_checkpoint, good_images
):
    """A BigQuery outage while messages keep coming: every message is a row once, after the service is back."""
    from transforms.testing.emulators import free_port, start_bigquery_emulator, stop

    port, data = free_port(), tmp_path / "bigquery-data"
    bigquery, endpoint = start_bigquery_emulator(tmp_path / "bigquery.log", GCP_PROJECT, port, data)
    restore_environ["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    restore_environ[bq_sink.EMULATOR_HOST_VARIABLE] = endpoint
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{GCP_PROJECT}/topics/bq-outage").name
    subscription = f"projects/{GCP_PROJECT}/subscriptions/bq-outage"
    pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
    bq_sink.client(GCP_PROJECT).create_dataset("outage")
    job = _start_job(
        tmp_path,
        "job",
        ["--input_subscription", subscription, "--output_table", f"{GCP_PROJECT}:outage.scored"]
        + ["--project", GCP_PROJECT, "--model", str(longclip_checkpoint)],
    )
    total = 120
    client = bq_sink.client(GCP_PROJECT)
    try:
        image = str(good_images["rgb.png"])

        def publish(n):
            publisher.publish(topic, json.dumps({"id": n, "image_path": image, "text": "a cat"}).encode())

        for n in range(20):
            publish(n)
        deadline = time.monotonic() + 180  # the job is up once rows arrive
        while not _table_rows(client, "outage.scored") and time.monotonic() < deadline:
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.5)
        stop(bigquery)
        down = time.monotonic()
        for n in range(20, total):  # 5 messages a second while BigQuery is away, for 20 s
            publish(n)
            time.sleep(max(0.0, down + (n - 19) / 5 - time.monotonic()))
        bigquery, _ = start_bigquery_emulator(tmp_path / "bigquery.log", GCP_PROJECT, port, data)
        deadline = time.monotonic() + 180
        while _table_rows(client, "outage.scored") < total and time.monotonic() < deadline:
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(1)
        time.sleep(3)  # a duplicate would arrive about now
        ids = sorted(row["record"]["id"] for row in client.list_rows(f"{GCP_PROJECT}.outage.scored"))
    finally:
        job.send_signal(signal.SIGINT)
        try:
            job.wait(timeout=60)
        finally:
            job.kill()
            stop(bigquery)
    assert ids == list(range(total)), (len(ids), (tmp_path / "job.log").read_text()[-3000:])


def test_a_pubsub_restart_under_a_running_job_does_not_end_it_silently(
    tmp_path, bigquery_emulator, restore_environ, longclip_checkpoint, good_images
):
    """Beam's local runner gives up on a subscription it cannot pull from; the job must then say why, give its
    counts and exit non-zero (before, it stopped after 4 quick retries with a traceback and no summary)."""
    from transforms.testing.emulators import free_port, start_pubsub_emulator, stop

    port = free_port()
    pubsub, host = start_pubsub_emulator(tmp_path / "pubsub.log", port)
    restore_environ["PUBSUB_EMULATOR_HOST"] = host
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{GCP_PROJECT}/topics/restart").name
    subscription = f"projects/{GCP_PROJECT}/subscriptions/restart"
    pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
    job = _start_job(
        tmp_path,
        "job",
        ["--input_subscription", subscription, "--output", str(tmp_path / "out" / "scored")]
        + ["--window_seconds", "2", "--model", str(longclip_checkpoint)],
    )
    try:
        for n in range(5):
            publisher.publish(
                topic, json.dumps({"id": n, "image_path": str(good_images["rgb.png"]), "text": "a cat"}).encode()
            )
        deadline = time.monotonic() + 120
        while len(_read_jsonl(tmp_path / "out", "scored")) < 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        stop(pubsub)
        pubsub, _ = start_pubsub_emulator(tmp_path / "pubsub.log", port)
        code = job.wait(timeout=180)
    finally:
        job.kill()
        stop(pubsub)
    log = (tmp_path / "job.log").read_text()
    last = log.strip().splitlines()
    assert code == 1, log[-3000:]
    assert any("ERROR pipeline.outcome: The job failed: " in line for line in last[-3:]), log[-3000:]
    assert "INFO pipeline: Stopped by the failure above: 5 records read, 5 scored" in last[-1], log[-3000:]
    assert len(_read_jsonl(tmp_path / "out", "scored")) == 5
