"""The tests' own emulator start-up: no port it needs can be taken between being found free and being bound."""

import socket
import subprocess

import pytest

from transforms.testing import emulators
from transforms.testing.emulators import GCP_PROJECT, start_bigquery_emulator, stop


@pytest.mark.slow
def test_the_bigquery_emulator_stays_up_when_the_next_free_port_is_taken(tmp_path, monkeypatch):
    """Found in a full run: free_port() gave the emulator's gRPC port, another process bound it first, the
    emulator exited with 'Failed to bind' and every BigQuery test errored. Here every port free_port() hands
    out after the first is held by another socket."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    first = iter([emulators.free_port()])
    monkeypatch.setattr(emulators, "free_port", lambda: next(first, taken.getsockname()[1]))
    try:
        process, _ = start_bigquery_emulator(tmp_path / "bq.log", GCP_PROJECT)
        try:
            with pytest.raises(subprocess.TimeoutExpired):  # it serves on; it does not exit after a while
                process.wait(timeout=3)
            assert b"Failed to bind" not in (tmp_path / "bq.log").read_bytes()
        finally:
            stop(process)
    finally:
        taken.close()
