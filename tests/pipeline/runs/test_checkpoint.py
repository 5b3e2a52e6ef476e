"""The checkpoint's identity in the run record: SHA-256 of the very bytes, for files, folders, Hub ids (offline,
from the Hub cache, in a fresh process as huggingface_hub reads HF_HUB_OFFLINE at import) and gs:// objects."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline.runs.checkpoint import combined_sha256, hub_revision, identify
from tests.support.paths import REPO_ROOT
from transforms.testing.checkpoints import save_huggingface_clip


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_local_file_is_hashed_whole(longclip_checkpoint):
    found = identify(str(longclip_checkpoint), local=True)
    assert found["sha256"] == _sha256(longclip_checkpoint)
    assert found["size_bytes"] == longclip_checkpoint.stat().st_size
    (entry,) = found["files"]
    assert entry == {"name": longclip_checkpoint.name, "size_bytes": found["size_bytes"], "sha256": found["sha256"]}
    assert found["resolved"] == str(longclip_checkpoint) and found["hub_revision"] is None


@pytest.mark.slow
def test_a_huggingface_folder_is_hashed_file_by_file(tmp_path):
    folder = save_huggingface_clip(tmp_path / "hf-clip")
    (folder / "README.md").write_text("not part of the checkpoint")
    found = identify(str(folder), local=True)
    names = [entry["name"] for entry in found["files"]]
    assert names[0] == "config.json" and "README.md" not in names and len(names) == 2
    assert [entry["sha256"] for entry in found["files"]] == [_sha256(folder / name) for name in names]
    lines = "".join(f"{_sha256(folder / name)}  {name}\n" for name in names)
    assert found["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    (folder / names[1]).write_bytes((folder / names[1]).read_bytes() + b"\0")
    assert identify(str(folder), local=True)["sha256"] != found["sha256"]  # the weights' bytes count


def test_combined_hash_is_unknown_when_a_file_is():
    assert combined_sha256([{"name": "a", "size_bytes": 1, "sha256": None}]) is None
    assert combined_sha256([]) is None


def test_hub_revision_from_a_hub_cache_path(tmp_path):
    path = tmp_path / "hub" / "models--owner--name" / "snapshots" / ("ab" * 20) / "model.pt"
    assert hub_revision(path) == "ab" * 20
    assert hub_revision(tmp_path / "snapshots" / "x" / "model.pt") is None  # not a Hub cache


@pytest.mark.slow
def test_a_hub_id_records_the_snapshot_revision_offline(tmp_path, longclip_checkpoint):
    repo = tmp_path / "hf" / "hub" / "models--BeichenZhang--LongCLIP-B"
    snapshot = repo / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    shutil.copy(longclip_checkpoint, snapshot / "longclip-B.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    code = (
        "import json; from pipeline.runs.checkpoint import identify; "
        "print(json.dumps([identify('BeichenZhang/LongCLIP-B', local=local) for local in (True, False)]))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    here, remote = json.loads(done.stdout.strip().splitlines()[-1])
    for found in (here, remote):
        assert found["hub_revision"] == "cd" * 20 and found["sha256"] == _sha256(longclip_checkpoint)
    assert "machine load" in here["hashed"]
    # For a remote runner the Hub is asked first; offline, the launcher's cache is what there is, and it says so.
    assert "Hub cache" in remote["hashed"] and "could not be asked" in remote["hashed"]


@pytest.mark.slow
def test_a_gs_checkpoint_for_remote_workers_is_hashed_from_the_same_uri(gcs_bucket, longclip_checkpoint):
    blob = gcs_bucket.blob("models/for-run-record.pt")
    blob.upload_from_filename(str(longclip_checkpoint))
    uri = f"gs://{gcs_bucket.name}/models/for-run-record.pt"
    found = identify(uri, local=False)
    assert found["sha256"] == _sha256(longclip_checkpoint) and found["resolved"] is None
    assert found["size_bytes"] == longclip_checkpoint.stat().st_size and "same URI" in found["hashed"]
