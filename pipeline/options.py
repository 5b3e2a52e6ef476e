"""Command-line options of the scoring job, as a Beam `PipelineOptions` subclass (flags: `pipeline/flags.py`)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import flags


class ScoreLongCLIPOptions(PipelineOptions):
    """Flags of `python -m pipeline`; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        flags.add_arguments(parser)
