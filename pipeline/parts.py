"""The input files of a batch job, found before it starts and cut into parts of at most `PART_BYTES`.

A part is the unit of reading (parts are read in parallel, each in one go) and of `--resume` (a part's
outputs are written once it is done, under a name made from the part). Problems a user can fix (no
such file, a folder, no permission) raise `InputProblem` with the fix, before anything runs.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple
from urllib.parse import unquote, urlparse

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

PART_BYTES = 4 << 20  # about 20k records of a typical caption file: minutes of GPU work


class InputProblem(ValueError):
    """The input cannot be read as given; the message says why and what to do."""


class InputPart(NamedTuple):
    """Bytes [start, end) of `path` (of `size` bytes); a compressed file is one part, read whole."""

    path: str
    start: int
    end: int
    size: int
    compressed: bool

    @property
    def id(self) -> str:
        """Stable across runs while the file keeps its path and size: names the part's output files."""
        key = f"{self.path}\0{self.size}\0{self.start}\0{self.end}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(key).hexdigest()[:20]


def local_path(location: str) -> str:
    """`file:///a/b` as the local path `/a/b`; any other location as it is."""
    if not location.lower().startswith("file://"):
        return location
    parsed = urlparse(location)
    if parsed.netloc not in ("", "localhost"):
        raise InputProblem(f"{location!r} names a file on host {parsed.netloc!r}; only local file:// paths work")
    return unquote(parsed.path)


def is_local_path(location: str) -> bool:
    return "://" not in location


def plan_parts(pattern: str, part_bytes: int = PART_BYTES) -> list[InputPart]:
    """Every file matching `pattern` (local or any Beam FileSystems URI), cut into parts, in path order."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be at least 1, got {part_bytes}")
    pattern = local_path(pattern)
    if is_local_path(pattern) and os.path.isdir(pattern):
        raise InputProblem(
            f"{pattern!r} is a folder: give a file, or a glob such as {os.path.join(pattern, '*.jsonl')!r}"
        )
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - bad scheme, no access, network: the user's to fix
        raise InputProblem(f"cannot list {pattern!r}: {_first_line(exc)}") from None
    files = sorted((m for m in matched if not (is_local_path(m.path) and os.path.isdir(m.path))), key=lambda m: m.path)
    if not files:
        raise InputProblem(f"no file matches {pattern!r}: check the path (a glob may use *, ? and [...])")
    parts = []
    for meta in files:
        if is_local_path(meta.path) and not os.access(meta.path, os.R_OK):
            raise InputProblem(f"cannot read {meta.path!r}: permission denied")
        size = meta.size_in_bytes
        if CompressionTypes.detect_compression_type(meta.path) != CompressionTypes.UNCOMPRESSED:
            parts.append(InputPart(meta.path, 0, size, size, True))
            continue
        parts += [
            InputPart(meta.path, start, min(start + part_bytes, size), size, False)
            for start in range(0, size, part_bytes)
        ]
    return parts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
