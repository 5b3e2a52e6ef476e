"""Shared fixtures: tiny checkpoints in the real LongCLIP/OpenAI format, and real image files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from transforms.testing.checkpoints import save_checkpoint
from transforms.testing.emulators import GCP_PROJECT
from transforms.testing.images import write_bad_images, write_good_images

# Property-based tests: no example database in the work tree; the same examples on every CI run (a failure
# there is reproducible); no per-example deadline on a shared, busy machine. Each test sets its own count.
settings.register_profile(
    "longclip",
    database=None,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("longclip")


EMULATOR_FIXTURES = {"gcs_emulator", "gcs_bucket", "pubsub_emulator", "bigquery_emulator"}


def pytest_collection_modifyitems(items) -> None:
    """Tests that start an emulator are marked `emulator`, from the fixtures they use (`make test-fast` skips
    them; `make test`, as CI runs it, runs everything)."""
    for item in items:
        if EMULATOR_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulator)


@pytest.fixture(scope="session")
def longclip_checkpoint(tmp_path_factory) -> Path:
    """A tiny LongCLIP-format checkpoint (248-row tables, both present and different)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt", seed=1)


@pytest.fixture(scope="session")
def longclip_state_dict(longclip_checkpoint) -> dict:
    return torch.load(longclip_checkpoint, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory) -> Path:
    """A tiny plain OpenAI-CLIP ViT checkpoint: 77-row table, no positional_embedding_res."""
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "clip-tiny.pt", seed=2, context_length=77, with_residual_table=False
    )


@pytest.fixture(scope="session")
def good_images(tmp_path_factory) -> dict[str, Path]:
    return write_good_images(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory) -> dict[str, Path]:
    return write_bad_images(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A real local GCS API emulator; Beam's `gs://` FileSystem talks to it. Yields its process (tests
    may pause it to stall every read).

    The environment is set for this process and inherited by the subprocesses tests start.
    """
    from transforms.testing.emulators import start_gcs_emulator

    process, endpoint = start_gcs_emulator(tmp_path_factory.mktemp("gcs") / "emulator.log")
    saved = {key: os.environ.get(key) for key in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    os.environ["NO_GCE_CHECK"] = "True"  # offline: don't wait for the GCE metadata server
    try:
        yield process
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def gcs_bucket(gcs_emulator):
    """A bucket on the GCS emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    return client.create_bucket("longclip-test-bucket")


@pytest.fixture
def restore_environ():
    """Environment variables a test sets (emulator hosts) are undone after it."""
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory) -> str:
    """Google's real Pub/Sub emulator on a free port; returns its host:port for PUBSUB_EMULATOR_HOST."""
    from transforms.testing.emulators import start_pubsub_emulator, stop

    process, host = start_pubsub_emulator(tmp_path_factory.mktemp("pubsub") / "emulator.log")
    try:
        yield host
    finally:
        stop(process)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> str:
    """The real BigQuery API emulator (bqemulator) on a free port; returns its URL for BIGQUERY_EMULATOR_HOST."""
    from transforms.testing.emulators import start_bigquery_emulator, stop

    process, endpoint = start_bigquery_emulator(tmp_path_factory.mktemp("bigquery") / "emulator.log", GCP_PROJECT)
    try:
        yield endpoint
    finally:
        stop(process)


@pytest.fixture(scope="session")
def scored_report(tmp_path_factory, good_images):
    """`python -m pipeline.report` over 3,000 scored rows (a JSONL and a Parquet file, plus one line that is
    not JSON) with real image files; the lowest-scoring row's image is missing and the highest-scoring
    row's image is served over http on loopback. Returns (rows, report folder, summary)."""
    import functools
    import http.server
    import threading

    from pipeline.report.job import run
    from tests.support.scored import make_scored_rows, write_jsonl, write_parquet

    folder = tmp_path_factory.mktemp("report")
    images = [str(good_images[name]) for name in sorted(good_images)]
    rows = make_scored_rows(3000, images)
    scored = sorted((row for row in rows if row["longclip_score_reason"] is None), key=lambda r: r["longclip_score"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(good_images["rgb.png"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scored[0]["image_path"] = str(folder / "no_such_image.png")
        scored[-1]["image_path"] = f"http://127.0.0.1:{server.server_address[1]}/rgb.jpg"
        jsonl = write_jsonl(folder / "in" / "scored-00000-of-00002.jsonl", rows[:2000])
        with jsonl.open("a") as stream:
            stream.write("this line is not JSON\n")
        write_parquet(folder / "in" / "scored-00001-of-00002.parquet", rows[2000:])
        summary = run(["--input", str(folder / "in" / "scored-*"), "--output", str(folder / "report")])
    finally:
        server.shutdown()
        server.server_close()
    return rows, folder / "report", summary


@pytest.fixture(scope="session")
def image_server(good_images):
    """A real HTTP server on loopback with good, slow, broken, flaky and redirecting paths (see ImageServer)."""
    from tests.support.http_servers import ImageServer

    server = ImageServer({name: path.read_bytes() for name, path in good_images.items()})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def silent_server():
    """A loopback address that accepts connections and never answers."""
    from tests.support.http_servers import SilentServer

    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
