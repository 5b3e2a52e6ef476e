"""`python -m bench.streaming`: end-to-end latency and throughput of the streaming job, on emulators.

Starts Google's Pub/Sub emulator and the BigQuery API emulator (as the tests do), runs
`python -m pipeline --streaming` from a subscription into a BigQuery table, and measures:
- low rate: one message every `--low-rate-interval` seconds; latency = publish → row visible in BigQuery;
- high rate: `--burst` messages published at once; messages per second until the last row is visible.
Needs `make bqemulator` (the emulator's own venv) and the apt Pub/Sub emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import models, workload
from transforms.testing.emulators import start_bigquery_emulator, start_pubsub_emulator, stop

REPO_ROOT = Path(__file__).resolve().parents[1]

PROJECT = "bench-project"


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__)
    parser.add_argument("--arch", default="tiny", help=f"one of {sorted(models.ARCHITECTURES)} (random weights)")
    parser.add_argument("--low-rate-messages", type=int, default=10)
    parser.add_argument("--low-rate-interval", type=float, default=3.0, help="seconds between low-rate messages")
    parser.add_argument("--burst", type=int, default=1000, help="messages published at once for the high rate")
    parser.add_argument("--max-batch-size", type=int, default=32)
    return parser.parse_args()


def _rows(table: str, client) -> int:
    """Row count from the table's metadata: reading rows while the job inserts upsets bqemulator."""
    from google.api_core.exceptions import NotFound

    try:
        return client.get_table(table).num_rows
    except NotFound:  # the job creates the table when it starts
        return 0


def _wait_rows(table: str, client, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while _rows(table, client) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table} has {_rows(table, client)} of {count} rows after {timeout} s")
        time.sleep(0.05)
    return time.monotonic()


def main() -> None:
    args = _args()
    work = Path(tempfile.mkdtemp(prefix="longclip-bench-stream-"))
    pubsub, pubsub_host = start_pubsub_emulator(work / "pubsub.log")
    bigquery, bigquery_url = start_bigquery_emulator(work / "bigquery.log", PROJECT)
    os.environ.update(PUBSUB_EMULATOR_HOST=pubsub_host, BIGQUERY_EMULATOR_HOST=bigquery_url)
    job = None
    try:
        from google.cloud import pubsub_v1

        from pipeline import bigquery as bq

        publisher = pubsub_v1.PublisherClient()
        topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/records").name
        subscription = (
            pubsub_v1.SubscriberClient()
            .create_subscription(name=f"projects/{PROJECT}/subscriptions/records", topic=topic)
            .name
        )
        client = bq.client(PROJECT)
        client.create_dataset("bench")
        table = f"{PROJECT}.bench.scores"
        images = workload.write_images(work / "images", 16)
        captions = workload.captions(64, "mixed")
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--streaming", "--input_subscription", subscription]
            + ["--output_table", f"{PROJECT}:bench.scores", "--model", str(models.checkpoint(args.arch))]
            + ["--max_batch_size", str(args.max_batch_size)],
            cwd=REPO_ROOT,
            stderr=(work / "job.log").open("w"),
        )
        sent = 0

        def publish(n: int) -> None:
            record = {"id": n, "image_path": str(images[n % len(images)]), "text": captions[n % len(captions)]}
            publisher.publish(topic, json.dumps(record).encode())

        publish(sent)  # warm-up: model load and first batch
        sent += 1
        _wait_rows(table, client, sent, timeout=600)

        latencies = []
        for _ in range(args.low_rate_messages):
            time.sleep(args.low_rate_interval)
            published = time.monotonic()
            publish(sent)
            sent += 1
            latencies.append(_wait_rows(table, client, sent, timeout=120) - published)

        start = time.monotonic()
        futures = []
        for _ in range(args.burst):
            record = {"id": sent, "image_path": str(images[sent % len(images)]), "text": captions[sent % len(captions)]}
            futures.append(publisher.publish(topic, json.dumps(record).encode()))
            sent += 1
        for future in futures:
            future.result()
        done = _wait_rows(table, client, sent, timeout=3600)

        print(f"| streaming, {args.arch} weights, DirectRunner, emulators | value |")
        print("|---|---|")
        print(
            f"| latency at 1 message / {args.low_rate_interval:g} s, publish → row in BigQuery (median, max) "
            f"| {statistics.median(latencies):.2f} s, {max(latencies):.2f} s |"
        )
        print(f"| throughput, {args.burst} messages published at once | {args.burst / (done - start):.1f} messages/s |")
    finally:
        if job is not None:
            job.send_signal(signal.SIGINT)
            try:
                job.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.kill()
        stop(pubsub)
        stop(bigquery)


if __name__ == "__main__":
    main()
