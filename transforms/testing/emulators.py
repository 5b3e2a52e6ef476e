"""Starting real local emulators for the tests, on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

GCP_PROJECT = "test-project"  # Beam checks Pub/Sub project ids: 6 to 63 characters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"emulator did not listen on port {port} within {timeout}s: {log.read_text()[-2000:]}")


def start_gcs_emulator(log: Path) -> tuple[subprocess.Popen, str]:
    """Google Cloud Storage API emulator (PyPI `gcp-storage-emulator`, in requirements.txt), in memory."""
    binary = Path(sys.executable).parent / "gcp-storage-emulator"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: install requirements.txt (make test does)")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_port(port, process, log)
    return process, f"http://127.0.0.1:{port}"


PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def start_pubsub_emulator(log: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """Google's Pub/Sub emulator (apt `google-cloud-cli-pubsub-emulator`, Java), in memory; returns host:port.

    `port`: a given one (to start it again where a job expects it), else a free one."""
    binary = Path(shutil.which("cloud-pubsub-emulator") or PUBSUB_EMULATOR)
    if not binary.exists():
        raise RuntimeError(
            "the Pub/Sub emulator is missing: install the apt package google-cloud-cli-pubsub-emulator (and Java)"
        )
    port = port or free_port()
    process = subprocess.Popen(
        [str(binary), "--host=127.0.0.1", f"--port={port}"],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the script starts java as a child: stop the whole group
    )
    wait_for_port(port, process, log)
    return process, f"127.0.0.1:{port}"


BIGQUERY_EMULATOR_VENV = Path(__file__).resolve().parents[2] / ".venv-bqemulator"


def start_bigquery_emulator(
    log: Path, project: str, port: int = 0, data_dir: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """The BigQuery API emulator (PyPI `bqemulator`, DuckDB), from its own venv (`make test` builds it).

    In memory, or with `data_dir` kept in that folder, so that it can be stopped and started again (on the
    same `port`) without losing its tables."""
    python = BIGQUERY_EMULATOR_VENV / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: `make bqemulator` (or `make test`) installs the BigQuery emulator")
    port = port or free_port()
    home = log.parent / "home"
    home.mkdir(exist_ok=True)  # DuckDB writes under HOME
    storage = ["--persistent", "--data-dir", str(data_dir)] if data_dir else []
    process = subprocess.Popen(
        [str(python), str(Path(__file__).with_name("bqemulator_launcher.py")), "start", "--rest-port", str(port)]
        # gRPC (unused here) on a port the OS picks as it binds: one found free beforehand can be taken by
        # another process (a test's Beam runner) in the seconds the emulator starts, and it then exits.
        + ["--grpc-port", "0", "--project", project, "--log-level", "warning", *storage],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(home)},
        start_new_session=True,
    )
    wait_for_port(port, process, log)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    """Stops an emulator and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
