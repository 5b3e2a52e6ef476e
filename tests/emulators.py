"""Starting real local emulators for the tests, on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


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
