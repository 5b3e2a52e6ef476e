"""The input files of a batch job, found before it starts and cut into parts of at most `--input_part_bytes`.

A part is the unit of reading (parts are read in parallel, each in one go) and of `--resume` (a part's
outputs are written once it is done, under a name made from the part). Problems a user can fix (no
such file, a folder, no permission) raise `InputProblem` with the fix, before anything runs.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.io.formats import DEFAULT_PART_BYTES
from transforms.inputs.locations import has_scheme, local_path
from transforms.reasons import first_line


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


def plan_parts(pattern: str, part_bytes: int = DEFAULT_PART_BYTES) -> list[InputPart]:
    """Every file matching `pattern` (local or any Beam FileSystems URI), cut into parts, in path order."""
    if part_bytes < 1:
        raise ValueError(f"part_bytes must be at least 1, got {part_bytes}")
    try:
        path = local_path(pattern)
    except ValueError as exc:
        raise InputProblem(str(exc)) from None
    pattern = pattern if path is None else path
    if not has_scheme(pattern) and os.path.isdir(pattern):
        raise InputProblem(
            f"{pattern!r} is a folder: give a file, or a glob such as {os.path.join(pattern, '*.jsonl')!r}"
        )
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:  # noqa: BLE001 - bad scheme, no access, network: the user's to fix
        raise InputProblem(f"cannot list {pattern!r}: {first_line(exc)}") from None
    files = sorted((m for m in matched if has_scheme(m.path) or not os.path.isdir(m.path)), key=lambda m: m.path)
    if not files:
        raise InputProblem(f"no file matches {pattern!r}: check the path (a glob may use *, ? and [...])")
    parts = []
    for meta in files:
        if not has_scheme(meta.path) and not os.access(meta.path, os.R_OK):
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
