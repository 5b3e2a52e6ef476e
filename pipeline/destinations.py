"""The destinations checked before the job starts (`pipeline.preflight`): file prefixes whose files would
collide, tables named twice, an `--input` that would read the job's own outputs, and what earlier runs left
under the prefixes: refused, removed with `--overwrite`, or, with `--resume`, gone on from when the run that
began the output read the same input with the same flags (`pipeline.io.manifests`).

Each problem raises `UsageError`: one line naming the flags and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Optional

from pipeline.cli.kit import UsageError
from pipeline.io import manifests, outputs
from pipeline.plan import Destinations, FileInput
from transforms.inputs.locations import has_scheme

_LOGGER = logging.getLogger(__name__)

DEFAULTS = {"dead_letter": "<output>.dead_letter", "rejected_output": "<output>.rejected"}
_HOW = "run with the same flags and input to go on, or pass a new --output (or add --overwrite to start over)"


def file_prefixes(destinations: Destinations) -> dict[str, str]:
    """The file destinations by flag: output, dead_letter, rejected_output (those there are)."""
    named = {
        "output": destinations.output,
        "dead_letter": destinations.dead_letter,
        "rejected_output": destinations.rejected_output,
    }
    return {flag: prefix for flag, prefix in named.items() if prefix}


def check_collisions(job: Any, destinations: Destinations) -> None:
    """Two destinations whose files could be taken for each other's, or that name the same table."""
    prefixes = file_prefixes(destinations)
    flags = list(prefixes)
    for later in range(len(flags)):
        for earlier in range(later):
            _check_pair(job, (flags[later], prefixes[flags[later]]), (flags[earlier], prefixes[flags[earlier]]))
    tables = {
        "output_table": destinations.output_table,
        "dead_letter_table": destinations.dead_letter_table,
        "rejected_table": destinations.rejected_table,
    }
    seen: dict[str, str] = {}
    for flag, table in filter(lambda item: item[1], tables.items()):
        if table in seen:
            raise UsageError(f"--{flag} and --{seen[table]} both name the table {table}: give each its own table")
        seen[table] = flag


def _check_pair(job: Any, first: tuple[str, str], second: tuple[str, str]) -> None:
    (flag, prefix), (other_flag, other) = first, second
    if _absolute(prefix) == _absolute(other):
        raise UsageError(
            f"{_label(job, flag, prefix)} and {_label(job, other_flag, other)} write the same files "
            f"({outputs.examples(prefix)[0]}): give each its own prefix"
        )
    for (a_flag, a), (b_flag, b) in ((second, first), (first, second)):
        glob = f"{a}-*"
        names = [_absolute(name) for name in outputs.examples(b)]
        hit = next((name for name in names if outputs.glob_matches(_absolute(glob), name)), None)
        if hit:
            raise UsageError(
                f"--{a_flag}'s {glob!r} also matches the files of --{b_flag} ({hit}), so reading one would read "
                "both: give each a prefix that does not start with the other's and a dash"
            )


def check_input(job: Any, destinations: Destinations, source: FileInput) -> None:
    """An --input glob that matches the job's own output files, or input files named like them."""
    pattern = _absolute(source.pattern)
    files = sorted({_absolute(part.path) for part in source.parts})
    for flag, prefix in file_prefixes(destinations).items():
        prefix = _absolute(prefix)
        hit = next((name for name in outputs.examples(prefix) if outputs.glob_matches(pattern, name)), None)
        hit = hit or next((path for path in files if outputs.is_output_of(path, prefix)), None)
        if hit:
            raise UsageError(
                f"--input {source.pattern!r} also matches the files {_label(job, flag, None)} writes ({hit}): "
                "give --input a pattern that leaves them out, or write the outputs elsewhere"
            )


def earlier_outputs(job: Any, destinations: Destinations) -> tuple[str, ...]:
    """A batch job without --resume: files of the job's own naming under its prefixes are refused, or with
    --overwrite removed first; temporary leftovers of a failed run are removed either way."""
    earlier, leftovers = [], []
    for flag, prefix in file_prefixes(destinations).items():
        found = _find(flag, prefix)
        if found.outputs and not job.overwrite:
            raise UsageError(
                f"--{flag}: {found.outputs[0]} is from an earlier run, and {prefix}-* would count its files with "
                f"this run's: pass a new --{flag}, move them away, or add --overwrite to remove them first"
            )
        earlier += found.outputs
        leftovers += found.leftovers
    return tuple(earlier + leftovers)


def resume_state(
    job: Any, destinations: Destinations, source: FileInput, manifest: dict
) -> tuple[FileInput, tuple[str, ...]]:
    """--resume: the parts to read and the files to remove first. Refuses outputs of a run without --resume,
    and a run that differs from the one that began the output (unless --overwrite, which starts over)."""
    output, dead_letter = destinations.output, destinations.dead_letter
    found = {flag: _find(flag, prefix) for flag, prefix in file_prefixes(destinations).items()}
    leftovers = [path for each in found.values() for path in each.leftovers]
    remove = []
    for flag, each in found.items():
        if each.shards and not job.overwrite:
            raise UsageError(
                f"--{flag}: {each.shards[0]} is from a run without --resume; with it some lines would come out "
                "twice: pass a new --output, move those files away, or add --overwrite to remove them"
            )
        remove += each.shards
    recorded, why = None, None
    try:
        recorded = manifests.read_job(output)
        why = manifests.difference(recorded, manifest) if recorded else None
    except manifests.ManifestError as exc:
        why = str(exc)
    started = [path for each in found.values() for path in each.parts + each.manifests]
    if why is None and recorded is None and started:
        why = f"{started[0]} is there but not {manifests.job_path(output)}, which says what its run read"
    if why and not job.overwrite:
        raise UsageError(f"--resume: {why}; {_HOW}")
    if why:  # --overwrite: start over
        _LOGGER.info("Resume: starting over (--overwrite): %s", why)
        return source, tuple(remove + started + leftovers)
    done = []
    for part in source.parts:
        complete, problem = manifests.check_part(part, output, dead_letter)
        if complete:
            done.append(part)
        elif problem:
            _LOGGER.warning("Resume: part %s, bytes %d to %d, is read again: %s", *part[:3], problem)
    todo = tuple(part for part in source.parts if part not in done)
    return dataclasses.replace(source, todo=todo), tuple(remove + leftovers)


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, sort_keys=True)


def _find(flag: str, prefix: str) -> outputs.Found:
    try:
        return outputs.find(prefix)
    except OSError as exc:
        raise UsageError(f"--{flag}: {exc}") from None


def _label(job: Any, flag: str, prefix: Optional[str]) -> str:
    given = getattr(job, flag, None)
    if not given and flag in DEFAULTS:
        return f"--{flag} (default {DEFAULTS[flag]})"
    return f"--{flag} {prefix!r}" if prefix else f"--{flag}"


def _absolute(path: str) -> str:
    return path if has_scheme(path) else os.path.abspath(path)
