"""The names the job gives its output files under a prefix, and finding (and removing) what an earlier run left.

A file destination (`--output`, `--dead_letter`, `--rejected_output`) is a path prefix `P`; the job writes:

- `P-SSSSS-of-NNNNN.jsonl` or `.parquet`: a batch job's shards, or `P-NNNNN.tar`: its WebDataset shards;
- `P-START-END-SSSSS-of-NNNNN.jsonl` (`20261206T101500Z`, UTC): a streaming job's files of one window;
- `P-part-ID.jsonl`: `--resume`'s file of one input part, and `P.resume/` (of `--output`): its manifests;

and, while it runs, temporary files that a failed or killed run leaves behind: Beam's
`beam-temp-<name of P>-<uuid>/` folders beside `P`, `.tmp-…-<name of P>-part-ID.jsonl` files, and
`P.resume/staging-…/`. Nothing else under a prefix is the job's, so nothing else is ever removed.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Iterable, NamedTuple, Sequence

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms.inputs.locations import has_scheme

_LOGGER = logging.getLogger(__name__)

SHARDS = r"(?:-\d+-of-\d+\.(?:jsonl|parquet)|-\d{5,}\.tar)"
_WINDOW_TIME = r"\d{8}T\d{6}(?:\.\d+)?Z"
WINDOWS = rf"-{_WINDOW_TIME}-{_WINDOW_TIME}-\d+-of-\d+\.jsonl"
PART_ID = r"[0-9a-f]{20}"
PARTS = rf"-part-{PART_ID}\.jsonl"
RESUME_FOLDER = ".resume"  # <output>.resume/: the manifests of --resume


class Found(NamedTuple):
    """What is under a prefix: outputs of an earlier run, by kind, and temporary leftovers of a failed one."""

    shards: tuple[str, ...]  # batch shards and streaming windows: runs without --resume
    parts: tuple[str, ...]  # --resume's part files
    manifests: tuple[str, ...]  # files in <prefix>.resume/, staging folders aside
    leftovers: tuple[str, ...]  # temporary files of a failed or killed run

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.shards + self.parts + self.manifests


def examples(prefix: str) -> list[str]:
    """A file name of each kind the job writes under `prefix` (for checking whether a glob could match them)."""
    part = "0123456789abcdef0123"
    return [
        f"{prefix}-00000-of-00001.jsonl",
        f"{prefix}-00000-of-00001.parquet",
        f"{prefix}-00000.tar",
        f"{prefix}-20250101T000000Z-20250101T000100Z-00000-of-00001.jsonl",
        f"{prefix}-part-{part}.jsonl",
        f"{prefix}{RESUME_FOLDER}/job.json",
    ]


def is_output_of(path: str, prefix: str) -> bool:
    """Whether `path` is named like one of the job's output files under `prefix`."""
    if not path.startswith(prefix):
        return False
    return bool(re.fullmatch(rf"{SHARDS}|{WINDOWS}|{PARTS}|{re.escape(RESUME_FOLDER)}/.+", path[len(prefix) :]))


def glob_matches(pattern: str, path: str) -> bool:
    """Whether the Beam FileSystems glob `pattern` matches `path` (`*` stops at `/`, `**` does not)."""
    return re.match(FileSystem.translate_pattern(pattern), path) is not None


def find(prefix: str) -> Found:
    """Lists the job's own files under `prefix`, and its leftovers beside it. Raises OSError when the prefix's
    folder cannot be listed."""
    folder, name = FileSystems.split(prefix)
    beam_temp = FileSystems.join(folder, f"beam-temp-{name}-")
    # Beam lists a local glob from its folder: a bare name in the working directory needs one.
    listed = f".{os.sep}{prefix}" if not has_scheme(prefix) and not os.path.dirname(prefix) else prefix
    patterns = [f"{listed}-**", f"{listed}{RESUME_FOLDER}/**", f"{beam_temp}**", FileSystems.join(folder, ".tmp-*")]
    try:
        matched = {meta.path for result in FileSystems.match(patterns) for meta in result.metadata_list}
    except Exception as exc:  # noqa: BLE001 - BeamIOError wraps what the file system raised
        raise OSError(f"cannot list {prefix}*: {exc}") from None
    matched = {prefix + path[len(listed) :] if path.startswith(listed) else path for path in matched}
    temporary = {
        "beam": rf"{re.escape(beam_temp)}[0-9a-f]{{32}}/.+",  # Beam's file sinks, per run
        "part": rf"{re.escape(FileSystems.join(folder, '.tmp-'))}[0-9a-f]{{12}}-{re.escape(name)}{PARTS}",
        "staging": rf"{re.escape(prefix + RESUME_FOLDER)}/(?:staging-[^/]+/.+|\.tmp-[^/]+)",
    }
    found: dict[str, list[str]] = {"shards": [], "parts": [], "manifests": [], "leftovers": []}
    folders = _temporary_folders(prefix, folder, name)  # local ones, whole: they may hold no file at all
    for path in sorted(matched):
        rest = path[len(prefix) :] if path.startswith(prefix) else ""
        if any(path.startswith(f"{each}/") for each in folders):
            continue
        if any(re.fullmatch(pattern, path) for pattern in temporary.values()):
            found["leftovers"].append(path)
        elif re.fullmatch(rf"{SHARDS}|{WINDOWS}", rest):
            found["shards"].append(path)
        elif re.fullmatch(PARTS, rest):
            found["parts"].append(path)
        elif rest.startswith(f"{RESUME_FOLDER}/"):
            found["manifests"].append(path)
    found["leftovers"] += folders
    return Found(**{kind: tuple(paths) for kind, paths in found.items()})


def _temporary_folders(prefix: str, folder: str, name: str) -> list[str]:
    """Beam's `beam-temp-<name>-<uuid>` folders beside a local prefix, and its `.resume/staging-*` folders."""
    if has_scheme(prefix):
        return []  # object stores have no empty folders: their files were listed
    places = {folder: rf"beam-temp-{re.escape(name)}-[0-9a-f]{{32}}", prefix + RESUME_FOLDER: r"staging-[^/]+"}
    found = []
    for place, pattern in places.items():
        try:
            entries = [entry.name for entry in os.scandir(place or ".") if entry.is_dir(follow_symlinks=False)]
        except OSError:  # no such folder
            continue
        found += [f"{place}{os.sep}{entry}" for entry in sorted(entries) if re.fullmatch(pattern, entry)]
    return found


def remove(paths: Sequence[str]) -> None:
    """Deletes `paths`: files, and the job's own temporary folders (whole); then a `.resume` folder this leaves
    empty."""
    if not paths:
        return
    FileSystems.delete(list(paths))
    emptied = rf"{re.escape(RESUME_FOLDER)}(/staging-[^/]+)?$"
    for path in paths:
        parent = os.path.dirname(path.rstrip(os.sep))
        while not has_scheme(path) and re.search(emptied, parent):
            try:
                os.rmdir(parent)
            except OSError:  # not empty (or gone): it holds what is not being removed
                break
            parent = os.path.dirname(parent)


def described(paths: Iterable[str]) -> str:
    """For the log, before they are removed."""
    paths = list(paths)
    return f"{len(paths)} file(s) that earlier runs left under the output prefixes, e.g. {paths[0]}"
