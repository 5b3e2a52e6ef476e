"""The checkpoint a run scored with, as bytes: SHA-256 and size of each file the model is loaded from, and the
Hugging Face Hub revision when it came from the Hub.

Where the hash comes from (the record's `hashed` says which):

- local runners: the launcher hashes the file(s) `resolve_checkpoint` gives, the very path the workers on
  this machine load (a Hub id: the snapshot in the Hub cache, whose folder names the revision);
- other runners with a URI (`gs://...`): the launcher reads the object once, before the job starts, from
  the same URI the workers copy (a changed object in between would not be seen);
- other runners with a Hub id: the Hub's own SHA-256 of each file at the revision it serves now (no
  download; workers download that repo when they start); offline, the launcher's Hub cache, if it holds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import IO, Any, Optional

from transforms.inputs.locations import has_scheme, redact
from transforms.model.formats import HF_CONFIG
from transforms.model.locate import choose_files, is_hub_id, pick_checkpoint_in_folder, resolve_checkpoint

_LOGGER = logging.getLogger(__name__)
_CHUNK = 16 * 1024 * 1024


def identify(model: str, *, local: bool) -> dict[str, Any]:
    """The run record's `checkpoint` object for `model` (as `--model` names it)."""
    revision: Optional[str] = None
    if local or not (has_scheme(model) or is_hub_id(model)):
        path = resolve_checkpoint(model)
        files = _hash_local(path)
        if is_hub_id(model):
            revision = hub_revision(path)
        how = "by the launcher, from the file(s) the workers on this machine load"
        resolved: Optional[str] = str(path)
    elif has_scheme(model):
        files = [_hash_uri(model)]
        how = "by the launcher, reading the object once before the job started; workers copy the same URI"
        resolved = None
    else:
        files, revision, how, resolved = _from_hub(model)
    return {
        "model": redact(model),
        "resolved": resolved,
        "sha256": combined_sha256(files),
        "size_bytes": sum(entry["size_bytes"] for entry in files) if files else None,
        "files": files,
        "hub_revision": revision,
        "hashed": how,
    }


def combined_sha256(files: list[dict]) -> Optional[str]:
    """One file: its SHA-256. Several (a Hugging Face folder): the SHA-256 of `sha256sum`'s lines for them, in
    the order listed. None when a file's hash is unknown."""
    if not files or any(entry["sha256"] is None for entry in files):
        return None
    if len(files) == 1:
        return files[0]["sha256"]
    lines = "".join(f"{entry['sha256']}  {entry['name']}\n" for entry in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def hub_revision(path: Path) -> Optional[str]:
    """The commit of a Hub cache snapshot: `.../models--owner--name/snapshots/<revision>/file`."""
    parts = Path(path).parts
    for index, part in enumerate(parts[:-1]):
        if part == "snapshots" and index > 0 and parts[index - 1].startswith("models--"):
            return parts[index + 1]
    return None


def sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    """SHA-256 and length of what `stream` holds, read in chunks."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _hash_local(path: Path) -> list[dict]:
    if path.is_file():
        names = [path]
    else:
        chosen = choose_files([p.name for p in path.iterdir() if p.is_file()], str(path))
        names = [path / name for name in chosen]
        if chosen[-1].endswith(".index.json"):
            shards = json.loads(names[-1].read_text(encoding="utf-8")).get("weight_map", {}).values()
            names += [path / shard for shard in sorted(set(shards))]
    files = []
    for name in names:
        with open(name, "rb") as stream:
            sha, size = sha256_of(stream)
        files.append({"name": name.name, "size_bytes": size, "sha256": sha})
    return files


def _hash_uri(uri: str) -> dict:
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        sha, size = sha256_of(stream)
    _LOGGER.info("Hashed checkpoint %s (%d bytes) for the run record", redact(uri), size)
    return {"name": uri.rstrip("/").rsplit("/", 1)[-1], "size_bytes": size, "sha256": sha}


def _from_hub(repo_id: str) -> tuple[list[dict], Optional[str], str, Optional[str]]:
    """(files, revision, how, resolved) for a Hub id the launcher does not load itself."""
    try:
        return _hub_metadata(repo_id)
    except Exception as exc:  # offline, or the Hub unreachable
        asked = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        from huggingface_hub import snapshot_download

        path = pick_checkpoint_in_folder(Path(snapshot_download(repo_id, local_files_only=True)))
    except Exception:
        how = f"not hashed: the Hub could not be asked ({asked}) and this machine's Hub cache does not hold {repo_id}"
        return [], None, how, None
    how = f"by the launcher, from its Hub cache (the Hub could not be asked: {asked}); workers download the repo"
    return _hash_local(path), hub_revision(path), how, str(path)


def _hub_metadata(repo_id: str) -> tuple[list[dict], Optional[str], str, Optional[str]]:
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo_id, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings or () if "/" not in s.rfilename}
    chosen = choose_files(list(siblings), f"Hub repo {repo_id}")
    if chosen[-1].endswith(".index.json"):
        index = Path(hf_hub_download(repo_id, chosen[-1], revision=info.sha))
        chosen += sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
    files = []
    for name in chosen:
        sibling = siblings[name]
        if sibling.lfs is not None:
            files.append({"name": name, "size_bytes": sibling.lfs.size, "sha256": sibling.lfs.sha256})
        else:  # a small file kept in git (config.json): fetched to hash it
            with open(hf_hub_download(repo_id, name, revision=info.sha), "rb") as stream:
                sha, size = sha256_of(stream)
            files.append({"name": name, "size_bytes": size, "sha256": sha})
    how = "the Hub's SHA-256 of each file at the revision it served when the job started; workers download the repo"
    return files, info.sha, how, None


def is_huggingface_folder(files: list[dict]) -> bool:
    """Whether the checkpoint is a Hugging Face CLIPModel (its loader keeps the weights as stored)."""
    return any(entry["name"] == HF_CONFIG for entry in files)
