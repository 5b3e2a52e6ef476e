"""Finding a LongCLIP checkpoint from what the user passed as `model`.

Accepted: a Hugging Face Hub repo id (downloaded once into the Hub cache), a local file, a local
folder holding one checkpoint (or a Hugging Face CLIPModel), or any Beam FileSystems URI such as
`gs://` (copied once per machine into a local cache). Ambiguity is an error, never a silent pick.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Collection, Optional

from transforms.model.formats import HF_CONFIG, HF_WEIGHTS, SAFETENSORS_SUFFIX, STATE_DICT_SUFFIXES
from transforms.settings import DEFAULT_MODEL

CHECKPOINT_SUFFIXES = (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX)

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
        raise CheckpointNotFoundError("model is empty: pass a Hub id, a checkpoint file, a folder or a gs:// URI")
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
    """The folder itself when it is a Hugging Face CLIPModel, else its one checkpoint file (see `choose_files`)."""
    chosen = choose_files([p.name for p in folder.iterdir() if p.is_file()], str(folder))
    return folder if chosen[0] == HF_CONFIG else folder / chosen[0]


def choose_files(names: Collection[str], where: str) -> list[str]:
    """Which of a folder's (or Hub repo's) files make the checkpoint.

    A Hugging Face CLIPModel layout (`config.json` beside `model.safetensors`, `pytorch_model.bin` or
    a shard index) wins: it is `[config.json, weights]`. Otherwise the single `.pt`/`.bin`/`.ckpt`/
    `.safetensors` file; among several, the single one named like `longclip`; else an error.
    """
    if HF_CONFIG in names:
        weights = next((name for name in HF_WEIGHTS if name in names), None)
        if weights:
            return [HF_CONFIG, weights]
    candidates = sorted(name for name in names if name.lower().endswith(CHECKPOINT_SUFFIXES))
    if len(candidates) == 1:
        return candidates
    if not candidates:
        present = ", ".join(sorted(names)[:20]) or "nothing"
        raise CheckpointNotFoundError(
            f"no checkpoint ({'/'.join(CHECKPOINT_SUFFIXES)} file, or {HF_CONFIG} with "
            f"{' or '.join(HF_WEIGHTS[::2])}) in {where}; it holds: {present}"
        )
    named = [name for name in candidates if "longclip" in name.lower()]
    if len(named) == 1:
        return named
    listed = ", ".join(named or candidates)
    raise CheckpointNotFoundError(f"{where} holds several checkpoints ({listed}); pass the file itself as the model")


def _download_from_hub(repo_id: str) -> Path:
    """Downloads only the files `choose_files` picks from the repo's listing; offline, uses the Hub cache."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    try:
        names = [name for name in HfApi().list_repo_files(repo_id) if "/" not in name]
        chosen = choose_files(names, f"Hub repo {repo_id}")
        paths = [Path(hf_hub_download(repo_id, name)) for name in chosen]
        if chosen[-1].endswith(".index.json"):
            shards = set(json.loads(paths[-1].read_text(encoding="utf-8")).get("weight_map", {}).values())
            paths += [Path(hf_hub_download(repo_id, shard)) for shard in sorted(shards)]
        return paths[0].parent if chosen[0] == HF_CONFIG else paths[0]
    except CheckpointNotFoundError:
        raise
    except Exception as exc:
        try:  # offline, or the Hub unreachable: a copy downloaded earlier is as good
            return pick_checkpoint_in_folder(Path(snapshot_download(repo_id, local_files_only=True)))
        except CheckpointNotFoundError:
            raise
        except Exception:
            pass
        raise CheckpointNotFoundError(
            f"could not get checkpoint {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            f"Without network access, download it elsewhere (`hf download {repo_id}`) and pass the local "
            f'.pt file (or its folder, or a gs:// copy) as the model, e.g. model="/models/longclip-L@336px.pt"'
        ) from exc


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
