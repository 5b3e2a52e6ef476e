"""Progress of a local batch job: records read and scored, the rate, percent done and time left.

Why a folder of files rather than Beam metrics: the FnApiRunner runs a batch job inside `pipeline.run()`
and commits a stage's metrics only when its bundle ends (one bundle per stage, here), so polling them
shows nothing until the end. Instead, pass-through steps count records as they go by and each worker
process rewrites its totals to `<folder>/<pid>.json` at most twice a second; the launcher thread sums the
files. This works the same for every local running mode (in memory, threads, worker processes).

On Dataflow the steps are left out; the same figures are Beam counters there: `pipeline/read`,
`pipeline/input_bytes_read` and `pipeline/input_bytes` (percent done), and the scoring step's
`scored` and `failed` (their rate is shown by Dataflow's monitoring).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from typing import Optional, TextIO

import apache_beam as beam

from pipeline.io.lines import line_bytes

_LOGGER = logging.getLogger("pipeline")

READ = "read"
BYTES = "bytes"
SCORED = "scored"  # out of the scoring step, scored or failed
DEAD_LETTERED = "dead_lettered"
_WRITE_EVERY_SECS = 0.5


class _ProcessTally:
    """This process's counts for one progress folder, written to `<folder>/<pid>.json` now and then."""

    def __init__(self, folder: str):
        self._path = os.path.join(folder, f"{os.getpid()}.json")
        self._counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._written = 0.0

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            self._counts[name] += amount
            if time.monotonic() - self._written >= _WRITE_EVERY_SECS:
                self._write()

    def flush(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        temporary = f"{self._path}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as stream:
                json.dump(self._counts, stream)
            os.replace(temporary, self._path)
        except OSError:  # the folder is gone: the launcher stopped watching
            pass


_TALLIES: dict[str, _ProcessTally] = {}
_TALLIES_LOCK = threading.Lock()


def _tally(folder: str) -> _ProcessTally:
    with _TALLIES_LOCK:
        if folder not in _TALLIES:
            _TALLIES[folder] = _ProcessTally(folder)
        return _TALLIES[folder]


class CountProgress(beam.DoFn):
    """Passes elements through, counting them (and, for `(source, line)` pairs, their bytes) for the monitor."""

    def __init__(self, folder: str, name: str, with_bytes: bool = False):
        self._folder = folder
        self._name = name
        self._with_bytes = with_bytes

    def setup(self) -> None:
        self._tally = _tally(self._folder)

    def process(self, element):
        self._tally.add(self._name, 1)
        if self._with_bytes:
            self._tally.add(BYTES, line_bytes(element[1]) + 1)  # the line and its newline
        yield element

    def finish_bundle(self) -> None:
        self._tally.flush()


def read_counts(folder: str) -> collections.Counter:
    """The sum of every worker process's counts in `folder` (a file being replaced is skipped this time)."""
    total: collections.Counter = collections.Counter()
    for name in os.listdir(folder):
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as stream:
                    total.update(json.load(stream))
            except (OSError, ValueError):
                continue
    return total


def progress_line(counts: collections.Counter, rate: Optional[float], total_bytes: Optional[int]) -> str:
    """E.g. `1,200 records read, 1,180 scored or failed, 41.5% done, 12.3 records/s, about 2m10s left`."""
    read, done, read_bytes = counts[READ], _done(counts), counts[BYTES]
    parts = [f"{read:,} records read", f"{counts[SCORED]:,} scored or failed"]
    expected = None
    if total_bytes and read_bytes:
        expected = read if read_bytes >= total_bytes else read * total_bytes / read_bytes
        parts.append(f"{min(100.0, 100.0 * done / expected):.1f}% done")
    if rate is not None:
        parts.append(f"{rate:.1f} records/s")
        if expected is not None and rate > 0:
            parts.append(f"about {_duration(max(0.0, expected - done) / rate)} left")
    return ", ".join(parts)


def _done(counts: collections.Counter) -> int:
    return counts[SCORED] + counts[DEAD_LETTERED]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


_FOLDER_PREFIX = "longclip-progress-"


def _remove_abandoned_folders() -> None:
    """Progress folders of jobs whose process is gone (killed with SIGKILL, so their monitor never cleaned up):
    each folder is named after the launching process's id."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        match = re.fullmatch(rf"{_FOLDER_PREFIX}(\d+)-\w+", name)
        if match and not _running(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class ProgressMonitor:
    """Shows a local job's progress while it runs: on a terminal one line rewritten every second, otherwise
    a log line every `interval_secs`. Use as a context manager around `pipeline.run()`."""

    RATE_WINDOW_SECS = 30.0

    def __init__(self, total_bytes: Optional[int], interval_secs: float = 10.0, stream: Optional[TextIO] = None):
        _remove_abandoned_folders()
        self.folder = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
        self._total_bytes = total_bytes
        self._interval = interval_secs
        self._stream = stream or sys.stderr
        self._terminal = self._stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="progress", daemon=True)
        self._samples: collections.deque = collections.deque()

    def __enter__(self) -> "ProgressMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._terminal:
            self._stream.write(f"\r\x1b[KProgress: {self._line()}\n")
            self._stream.flush()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _watch(self) -> None:
        tick = 1.0 if self._terminal else self._interval
        while not self._stop.wait(tick):
            line = self._line()
            if self._terminal:
                self._stream.write(f"\r\x1b[KProgress: {line}")
                self._stream.flush()
            else:
                _LOGGER.info("Progress: %s", line)

    def _line(self) -> str:
        counts = read_counts(self.folder)
        now = time.monotonic()
        self._samples.append((now, _done(counts)))
        while now - self._samples[0][0] > self.RATE_WINDOW_SECS:
            self._samples.popleft()
        (first_time, first_done), rate = self._samples[0], None
        if now > first_time:
            rate = (_done(counts) - first_done) / (now - first_time)
        return progress_line(counts, rate, self._total_bytes)
