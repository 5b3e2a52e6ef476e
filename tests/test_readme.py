"""The README's Python example is a real file, and runs as written."""

import os
import shutil
import subprocess
import sys

from tests.support.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "score_in_your_pipeline.py"


def test_readme_shows_the_example_file_as_it_is():
    assert EXAMPLE.read_text(encoding="utf-8") in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_example_runs_as_written(tmp_path, longclip_checkpoint):
    """Its default model is the Hub id; offline, the Hub cache that `hf download` leaves serves it."""
    repo = tmp_path / "hf" / "hub" / "models--BeichenZhang--LongCLIP-L-336px"
    snapshot = repo / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    shutil.copy(longclip_checkpoint, snapshot / "longclip-L@336px.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],  # as the README says; offline, Beam falls back from Prism by itself
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == 3 and lines[2] == "3 failed: image_not_found", lines
    for line, record_id in zip(lines[:2], ("1", "2"), strict=True):
        printed_id, score = line.split()
        assert printed_id == record_id and 0 < float(score) < 1
