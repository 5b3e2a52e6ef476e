"""The tests' own emulator start-up: a port taken between finding it free and binding it is not a failure."""

import socket

from tests.support import emulators
from tests.support.emulators import GCP_PROJECT, start_bigquery_emulator, stop


def test_the_bigquery_emulator_starts_on_other_ports_when_its_port_was_taken(tmp_path, monkeypatch):
    """Found in a full run: free_port() gave the emulator's gRPC port, another process bound it first, and
    every BigQuery test errored. The first port handed out here is held by a listening socket."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([emulators.free_port(), taken.getsockname()[1]])  # rest port free, gRPC port taken
    real_free_port = emulators.free_port
    monkeypatch.setattr(emulators, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        process, url = start_bigquery_emulator(tmp_path / "bq.log", GCP_PROJECT)
    finally:
        taken.close()
    try:
        assert b"Failed to bind" in (tmp_path / "bq.log").read_bytes(), "the first attempt met the taken port"
        host, port = url.removeprefix("http://").split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        stop(process)
