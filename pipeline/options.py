"""Command-line options of the scoring job: a Beam `PipelineOptions` subclass over the declared flags
(`pipeline/flags.py`), and `parse_options`, which checks every flag with Beam's option classes only, so a bad
or unknown flag fails before torch, open_clip or Beam's runners are imported."""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import flags
from pipeline.flags import UsageError

_LOGGER = logging.getLogger(__name__)


class ScoreLongCLIPOptions(PipelineOptions):
    """Flags of `python -m pipeline`; every standard Beam option is accepted beside them."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        flags.add_arguments(parser)


def known_beam_options(argv: Optional[Sequence[str]], whose: str) -> PipelineOptions:
    """Beam's options from `argv`, which must hold no flag that is neither `whose` (already parsed) nor Beam's;
    raises `UsageError` naming the unknown ones (Beam itself would silently drop them)."""
    options = PipelineOptions(argv)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:
        raise UsageError(
            f"unknown flag(s) {', '.join('--' + name for name in sorted(unknown))}: "
            f"neither {whose} nor a Beam pipeline option"
        )
    return options


def parse_options(argv: Optional[Sequence[str]]) -> PipelineOptions:
    """Parses our flags and every Beam option, checks what can be checked offline, and picks the local
    runner when none is given. Raises `UsageError`; `--help` and malformed values exit through argparse."""
    known = flags.check_flags(argv)
    options = known_beam_options(argv, "this job's")
    standard = options.view_as(StandardOptions)
    if (known.input_subscription or known.input_topic) and not standard.streaming:
        raise UsageError("Pub/Sub input runs as a streaming job: add --streaming")
    if known.keep_top_fraction is not None and standard.streaming:
        raise UsageError(
            "--keep_top_fraction needs every score before it can cut, so it works in batch jobs only; "
            "in streaming use --keep_min_score"
        )
    if known.resume:
        _check_resume(known, standard.streaming)
    if known.output_format == "parquet" and standard.streaming:
        raise UsageError("--output_format parquet is for batch jobs; a streaming job writes JSONL files")
    if standard.runner is None:
        standard.runner = flags.DEFAULT_LOCAL_STREAMING_RUNNER if standard.streaming else flags.DEFAULT_LOCAL_RUNNER
    if known.resume and not is_local(options):
        raise UsageError(
            "--resume runs on the local runners; on Dataflow the service itself retries failed work (see the "
            "README, Resuming a stopped batch job)"
        )
    if is_local(options):
        if known.id_label:
            raise UsageError("--id_label works on the DataflowRunner only; Beam's local runners cannot deduplicate")
        if standard.streaming and known.max_batch_duration_secs is not None:
            raise UsageError(
                "--max_batch_duration_secs needs the DataflowRunner: Beam's local streaming runner fires the "
                "batching timer only when the next Pub/Sub message arrives, so a record could wait indefinitely. "
                "Leave it out: locally the messages of each pull are scored together, without waiting"
            )
    from pipeline import workers  # it views options as ScoreLongCLIPOptions, defined above

    if workers.is_dataflow(options):
        for note in workers.apply_worker_defaults(options):
            _LOGGER.info("Dataflow workers: %s", note)
    return options


def _check_resume(known, streaming: bool) -> None:
    if streaming or not known.input:
        raise UsageError("--resume is for batch jobs over --input files (a Pub/Sub subscription keeps its own place)")
    if input_format(known.input, known.input_format) != "jsonl" or known.output_format != "jsonl":
        raise UsageError(
            "--resume reads JSONL input part by part and writes JSONL files; WebDataset and Parquet jobs cannot "
            "resume yet: split the shards or files over several runs instead"
        )
    if not known.output:
        raise UsageError("--resume writes files: add --output")
    others = [
        f"--{name}" for name in ("output_table", "dead_letter_table", "dead_letter_topic") if getattr(known, name)
    ]
    if others:
        raise UsageError(
            f"--resume writes files only: leave out {', '.join(others)} (rows or messages of a stopped run "
            "would be sent again); load the files afterwards instead"
        )
    if known.max_batch_duration_secs is not None:
        raise UsageError("--resume cannot take --max_batch_duration_secs (batches must not outlive a part)")
    if known.keep_min_score is not None or known.keep_top_fraction is not None:
        raise UsageError(
            "--resume cannot filter yet (--keep_top_fraction needs every score at once, and a part's rejected "
            "records would need outputs of their own): score with --resume, then filter the files, e.g. with "
            "python -m pipeline.report's keep_top_thresholds"
        )


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS


def input_format(file_pattern: str, chosen: str = "auto") -> str:
    """`chosen`, or with "auto" the format the pattern's extension names: .tar is WebDataset, .parquet
    Parquet, anything else JSONL."""
    if chosen != "auto":
        return chosen
    name = file_pattern.lower()
    return "webdataset" if name.endswith(".tar") else "parquet" if name.endswith(".parquet") else "jsonl"
