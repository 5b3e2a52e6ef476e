"""A Beam FileSystems scheme, `flaky://`, that fails the way remote storage does, over local files.

Beam finds every `FileSystem` subclass once its module is imported, so importing this module registers
the scheme. `flaky://N/KIND/PATH` reads the local file PATH after failing its first N opens with KIND:
`reset` (a connection reset), `503` / `403` (google-api-core errors, as the GCS client raises them, with
the server's body in their message), or `stall` (blocks 30 s, as a storage client stuck in its own retries).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.localfilesystem import LocalFileSystem
from google.api_core import exceptions as api_exceptions

SERVER_BODY = "SECRET-STORAGE-ERROR-BODY"


class FlakyFileSystem(LocalFileSystem):
    opens: Counter = Counter()
    _lock = threading.Lock()

    @classmethod
    def scheme(cls):
        return "flaky"

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        failures, kind, local = self._parse(path)
        with self._lock:
            self.opens[path] += 1
            failing = self.opens[path] <= failures
        if failing:
            if kind == "reset":
                raise BeamIOError("open failed", {path: ConnectionResetError(104, "Connection reset by peer")})
            if kind == "stall":
                time.sleep(30)
            error = {"503": api_exceptions.ServiceUnavailable, "403": api_exceptions.Forbidden}[kind]
            raise error(f"GET https://storage/{local}: {SERVER_BODY}")
        return super().open(local, mime_type, compression_type)

    def exists(self, path):
        return super().exists(self._parse(path)[2])

    @staticmethod
    def _parse(path: str) -> tuple[int, str, str]:
        failures, kind, local = path[len("flaky://") :].split("/", 2)
        return int(failures), kind, "/" + local
