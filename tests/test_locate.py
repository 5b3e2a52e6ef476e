"""Finding the checkpoint file from `model`: Hub id, folder, file; ambiguity and offline are clear errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from transforms.model.locate import CheckpointNotFoundError, pick_checkpoint_in_folder, resolve_checkpoint


def _resolve_in_fresh_process(model: str, hf_home: Path) -> subprocess.CompletedProcess:
    """huggingface_hub reads HF_HUB_OFFLINE at import, so Hub cases run as a user would: a new process."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    code = "import sys; from transforms.model.locate import resolve_checkpoint; print(resolve_checkpoint(sys.argv[1]))"
    return subprocess.run(
        [sys.executable, "-c", code, model], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_local_file(longclip_checkpoint):
    assert resolve_checkpoint(str(longclip_checkpoint)) == longclip_checkpoint


def test_folder_with_one_checkpoint(tmp_path, longclip_checkpoint):
    shutil.copy(longclip_checkpoint, tmp_path / "weights.bin")
    (tmp_path / "README.md").write_text("notes")
    assert resolve_checkpoint(str(tmp_path)) == tmp_path / "weights.bin"


def test_folder_with_several_prefers_the_longclip_one(tmp_path):
    for name in ("optimizer.ckpt", "LongCLIP-L.pt", "other.bin"):
        (tmp_path / name).write_bytes(b"x")
    assert pick_checkpoint_in_folder(tmp_path) == tmp_path / "LongCLIP-L.pt"


def test_ambiguous_folder_lists_candidates_instead_of_picking(tmp_path):
    for name in ("longclip-B.pt", "longclip-L.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match=r"longclip-B\.pt, longclip-L\.pt.*pass the file itself"):
        pick_checkpoint_in_folder(tmp_path)


def test_folder_without_checkpoint_says_what_it_holds(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint.*config\.json"):
        pick_checkpoint_in_folder(tmp_path)


@pytest.mark.parametrize("model", ["no/such/local/file.pt", "checkpoints/longclip-L.pt", "tests/no-such-model"])
def test_missing_local_path_is_not_mistaken_for_a_hub_id(model):
    # "checkpoints/longclip-L.pt" has the owner/name shape of a Hub id, but is a mistyped file.
    with pytest.raises(CheckpointNotFoundError, match="is not an existing file or folder"):
        resolve_checkpoint(model)


def test_hub_id_offline_without_cache_says_how_to_pass_a_local_file(tmp_path):
    done = _resolve_in_fresh_process("BeichenZhang/LongCLIP-L-336px", tmp_path / "hf")
    assert done.returncode != 0
    assert "CheckpointNotFoundError" in done.stderr
    assert "hf download BeichenZhang/LongCLIP-L-336px" in done.stderr and 'model="/models/' in done.stderr


def test_hub_id_is_served_from_the_hub_cache(tmp_path, longclip_checkpoint):
    # The Hugging Face cache layout that `hf download BeichenZhang/LongCLIP-B` leaves behind.
    repo = tmp_path / "hf" / "hub" / "models--BeichenZhang--LongCLIP-B"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    shutil.copy(longclip_checkpoint, snapshot / "longclip-B.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    done = _resolve_in_fresh_process("BeichenZhang/LongCLIP-B", tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == snapshot / "longclip-B.pt"
