"""The ready scoring job around `transforms.ScoreLongCLIP`: `python -m pipeline --help`."""

from pipeline.job import build, parse_options, run, summarize
from pipeline.options import ScoreLongCLIPOptions

__all__ = ["ScoreLongCLIPOptions", "build", "parse_options", "run", "summarize"]
