"""The benchmarks still run against the code as it is (their numbers are theirs to judge, not a test's)."""

import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT


@pytest.mark.slow
def test_the_format_and_embeddings_bench_runs_end_to_end(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.formats", "--arch", "tiny", "--pairs", "4", "--repeats", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"LONGCLIP_BENCH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("WebDataset inline images / JSONL image paths", "with --embeddings / without"):
        assert f"| {row} " in done.stdout, done.stdout
    assert "max |score diff|     | 0.0e+00" in done.stdout, "the same scores whichever reader and outputs"


@pytest.mark.slow
def test_the_long_captions_bench_runs_and_counts_the_towers_work(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.long_captions", "--arch", "tiny", "--pairs", "4", "--repeats", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"LONGCLIP_BENCH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("chunks / truncate, captions that fit", "chunks / truncate, 600-token captions"):
        assert f"| {row} " in done.stdout, done.stdout
    # Each image once per record, whatever the mode; chunks read every token of a 600-token caption.
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert sum("image-tower passes per record 1.00" in line for line in table) == 6, done.stdout
    long = [line for line in table if line.startswith("| 600-token captions, chunks")]
    assert long and int(long[0].split("text-tower tokens per record ")[1].split(",")[0]) > 600
