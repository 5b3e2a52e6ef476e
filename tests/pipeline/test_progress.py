"""Progress of a local batch job: log lines while it runs, one updating line on a terminal."""

import collections
import gzip
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from pipeline import run
from pipeline.progress import BYTES, DEAD_LETTERED, READ, SCORED, CountProgress, progress_line, read_counts
from tests.support.paths import REPO_ROOT
from transforms.testing.captions import CAPTIONS


def test_progress_line_estimates_percent_and_time_left():
    counts = collections.Counter({READ: 500, BYTES: 50_000, SCORED: 240, DEAD_LETTERED: 10})
    line = progress_line(counts, rate=5.0, total_bytes=200_000)
    # 500 records in a quarter of the bytes: about 2,000 in all; 250 through: 12.5%; 1,750 left at 5/s.
    assert line == "500 records read, 240 scored or failed, 12.5% done, 5.0 records/s, about 5m50s left"
    assert progress_line(counts, rate=None, total_bytes=None) == "500 records read, 240 scored or failed"
    everything = collections.Counter({READ: 10, BYTES: 100, SCORED: 10})
    assert progress_line(everything, rate=2.0, total_bytes=100).endswith("100.0% done, 2.0 records/s, about 0s left")


def test_input_size_is_known_only_for_uncompressed_files(tmp_path):
    from pipeline.io.parts import plan_parts
    from pipeline.plan import FileInput

    def jsonl_input(parts, todo):
        return FileInput("*.jsonl", "jsonl", parts, todo, 1 << 20, ("jpg",))

    (tmp_path / "a.jsonl").write_bytes(b"x" * 100)
    (tmp_path / "b.jsonl").write_bytes(b"y" * 50)
    parts = tuple(plan_parts(str(tmp_path / "*.jsonl"), part_bytes=40))
    assert jsonl_input(parts, parts).total_bytes() == 150 and len(parts) > 2
    assert jsonl_input(parts, parts[1:]).total_bytes() == 150 - (parts[0].end - parts[0].start)
    with gzip.open(tmp_path / "c.jsonl.gz", "wb") as stream:
        stream.write(b"{}\n")
    parts = tuple(plan_parts(str(tmp_path / "*")))
    assert jsonl_input(parts, parts).total_bytes() is None


@pytest.mark.slow
def test_counts_of_several_worker_processes_add_up(tmp_path):
    """Each process writes its own file; the monitor sums them (the multi-process local runner's case)."""
    code = (
        "import sys\nfrom pipeline.progress import CountProgress\n"
        "counter = CountProgress(sys.argv[1], 'read', with_bytes=True)\ncounter.setup()\n"
        "for _ in range(5):\n    list(counter.process(('f', b'abcd')))\ncounter.finish_bundle()\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT, check=True, timeout=60)
    here = CountProgress(str(tmp_path), SCORED)
    here.setup()
    assert list(here.process({"id": 1})) == [{"id": 1}]
    here.finish_bundle()
    assert read_counts(str(tmp_path)) == {READ: 10, BYTES: 50, SCORED: 1}


def _input(tmp_path, good_images, count=120) -> str:
    names = sorted(good_images)
    lines = [
        json.dumps(
            {"id": i, "image_path": str(good_images[names[i % len(names)]]), "text": CAPTIONS["long_200_tokens"]}
        )
        for i in range(count)
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines + ["not json"]) + "\n")
    return str(tmp_path / "in.jsonl")


@pytest.mark.slow
def test_a_local_job_logs_progress_while_it_runs(tmp_path, longclip_checkpoint, image_server, caplog):
    """Each image comes from a server that takes 0.1 s, two at a time: the job lasts about 6 s, whatever the
    machine, so progress lines must show it part-way."""
    lines = [
        json.dumps({"id": i, "image_path": f"{image_server.url}/slow/0.1/rgb.png?{i}", "text": CAPTIONS["short"]})
        for i in range(120)
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines + ["not json"]) + "\n")
    path = str(tmp_path / "in.jsonl")
    argv = ["--input", path, "--output", str(tmp_path / "out"), "--model", str(longclip_checkpoint)]
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(argv + ["--max_batch_size", "1", "--prepare_threads", "1"], progress_interval_secs=0.25)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Progress: ")]
    assert len(lines) >= 3, lines
    pattern = r"Progress: ([\d,]+) records read, ([\d,]+) scored or failed(, ([\d.]+)% done)?"
    parsed = [re.match(pattern, line).groups() for line in lines]
    read = [int(groups[0].replace(",", "")) for groups in parsed]
    assert read == sorted(read) and read[-1] <= 121
    midway = [line for line, groups in zip(lines, parsed, strict=True) if 0 < int(groups[1].replace(",", "")) < 120]
    assert midway, lines  # seen while it ran, not only at the end
    assert any(re.search(r"\d+\.\d% done, [\d.]+ records/s, about \S+ left", line) for line in midway), lines


@pytest.mark.slow
def test_a_parquet_job_counts_its_rows_as_they_are_read(tmp_path, longclip_checkpoint, image_server, caplog):
    """Parquet rows (like WebDataset samples) are not lines: they are tallied after the reader, so the
    progress line counts them while the job runs (no percent: the bytes of rows are not known)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = [f"{image_server.url}/slow/0.1/rgb.png?parquet-{i}" for i in range(80)]
    pq.write_table(pa.table({"image_path": urls, "text": [CAPTIONS["short"]] * 80}), tmp_path / "in.parquet")
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), "--model"]
    with caplog.at_level(logging.INFO, logger="pipeline"):
        run(
            argv + [str(longclip_checkpoint), "--max_batch_size", "1", "--prepare_threads", "1"],
            progress_interval_secs=0.25,
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Progress: ")]
    counts = [re.match(r"Progress: ([\d,]+) records read, ([\d,]+) scored", line).groups() for line in lines]
    midway = [line for line, (read, done) in zip(lines, counts, strict=True) if int(read) > 0 and 0 < int(done) < 80]
    assert midway, lines
    assert all("% done" not in line for line in lines)


@pytest.mark.slow
def test_a_terminal_gets_one_updating_line(tmp_path, longclip_checkpoint, good_images):
    path = _input(tmp_path, good_images, count=60)
    argv = ["--input", path, "--output", str(tmp_path / "out"), "--model", str(longclip_checkpoint)]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv, "--max_batch_size", "2"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the job closed the terminal
                break
            if not chunk:
                break
            output += chunk
    assert process.wait(timeout=60) == 0, output[-3000:]
    os.close(controller)
    text = output.decode("utf-8", "replace")
    updates = re.findall(r"\r\x1b\[KProgress: ([^\r\n]*)", text)
    assert len(updates) >= 2, text[-3000:]
    assert updates[-1].startswith("61 records read, 60 scored or failed, 100.0% done"), updates[-1]
    assert "Done: 61 records read" in text


def test_progress_folders_of_processes_that_are_gone_are_removed_at_the_start(tmp_path, monkeypatch):
    """A job killed with SIGKILL used to leave its progress folder in the temp dir for good."""
    import tempfile

    from pipeline.progress import ProgressMonitor

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"longclip-progress-{int(gone.stdout)}-abc"
    alive = tmp_path / f"longclip-progress-{os.getppid()}-def"  # a running process: kept
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "1.json").write_text("{}")
    monitor = ProgressMonitor(None, interval_secs=60)
    assert os.path.basename(monitor.folder).startswith(f"longclip-progress-{os.getpid()}-")
    with monitor:
        assert not dead.exists() and alive.exists()
    assert not os.path.exists(monitor.folder)
