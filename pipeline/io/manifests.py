"""`--resume`'s manifests: what a resumed run depends on, and which of its parts are done.

Under `<output>.resume/`:

- `job.json`, written before the first part: the input files (path, size, modification time), the part size
  and line limit, the dead-letter prefix, the output format, and every scoring setting that changes what is
  written. A rerun whose manifest would differ is refused before it starts (`difference`).
- `part-<id>.json`, written last when a part is committed: each of the part's files with its rows, bytes and
  SHA-256. A part is done only when its manifest is there and every file it names has those bytes
  (`check_part`); anything else is read again, its old files replaced.
- `staging-<id>/`: what the bundles of a part's pipeline write, one file per bundle, however many workers
  run it. Once the pipeline has ended, `commit` joins them into the part's one file per destination
  (`<prefix>-part-<id>.jsonl`), checks that every line read is in them once, then writes the part's manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from typing import Any, Iterable, Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.io import outputs
from pipeline.io.parts import InputPart

_LOGGER = logging.getLogger(__name__)

VERSION = 1
SCORED, DEAD = "scored", "dead"
# Settings that change how fast records are scored, not what is written: a rerun may change them (e.g. a
# smaller batch after running out of memory). Every other scoring setting is recorded.
UNRECORDED = frozenset(
    {"device", "share_model_across_processes", "model_copies", "max_concurrent_batches"}
    | {"http_timeout_secs", "prepare_threads"}
)
_CHUNK = 1 << 20
_RAW = CompressionTypes.UNCOMPRESSED


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says which and why."""


class PartIncomplete(RuntimeError):
    """A part's files do not hold every line it read, once: the part is left undone."""


def folder(output: str) -> str:
    return f"{output}{outputs.RESUME_FOLDER}"


def job_path(output: str) -> str:
    return f"{folder(output)}/job.json"


def part_path(output: str, part: InputPart) -> str:
    return f"{folder(output)}/part-{part.id}.json"


def staging(output: str, part: InputPart) -> str:
    """Where the bundles of `part`'s pipeline write (`WritePart`), until `commit`."""
    return f"{folder(output)}/staging-{part.id}"


def part_file(prefix: str, part: InputPart) -> str:
    return f"{prefix}-part-{part.id}.jsonl"


def job_manifest(parts: Sequence[InputPart], flags: dict[str, Any], settings: Iterable[Any]) -> dict:
    """What a resumed run depends on: the files of `parts` as they are now, `flags` (job flags by name), and
    the fields of the scoring `settings` dataclasses but those in `UNRECORDED`."""
    files = {}
    for result in FileSystems.match(sorted({part.path for part in parts})):
        for meta in result.metadata_list:
            files[meta.path] = {"size": meta.size_in_bytes, "modified": meta.last_updated_in_seconds}
    recorded = dict(flags)
    for group in settings:
        recorded.update(
            (field.name, getattr(group, field.name))
            for field in dataclasses.fields(group)
            if field.name not in UNRECORDED
        )
    return json.loads(json.dumps({"version": VERSION, "flags": recorded, "files": files}, default=str))


def read_job(output: str) -> Optional[dict]:
    """The job manifest of the run that began `output`; None when there is none. Raises ManifestError."""
    return _read(job_path(output))


def difference(recorded: dict, now: dict) -> Optional[str]:
    """The first way `now` differs from `recorded`, in words naming the flag or input file; None if none."""
    since = "when this output's run began"
    if recorded.get("version") != now["version"]:
        return f"{since} the job wrote manifests of another version ({recorded.get('version')})"
    then_flags, now_flags = recorded.get("flags", {}), now["flags"]
    for name in sorted(set(then_flags) | set(now_flags)):
        if then_flags.get(name) != now_flags.get(name):
            return f"--{name} was {then_flags.get(name)!r} {since} and is {now_flags.get(name)!r} now"
    then_files, now_files = recorded.get("files", {}), now["files"]
    for path in sorted(set(then_files) | set(now_files)):
        before, after = then_files.get(path), now_files.get(path)
        if before is None:
            return f"--input now also matches {path}, which it did not {since}"
        if after is None:
            return f"--input file {path} was read {since} and is gone now"
        if before != after:
            what = "size" if before.get("size") != after.get("size") else "modification time"
            return f"--input file {path} changed since {since.removeprefix('when ')} (its {what})"
    return None


def write_job(output: str, manifest: dict) -> None:
    """Writes the job manifest unless it is there (it is written once, before the first part)."""
    if not FileSystems.exists(job_path(output)):
        _write(job_path(output), manifest)


def check_part(part: InputPart, output: str, dead_letter: str) -> tuple[bool, Optional[str]]:
    """(done, why not): a part without a manifest is simply not done (None); one whose files do not match its
    manifest is not done either, and the reason says which file and how."""
    try:
        manifest = _read(part_path(output, part))
    except ManifestError as exc:
        return False, str(exc)
    if manifest is None:
        return False, None
    if manifest.get("part") != _part_fields(part):
        return False, f"{part_path(output, part)} is the manifest of another part"
    expected = {SCORED: part_file(output, part), DEAD: part_file(dead_letter, part)}
    for entry in manifest.get("files", []):
        path = entry.get("path")
        if expected.get(entry.get("kind")) != path:
            return False, f"{part_path(output, part)} names {path}, not a file of this run's prefixes"
        try:
            found = _digest([path])
        except OSError:
            return False, f"{path} is missing"
        if found["bytes"] != entry.get("bytes"):
            return False, f"{path} has {found['bytes']} bytes, {entry.get('bytes')} were written"
        if found["sha256"] != entry.get("sha256"):
            return False, f"{path} is not what was written (its SHA-256 differs)"
    return True, None


def clear(part: InputPart, output: str, dead_letter: str) -> None:
    """Removes what an earlier attempt at `part` left (its manifest first), before the part is read again."""
    paths = [part_path(output, part), part_file(output, part), part_file(dead_letter, part)]
    outputs.remove([path for path in paths if FileSystems.exists(path)])
    _discard_staging(output, part)


def commit(part: InputPart, output: str, dead_letter: str, lines_read: Optional[int]) -> dict:
    """Joins the files the part's bundles staged into its one file per destination, checks that they hold
    `lines_read` lines (when known), puts them in place and writes the part's manifest last.

    Raises PartIncomplete when the lines do not add up (nothing is put in place then)."""
    staged = FileSystems.match([f"{staging(output, part)}/**"])[0].metadata_list
    joined = []
    for kind, prefix in ((DEAD, dead_letter), (SCORED, output)):  # the dead letters first, the manifest last
        sources = sorted(meta.path for meta in staged if FileSystems.split(meta.path)[1].startswith(f"{kind}-"))
        if sources or kind == SCORED:  # a part always has a scored file, even an empty one
            joined.append((kind, part_file(prefix, part), *_join(sources, part_file(prefix, part))))
    rows = sum(entry["rows"] for *_, entry in joined)
    if lines_read is not None and rows != lines_read:
        outputs.remove([temporary for _, _, temporary, _ in joined])
        raise PartIncomplete(
            f"{part.path}, bytes {part.start} to {part.end}: {lines_read} lines read but {rows} written; "
            "the part is left undone and is read again by the next run"
        )
    FileSystems.rename([temporary for _, _, temporary, _ in joined], [final for _, final, _, _ in joined])
    files = [{"kind": kind, "path": final, **entry} for kind, final, _, entry in joined]
    manifest = {"part": _part_fields(part), "files": files}
    _write(part_path(output, part), manifest)
    _discard_staging(output, part)
    return manifest


def _discard_staging(output: str, part: InputPart) -> None:
    stage = staging(output, part)
    if FileSystems.exists(stage):  # a local folder, removed whole
        outputs.remove([stage])
    else:
        outputs.remove([meta.path for meta in FileSystems.match([f"{stage}/**"])[0].metadata_list])


def _join(sources: Sequence[str], final: str) -> tuple[str, dict]:
    """`sources` one after the other into a temporary file beside `final`: (its path, rows, bytes, sha256)."""
    parent, name = FileSystems.split(final)
    temporary = FileSystems.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    digest, rows, size = hashlib.sha256(), 0, 0
    stream = FileSystems.create(temporary, compression_type=_RAW)
    try:
        for source in sources:
            with FileSystems.open(source, compression_type=_RAW) as chunks:
                while chunk := chunks.read(_CHUNK):
                    stream.write(chunk)
                    digest.update(chunk)
                    rows, size = rows + chunk.count(b"\n"), size + len(chunk)
    finally:
        stream.close()
    return temporary, {"rows": rows, "bytes": size, "sha256": digest.hexdigest()}


def _digest(paths: Sequence[str]) -> dict:
    digest, size = hashlib.sha256(), 0
    for path in paths:
        try:
            with FileSystems.open(path, compression_type=_RAW) as chunks:
                while chunk := chunks.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except Exception as exc:  # noqa: BLE001 - missing or unreadable: not done
            raise OSError(str(exc)) from None
    return {"bytes": size, "sha256": digest.hexdigest()}


def _part_fields(part: InputPart) -> dict:
    return {"path": part.path, "start": part.start, "end": part.end, "size": part.size}


def _read(path: str) -> Optional[dict]:
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path, compression_type=_RAW) as stream:
            value = json.loads(stream.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} cannot be read: {exc}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{path} is not a manifest")
    return value


def _write(path: str, value: dict) -> None:
    """Whole or not at all: a temporary file, then renamed into place."""
    parent, name = FileSystems.split(path)
    temporary = FileSystems.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    stream = FileSystems.create(temporary, compression_type=_RAW)
    try:
        stream.write(json.dumps(value, indent=1).encode("utf-8"))
    finally:
        stream.close()
    FileSystems.rename([temporary], [path])
