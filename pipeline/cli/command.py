"""The scoring job's command line, parsed once: its own flags (`declarations`) and Beam's options beside them.

Beam is imported only once this job's own flags have parsed, so that `--help` and their errors are instant.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple, Optional, Sequence

from pipeline.cli import kit
from pipeline.cli.checks import check_flags
from pipeline.cli.declarations import GROUPS

PROG = "python -m pipeline"


class Flags(NamedTuple):
    """The parsed command line: the job's flags, and Beam's options over the whole command line (with a local
    runner when none was given), and the arguments they were made from."""

    job: argparse.Namespace
    beam: Any  # PipelineOptions
    beam_args: tuple[str, ...]


def argument_parser() -> kit.CommandParser:
    return kit.command_parser(
        PROG,
        "Score image/long-caption alignment with LongCLIP on Apache Beam.",
        "Every standard Beam pipeline option (--runner, --streaming, --project, --region, --temp_location, ...) "
        f"is accepted too. Without --runner the job runs locally on the {kit.DEFAULT_LOCAL_RUNNER} "
        f"(the {kit.DEFAULT_LOCAL_STREAMING_RUNNER} with --streaming).",
        GROUPS,
    )


def parse(argv: Optional[Sequence[str]]) -> Flags:
    """Parses and checks the command line, without torch, the model or the network.

    Raises `UsageError`; `--help` exits, and so does a value of the wrong type (one line, exit 2).
    """
    argv = tuple(argv or ())
    parser = argument_parser()
    known, rest = parser.parse_known_args(argv)
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipeline.cli import options  # noqa: F401 - registers this job's flags with Beam's options

    runner = kit.beam_options(rest, parser).view_as(StandardOptions).runner
    beam_args = argv if _names_runner(argv) else (*argv, "--runner", runner)
    beam = PipelineOptions(list(beam_args))
    check_flags(known, beam)
    return Flags(known, beam, beam_args)


def _names_runner(argv: Sequence[str]) -> bool:
    return any(arg == "--runner" or arg.startswith("--runner=") for arg in argv)
