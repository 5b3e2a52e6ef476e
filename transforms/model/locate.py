"""Finding a LongCLIP checkpoint from what the user passed as `model`.

Accepted: a Hugging Face Hub repo id (downloaded once into the Hub cache), a local file, a local
folder holding one checkpoint (or a Hugging Face CLIPModel), or any Beam FileSystems URI such as
`gs://` (copied once per machine into a local cache). Ambiguity is an error, never a silent pick.

On a Beam SDK worker (Dataflow), remote checkpoints go to the worker's semi-persistent directory, which the
runner mounts from the VM into every SDK container: one copy per VM, not one per SDK process. An image can
carry them already (`LONGCLIP_PRELOADED_DIR`, filled at build time, see the Dockerfile): then none is copied.
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
from typing import Collection, Optional, Union

from transforms.model.formats import HF_CONFIG, HF_WEIGHTS, SAFETENSORS_SUFFIX, STATE_DICT_SUFFIXES
from transforms.settings import DEFAULT_MODEL

CHECKPOINT_SUFFIXES = (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX)

_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOGGER = logging.getLogger(__name__)
CACHE_DIR_ENV = "LONGCLIP_CACHE_DIR"
PRELOADED_DIR_ENV = "LONGCLIP_PRELOADED_DIR"
# Set by Beam's SDK container boot program: a folder the runner keeps on the VM (Dataflow mounts it from the
# host into every SDK container), where it also puts the staged files.
BEAM_WORKER_DIR_ENV = "SEMI_PERSISTENT_DIRECTORY"


class CheckpointNotFoundError(FileNotFoundError):
    """The `model` argument does not lead to exactly one checkpoint file; the message says how to fix it."""


def resolve_checkpoint(model: str, cache_dir: Optional[str] = None) -> Path:
    """Returns a local checkpoint path for `model`, downloading or copying it first if needed.

    Memoised per process, so that model refreshes back to a checkpoint seen before cost nothing.
    """
    return _resolve(str(model), cache_dir or default_cache_dir())


def default_cache_dir() -> str:
    """Where remote checkpoints are cached: `$LONGCLIP_CACHE_DIR`; on a Beam SDK worker, its semi-persistent
    directory, which every SDK container of the VM shares; else `~/.cache/longclip_beam`."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.environ[CACHE_DIR_ENV]
    if os.environ.get(BEAM_WORKER_DIR_ENV):
        return os.path.join(os.environ[BEAM_WORKER_DIR_ENV], "longclip_beam")
    return os.path.join(Path.home(), ".cache", "longclip_beam")


def is_hub_id(model: str) -> bool:
    """`owner/name` that is no local path and no URI: a Hugging Face Hub repo id."""
    local = Path(model).expanduser()
    return "://" not in model and not local.exists() and bool(_HUB_REPO_ID.match(model)) and not _looks_local(local)


def hub_cache_dir(cache_dir: str) -> Optional[str]:
    """The Hub cache to download into: Hugging Face's own (`HF_HOME`, `HF_HUB_CACHE`), unless this package's
    cache is chosen (`$LONGCLIP_CACHE_DIR`, or a Beam worker's shared directory): then `<cache>/huggingface`."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME"):
        return None
    if os.environ.get(CACHE_DIR_ENV) or os.environ.get(BEAM_WORKER_DIR_ENV):
        return os.path.join(cache_dir, "huggingface")
    return None


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
    if is_hub_id(model):
        return _download_from_hub(model, hub_cache_dir(cache_dir))
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


def _download_from_hub(repo_id: str, cache_dir: Optional[str] = None) -> Path:
    """Downloads only the files `choose_files` picks from the repo's listing; offline, uses the Hub cache.

    A copy the image was built with (`$LONGCLIP_PRELOADED_DIR`) is used without asking the Hub."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    preloaded = _preloaded_dir()
    if preloaded is not None:
        try:
            folder = snapshot_download(repo_id, local_files_only=True, cache_dir=str(preloaded / "huggingface"))
            return pick_checkpoint_in_folder(Path(folder))
        except Exception:
            pass  # not in the image: download as usual
    try:
        names = [name for name in HfApi().list_repo_files(repo_id) if "/" not in name]
        chosen = choose_files(names, f"Hub repo {repo_id}")
        paths = [Path(hf_hub_download(repo_id, name, cache_dir=cache_dir)) for name in chosen]
        if chosen[-1].endswith(".index.json"):
            shards = set(json.loads(paths[-1].read_text(encoding="utf-8")).get("weight_map", {}).values())
            paths += [Path(hf_hub_download(repo_id, shard, cache_dir=cache_dir)) for shard in sorted(shards)]
        return paths[0].parent if chosen[0] == HF_CONFIG else paths[0]
    except CheckpointNotFoundError:
        raise
    except Exception as exc:
        try:  # offline, or the Hub unreachable: a copy downloaded earlier is as good
            folder = snapshot_download(repo_id, local_files_only=True, cache_dir=cache_dir)
            return pick_checkpoint_in_folder(Path(folder))
        except CheckpointNotFoundError:
            raise
        except Exception:
            pass
        raise CheckpointNotFoundError(
            f"could not get checkpoint {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            f"Without network access, download it elsewhere (`hf download {repo_id}`) and pass the local "
            f'.pt file (or its folder, or a gs:// copy) as the model, e.g. model="/models/longclip-L@336px.pt"'
        ) from exc


def _preloaded_dir() -> Optional[Path]:
    value = os.environ.get(PRELOADED_DIR_ENV)
    return Path(value) if value and Path(value).is_dir() else None


def cache_path(uri: str, cache_dir: Union[str, Path]) -> Path:
    """Where the copy of a FileSystems URI lives in a cache (or a preloaded) directory."""
    folder = Path(cache_dir) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    return folder / (uri.rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pt")


def checkpoint_size(uri: str) -> int:
    """The size in bytes of the one file at a FileSystems URI; `CheckpointNotFoundError` if there is not one."""
    from apache_beam.io.filesystems import FileSystems

    try:
        matches = FileSystems.match([uri])[0].metadata_list
    except Exception as exc:
        raise CheckpointNotFoundError(f"cannot look up checkpoint {uri}: {exc}") from exc
    if len(matches) != 1:
        raise CheckpointNotFoundError(f"checkpoint {uri} matches {len(matches)} files; pass the URI of one file")
    return matches[0].size_in_bytes


def _copy_to_cache(uri: str, cache_dir: str) -> Path:
    """Copies a FileSystems URI to `cache_dir` once per machine; a file lock keeps processes (also in other SDK
    containers of the VM, where `cache_dir` is shared) from racing. A preloaded copy of the same size is used
    as it is."""
    from apache_beam.io.filesystems import FileSystems

    size = checkpoint_size(uri)
    preloaded = _preloaded_dir()
    if preloaded is not None and cache_path(uri, preloaded).is_file():
        if cache_path(uri, preloaded).stat().st_size == size:
            return cache_path(uri, preloaded)
        _LOGGER.warning("The image's copy of %s differs in size from the object now there; copying it", uri)
    target = cache_path(uri, cache_dir)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
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
