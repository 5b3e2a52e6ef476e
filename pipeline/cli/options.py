"""The job's flags as a Beam `PipelineOptions` subclass, for building the job's options the Beam way
(`PipelineOptions(argv).view_as(ScoreLongCLIPOptions)`); the job itself parses its command line with
`pipeline.cli.command.parse`."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.cli import kit
from pipeline.cli.declarations import GROUPS


class ScoreLongCLIPOptions(PipelineOptions):
    """Flags of `python -m pipeline`; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        for flag in kit.declared_flags(GROUPS):
            field = flag.field
            if flag.kind is bool:
                parser.add_argument(f"--{field.name}", action="store_true", help=field.metadata["help"])
            else:
                parser.add_argument(
                    f"--{field.name}", type=flag.kind, default=field.default, help=field.metadata["help"]
                )
