"""Finding the checkpoint file from `model`: Hub id, folder, file; ambiguity and offline are clear errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT
from transforms.model.locate import (
    CheckpointNotFoundError,
    cache_path,
    default_cache_dir,
    hub_cache_dir,
    pick_checkpoint_in_folder,
    resolve_checkpoint,
)


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


def _resolve_gs(uri: str, env: dict) -> subprocess.Popen:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO); "
        "from transforms.model.locate import resolve_checkpoint; print(resolve_checkpoint(sys.argv[1]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, uri],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sdk_containers_of_a_vm_share_one_copy(gcs_bucket, longclip_checkpoint, tmp_path):
    """Two SDK processes, each with its own home (a container's own ~/.cache), started at once with the
    semi-persistent directory Beam's boot program gives them (Dataflow mounts it from the VM): one copy."""
    gcs_bucket.blob("locate/shared.pt").upload_from_filename(longclip_checkpoint)
    uri = f"gs://{gcs_bucket.name}/locate/shared.pt"
    shared = tmp_path / "var-opt-google"
    env = {"SEMI_PERSISTENT_DIRECTORY": str(shared), "PYTHONPATH": str(REPO_ROOT)}
    processes = [_resolve_gs(uri, {**env, "HOME": str(tmp_path / f"home{i}")}) for i in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-2000:] for _, err in outputs]
    paths = {Path(out.strip()) for out, _ in outputs}
    assert len(paths) == 1 and next(iter(paths)).is_relative_to(shared / "longclip_beam")
    assert sum(err.count("Copying checkpoint") for _, err in outputs) == 1  # the other waited for it
    assert [p for p in shared.rglob("*") if p.is_file() and p.name != ".lock"] == list(paths)
    assert not (tmp_path / "home0" / ".cache").exists() and not (tmp_path / "home1" / ".cache").exists()


def test_a_copy_baked_into_the_image_is_used_as_it_is(gcs_bucket, longclip_checkpoint, tmp_path, monkeypatch):
    gcs_bucket.blob("locate/baked.pt").upload_from_filename(longclip_checkpoint)
    uri = f"gs://{gcs_bucket.name}/locate/baked.pt"
    preloaded = tmp_path / "opt-longclip-preloaded"
    baked = resolve_checkpoint(uri, cache_dir=str(preloaded))  # what the Dockerfile's MODEL build argument runs
    assert baked == cache_path(uri, preloaded)
    monkeypatch.setenv("LONGCLIP_PRELOADED_DIR", str(preloaded))
    assert resolve_checkpoint(uri, cache_dir=str(tmp_path / "worker-cache")) == baked
    assert not (tmp_path / "worker-cache").exists()


def test_cache_directories(monkeypatch, tmp_path):
    for name in ("LONGCLIP_CACHE_DIR", "SEMI_PERSISTENT_DIRECTORY", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    assert default_cache_dir() == str(Path.home() / ".cache" / "longclip_beam")
    assert hub_cache_dir(default_cache_dir()) is None  # Hugging Face's own cache on a laptop
    monkeypatch.setenv("SEMI_PERSISTENT_DIRECTORY", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "longclip_beam")
    assert hub_cache_dir(default_cache_dir()) == str(tmp_path / "longclip_beam" / "huggingface")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir(default_cache_dir()) is None  # the user's choice wins
    monkeypatch.setenv("LONGCLIP_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")
