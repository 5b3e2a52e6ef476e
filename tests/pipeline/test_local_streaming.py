"""Beam's local streaming runner as `pipeline.local_streaming` makes it behave, through `python -m pipeline
--streaming` against Google's real Pub/Sub emulator: Ctrl-C and SIGTERM stop the job after writing every
message it pulled, a second Ctrl-C cancels, the counts at the end are what was written, and the model is
loaded once."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from tests.support.paths import REPO_ROOT
from transforms.testing.emulators import GCP_PROJECT


def _read_jsonl(folder: Path, prefix: str) -> list[dict]:
    return [json.loads(line) for shard in folder.glob(f"{prefix}-*.jsonl") for line in shard.read_text().splitlines()]


def _local_job(tmp_path, pubsub_emulator, restore_environ, window_seconds: int, *more: str):
    """A topic and subscription on the emulator, and `python -m pipeline --streaming` reading it into files."""
    restore_environ["PUBSUB_EMULATOR_HOST"] = pubsub_emulator
    suffix = str(time.monotonic_ns())
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{GCP_PROJECT}/topics/records-{suffix}").name
    subscription = f"projects/{GCP_PROJECT}/subscriptions/records-{suffix}"
    pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--streaming", "--input_subscription", subscription]
        + ["--project", GCP_PROJECT, "--output", str(tmp_path / "out" / "scored")]
        + ["--window_seconds", str(window_seconds), *more],
        cwd=REPO_ROOT,
        stderr=(tmp_path / "job.log").open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return publisher, topic, subscription, job


def _publish(publisher, topic: str, image: Path, count: int) -> None:
    futures = [
        publisher.publish(topic, json.dumps({"id": n, "image_path": str(image), "text": "a cat"}).encode())
        for n in range(count)
    ]
    for future in futures:
        future.result()


def _left_in(subscription: str) -> list[int]:
    """The ids of the messages still in the subscription (pulled and acknowledged here)."""
    subscriber, left = pubsub_v1.SubscriberClient(), []
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        if not response.received_messages:
            return left
        left += [json.loads(m.message.data)["id"] for m in response.received_messages]
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])


def _wait_for_line(job: subprocess.Popen, log: Path, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_after_50_messages_counts_what_was_written_with_one_model(
    tmp_path, pubsub_emulator, restore_environ, longclip_checkpoint, good_images
):
    """The counts at the end are what was written (the local runner's counters kept only each thread's first
    bundle: 10 read were reported after 50); the model is loaded once for the job (it was once per bundle);
    the window files are named with their bounds in UTC, no brackets, commas or spaces."""
    publisher, topic, _, job = _local_job(
        tmp_path, pubsub_emulator, restore_environ, 2, "--model", str(longclip_checkpoint)
    )
    log = tmp_path / "job.log"
    try:
        _publish(publisher, topic, good_images["rgb.png"], 50)
        deadline = time.monotonic() + 180
        while len(_read_jsonl(tmp_path / "out", "scored")) < 50 and time.monotonic() < deadline:
            assert job.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        job.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        assert job.wait(timeout=60) == 0, log.read_text()[-3000:]
        stopped_in = time.monotonic() - stopping
    finally:
        job.kill()
    text = log.read_text()
    assert sorted(record["id"] for record in _read_jsonl(tmp_path / "out", "scored")) == list(range(50))
    assert "Done: 50 records read, 50 scored, 0 scored 0.0 with an error, 0 dead-lettered" in text, text[-3000:]
    assert text.count("Loaded LongCLIP checkpoint") == 1, text[-3000:]
    assert "Loading LongCLIP again" not in text
    assert stopped_in < 30, stopped_in
    for name in (path.name for path in (tmp_path / "out").glob("scored-*")):
        assert re.fullmatch(r"scored-\d{8}T\d{6}Z-\d{8}T\d{6}Z-00000-of-00001\.jsonl", name), name


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_stop_writes_every_message_pulled_before_it(
    tmp_path, pubsub_emulator, restore_environ, longclip_checkpoint, good_images, stop
):
    """Ctrl-C or SIGTERM while pulled messages wait in an open window: no more pulls, the window is written
    early, the job exits 0 with counts equal to what was written, and every message is either written or still
    in the subscription, once (before, SIGTERM killed the job and Ctrl-C cancelled it: the messages pulled,
    already acknowledged, were lost)."""
    publisher, topic, subscription, job = _local_job(
        tmp_path, pubsub_emulator, restore_environ, 3600, "--model", str(longclip_checkpoint)
    )
    log = tmp_path / "job.log"
    try:
        _publish(publisher, topic, good_images["rgb.png"], 50)
        _wait_for_line(job, log, "Loaded LongCLIP checkpoint")  # on the first bundle: messages were pulled
        time.sleep(2)
        assert not _read_jsonl(tmp_path / "out", "scored"), "the hour's window must still be open"
        job.send_signal(getattr(signal, stop))
        assert job.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        job.kill()
    text = log.read_text()
    written = sorted(record["id"] for record in _read_jsonl(tmp_path / "out", "scored"))
    left = _left_in(subscription)
    assert len(written) >= 10, text[-3000:]
    assert sorted(written + left) == list(range(50)), (written, left)
    assert f"Done: {len(written)} records read, {len(written)} scored" in text, text[-3000:]
    assert f"{stop}: stopping. No more messages are pulled" in text


@pytest.mark.slow
def test_a_second_ctrl_c_cancels_at_once_and_says_what_is_lost(
    tmp_path, pubsub_emulator, restore_environ, longclip_checkpoint, good_images, silent_server
):
    """The way out when draining takes too long: the second Ctrl-C cancels, says that the messages in flight
    are lost (acknowledged on pull) and exits 130. Their images are on a server that never answers, so the
    drain is still waiting for them when the second Ctrl-C comes, however fast the machine."""
    publisher, topic, _, job = _local_job(
        tmp_path, pubsub_emulator, restore_environ, 3600, "--model", str(longclip_checkpoint),
        "--http_timeout_secs", "300",
    )  # fmt: skip
    log = tmp_path / "job.log"
    try:
        _publish(publisher, topic, good_images["rgb.png"], 1)
        _wait_for_line(job, log, "Loaded LongCLIP checkpoint")
        _publish(publisher, topic, f"{silent_server.url}/a.png", 5)
        time.sleep(8)  # pulled (a pull every 5 s), and waiting on the server
        job.send_signal(signal.SIGINT)
        _wait_for_line(job, log, "SIGINT: stopping")
        job.send_signal(signal.SIGINT)
        assert job.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
        job.kill()
    text = log.read_text()
    assert "Interrupted again: cancelling the job. Messages pulled and not yet written are lost" in text
    assert "INFO pipeline: Cancelled: " in text.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_drain_that_does_not_end_is_cancelled_after_its_deadline(
    tmp_path, pubsub_emulator, restore_environ, longclip_checkpoint, good_images, silent_server
):
    """One Ctrl-C, and records waiting on a server that never answers: the job does not wait for them past the
    drain's deadline (60 s), it cancels and exits 130, saying so."""
    publisher, topic, _, job = _local_job(
        tmp_path, pubsub_emulator, restore_environ, 3600, "--model", str(longclip_checkpoint),
        "--http_timeout_secs", "300",
    )  # fmt: skip
    log = tmp_path / "job.log"
    try:
        _publish(publisher, topic, good_images["rgb.png"], 1)
        _wait_for_line(job, log, "Loaded LongCLIP checkpoint")
        _publish(publisher, topic, f"{silent_server.url}/a.png", 3)
        time.sleep(8)  # pulled, and waiting on the server
        job.send_signal(signal.SIGTERM)
        assert job.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        job.kill()
    text = log.read_text()
    assert "The job did not end within 60 s of the stop" in text
    assert "INFO pipeline: Cancelled: " in text.strip().splitlines()[-1]
