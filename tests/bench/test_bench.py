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
