"""Finding a LongCLIP checkpoint file from what the user passed as `model`.

Accepted: a Hugging Face Hub repo id (downloaded once into the Hub cache), a local file, a local
folder holding one checkpoint, or any Beam FileSystems URI such as `gs://` (copied once per
machine into a local cache). Ambiguity is an error, never a silent pick.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

DEFAULT_MODEL = "BeichenZhang/LongCLIP-L-336px"
CHECKPOINT_SUFFIXES = (".pt", ".bin", ".ckpt")

_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOGGER = logging.getLogger(__name__)


class CheckpointNotFoundError(FileNotFoundError):
    """The `model` argument does not lead to exactly one checkpoint file; the message says how to fix it."""


def resolve_checkpoint(model: str, cache_dir: Optional[str] = None) -> Path:
    """Returns a local checkpoint path for `model`, downloading or copying it first if needed.

    Memoised per process so that the preprocessing step and the model handler of one worker share
    one download.
    """
    return _resolve(str(model), cache_dir or default_cache_dir())


def default_cache_dir() -> str:
    """Where remote checkpoints are cached: `$LONGCLIP_CACHE_DIR`, else `~/.cache/longclip_beam`."""
    return os.environ.get("LONGCLIP_CACHE_DIR") or os.path.join(Path.home(), ".cache", "longclip_beam")


@functools.lru_cache(maxsize=None)
def _resolve(model: str, cache_dir: str) -> Path:
    if not model.strip():
        raise CheckpointNotFoundError("--model is empty: pass a Hub id, a checkpoint file, a folder or a gs:// URI")
    local = Path(model).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        return pick_checkpoint_in_folder(local)
    if "://" in model:
        return _copy_to_cache(model, cache_dir)
    if _HUB_REPO_ID.match(model) and not _looks_local(local):
        return _download_from_hub(model)
    raise CheckpointNotFoundError(
        f"model {model!r} is not an existing file or folder, a gs:// (or other Beam FileSystems) URI, "
        f"or a Hugging Face Hub id like {DEFAULT_MODEL!r}"
    )


def _looks_local(path: Path) -> bool:
    """`models/longclip-L.pt` is a missing file, not a Hub repo, and so is `runs/x` when `runs/` exists."""
    return path.suffix.lower() in CHECKPOINT_SUFFIXES or (path.parent.is_dir() and str(path.parent) not in ("", "."))


def pick_checkpoint_in_folder(folder: Path) -> Path:
    """The folder's single `.pt`/`.bin`/`.ckpt` file; among several, the single one named like `longclip`."""
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "nothing"
        raise CheckpointNotFoundError(
            f"no checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)}) in folder {folder}; it holds: {present}"
        )
    named = [p for p in candidates if "longclip" in p.name.lower()]
    if len(named) == 1:
        return named[0]
    listed = ", ".join(p.name for p in (named or candidates))
    raise CheckpointNotFoundError(
        f"folder {folder} holds several checkpoints ({listed}); pass the file itself as the model"
    )


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(repo_id, allow_patterns=[f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES])
    except Exception as exc:
        raise CheckpointNotFoundError(
            f"could not get checkpoint {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            f"Without network access, download it elsewhere (`hf download {repo_id}`) and pass the local "
            f".pt file (or its folder, or a gs:// copy) as the model, e.g. --model /models/longclip-L@336px.pt"
        ) from exc
    return pick_checkpoint_in_folder(Path(snapshot))


def _copy_to_cache(uri: str, cache_dir: str) -> Path:
    """Copies a FileSystems URI to `cache_dir` once per machine; a file lock keeps processes from racing."""
    from apache_beam.io.filesystems import FileSystems

    try:
        matches = FileSystems.match([uri])[0].metadata_list
    except Exception as exc:
        raise CheckpointNotFoundError(f"cannot look up checkpoint {uri}: {exc}") from exc
    if len(matches) != 1:
        raise CheckpointNotFoundError(f"checkpoint {uri} matches {len(matches)} files; pass the URI of one file")
    size = matches[0].size_in_bytes
    folder = Path(cache_dir) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (uri.rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pt")
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and target.stat().st_size == size:
            return target
        _LOGGER.info("Copying checkpoint %s (%d bytes) to %s", uri, size, target)
        with (
            FileSystems.open(uri, compression_type="uncompressed") as source,
            tempfile.NamedTemporaryFile(dir=folder, delete=False) as partial,
        ):
            shutil.copyfileobj(source, partial, length=16 * 1024 * 1024)
        os.chmod(partial.name, 0o644)
        os.replace(partial.name, target)
    return target
