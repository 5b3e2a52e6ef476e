"""What every command of this project shares: usage errors that read like a good CLI's, flags grouped from
dataclass declarations, Beam's options beside ours (an unknown flag named as such), and the local runners.

Standard library and Beam's option classes only (the latter imported when Beam's options are parsed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import logging
import sys
import typing
from typing import Any, NamedTuple, NoReturn, Sequence

from transforms.settings import value_type

# The default DirectRunner first tries to download Prism, which fails offline.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"
DEFAULT_LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"

GCS_PATH = r"^gs://[^/]+(/.*)?$"
# The exit code of a job stopped by Ctrl-C: a second one on a local streaming job, or one while waiting on Dataflow.
INTERRUPTED = 130


class UsageError(ValueError):
    """A flag, or the combination of flags, cannot work; the message names the flag and the fix."""


class Group(NamedTuple):
    """A section of `--help` (and of a Flex Template): the flags one declaration dataclass holds."""

    title: str
    template_group: str
    declaration: type
    only: tuple[str, ...] = ()  # when set, just these fields (for another command sharing the declarations)


class DeclaredFlag(NamedTuple):
    group: Group
    field: dataclasses.Field
    kind: type  # bool, int, float or str
    optional: bool


def declared_flags(groups: Sequence[Group]) -> list[DeclaredFlag]:
    """Every flag of `groups`, in declaration order."""
    out = []
    for group in groups:
        hints = typing.get_type_hints(group.declaration)
        for field in dataclasses.fields(group.declaration):
            if not group.only or field.name in group.only:
                out.append(DeclaredFlag(group, field, *value_type(hints[field.name])))
    return out


def switches(groups: Sequence[Group]) -> set[str]:
    """The flags of `groups` that take no value."""
    return {f"--{flag.field.name}" for flag in declared_flags(groups) if flag.kind is bool}


def values_of(namespace: argparse.Namespace, declaration: type, only: Sequence[str] = ()) -> dict[str, Any]:
    """The parsed values of `declaration`'s fields (or of `only` those), as keyword arguments for it."""
    names = only or [field.name for field in dataclasses.fields(declaration)]
    return {name: getattr(namespace, name) for name in names}


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong, then where help is, exit 2; never the usage block."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


def fail(prog: str, message: str) -> NoReturn:
    """Ends the command as a usage error, exit 2: where the flags are described, then what is wrong (on the last
    line, as argparse has it), instead of argparse's whole usage block."""
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())  # a library's may span lines
    sys.stderr.write(f"usage: see {prog} --help\n{prog}: error: {message}\n")
    sys.exit(2)


def command_parser(prog: str, description: str, epilog: str, groups: Sequence[Group]) -> CommandParser:
    """A parser of the declared flags of `groups`, grouped as in `--help` (Beam's options are parsed apart)."""
    parser = CommandParser(
        prog=prog,
        allow_abbrev=False,  # Beam's own parsing does not expand abbreviations: both must agree
        description=description,
        epilog=epilog,
    )
    sections = {group.title: parser.add_argument_group(group.title) for group in groups}
    for flag in declared_flags(groups):
        field, meta = flag.field, flag.field.metadata
        help_text = meta["help"] + (f" (default: {field.default})" if _shows_default(field) else "")
        if flag.kind is bool:
            sections[flag.group.title].add_argument(f"--{field.name}", action="store_true", help=help_text)
        else:
            sections[flag.group.title].add_argument(
                f"--{field.name}", type=flag.kind, default=field.default, choices=meta.get("choices"), help=help_text
            )
    return parser


def _shows_default(field: dataclasses.Field) -> bool:
    return field.default not in (None, False) and "(default:" not in field.metadata["help"]


def beam_options(rest: Sequence[str], ours: argparse.ArgumentParser, *, streaming_runner: bool = True):
    """Beam's `PipelineOptions` from the flags `ours` did not take, with a local runner when none is given.

    Raises `UsageError` for a flag that is neither ours nor Beam's (Beam would drop it silently), naming the
    closest known flag, and for a runner Beam does not know.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    with _quiet_beam_options():  # their "Discarding unparseable args" warnings: the error below says it once
        options = PipelineOptions(list(rest))
        beam_names = set(options.get_all_options())
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - beam_names)
    if unknown:
        known = [option for action in ours._actions for option in action.option_strings]
        known += [f"--{name}" for name in beam_names]
        hints = [difflib.get_close_matches(f"--{name}", known, n=1, cutoff=0.75) for name in unknown]
        advice = "; ".join(f"did you mean {hint[0]}?" for hint in hints if hint)
        raise UsageError(
            f"unknown flag(s) {', '.join('--' + name for name in unknown)}"
            + (f": {advice}" if advice else ": neither this command's flag nor a Beam pipeline option")
        )
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        local = DEFAULT_LOCAL_STREAMING_RUNNER if standard.streaming and streaming_runner else DEFAULT_LOCAL_RUNNER
        options = PipelineOptions([*rest, "--runner", local])
    elif not _is_known_runner(standard.runner):
        names = sorted({name.rsplit(".", 1)[-1] for name in StandardOptions.ALL_KNOWN_RUNNERS})
        hint = difflib.get_close_matches(standard.runner, names, n=1)
        raise UsageError(
            f"--runner {standard.runner}: no such runner"
            + (f"; did you mean {hint[0]}?" if hint else f"; known: {', '.join(names)}")
        )
    return options


@contextlib.contextmanager
def _quiet_beam_options():
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        beam_log.setLevel(level)


def _is_known_runner(runner: str) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    if "." in runner:  # a runner class by its module path, which Beam imports
        return True
    names = {name.rsplit(".", 1)[-1].lower() for name in StandardOptions.ALL_KNOWN_RUNNERS}
    return runner.lower() in names or f"{runner.lower()}runner" in names


def is_local(options: Any) -> bool:
    """Whether Beam's options run the pipeline on this machine."""
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS
