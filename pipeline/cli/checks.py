"""The checks of the job's flags that need nothing but the flags: each value against its declaration, and the
combinations that cannot work (with Beam's standard options: streaming, the runner). What the environment
decides (files, tables, the model) is checked by `pipeline.preflight`.
"""

from __future__ import annotations

import argparse

from pipeline.cli.declarations import GROUPS, filtering
from pipeline.cli.kit import UsageError, is_local, values_of
from pipeline.io.formats import input_format
from transforms.settings import InvalidSetting


def check_flags(known: argparse.Namespace, options) -> None:
    """Raises `UsageError` naming the flag and the fix for the first problem found."""
    from apache_beam.options.pipeline_options import StandardOptions

    streaming = options.view_as(StandardOptions).streaming
    _check_sources_and_sinks(known)
    try:
        for group in GROUPS:  # each declaration checks its own fields
            group.declaration(**values_of(known, group.declaration))
    except InvalidSetting as exc:
        raise UsageError(f"--{exc.name}: {exc.message}") from None
    if (known.rejected_output or known.rejected_table) and not filtering(known):
        raise UsageError(
            "--rejected_output and --rejected_table need a filter: add --keep_min_score or --keep_top_fraction"
        )
    if (known.input_subscription or known.input_topic) and not streaming:
        raise UsageError("Pub/Sub input runs as a streaming job: add --streaming")
    if known.keep_top_fraction is not None and streaming:
        raise UsageError(
            "--keep_top_fraction needs every score before it can cut, so it works in batch jobs only; "
            "in streaming use --keep_min_score"
        )
    if known.output_format != "jsonl" and streaming:
        raise UsageError(f"--output_format {known.output_format} is for batch jobs; a streaming job writes JSONL files")
    _check_shards_out(known)
    if known.overwrite and streaming:
        raise UsageError("--overwrite is for batch jobs; a streaming job adds its windows beside the earlier ones")
    if known.resume:
        _check_resume(known, streaming, is_local(options))
    if known.retry_failed and (streaming or not known.input or known.resume):
        raise UsageError(
            "--retry_failed is for batch jobs over --input files (an earlier run's scored files), without --resume"
        )
    if is_local(options):
        _check_local(known, streaming)


def _check_sources_and_sinks(known: argparse.Namespace) -> None:
    if sum(bool(source) for source in (known.input, known.input_subscription, known.input_topic)) != 1:
        raise UsageError("pass exactly one of --input, --input_subscription and --input_topic")
    if not known.output and not known.output_table:
        raise UsageError("pass --output (files), --output_table (BigQuery), or both")
    if known.input_format not in ("auto", "jsonl") and not known.input:
        raise UsageError(f"--input_format {known.input_format} is for --input files; Pub/Sub messages are JSON")
    if known.output_format != "jsonl" and not known.output:
        raise UsageError(f"--output_format {known.output_format} is the format of --output files: pass --output")


def _check_shards_out(known: argparse.Namespace) -> None:
    shards_in = bool(known.input) and input_format(known.input, known.input_format) == "webdataset"
    if known.output_format == "webdataset" and not shards_in:
        raise UsageError(
            "--output_format webdataset copies the samples of WebDataset shards: it needs .tar shards as --input "
            "(or --input_format webdataset); use jsonl or parquet for other inputs"
        )
    if known.samples_per_shard is not None and known.output_format != "webdataset":
        raise UsageError("--samples_per_shard is the size of WebDataset output shards: add --output_format webdataset")


def _check_local(known: argparse.Namespace, streaming: bool) -> None:
    if known.id_label:
        raise UsageError("--id_label works on the DataflowRunner only; Beam's local runners cannot deduplicate")
    if streaming and known.max_batch_duration_secs is not None:
        raise UsageError(
            "--max_batch_duration_secs needs the DataflowRunner: Beam's local streaming runner fires the "
            "batching timer only when the next Pub/Sub message arrives, so a record could wait indefinitely. "
            "Leave it out: locally the messages of each pull are scored together, without waiting"
        )


def _check_resume(known: argparse.Namespace, streaming: bool, local: bool) -> None:
    if streaming or not known.input:
        raise UsageError("--resume is for batch jobs over --input files (a Pub/Sub subscription keeps its own place)")
    if not local:
        raise UsageError(
            "--resume runs on the local runners; on Dataflow the service itself retries failed work (see "
            "docs/reliability.md, Resuming a stopped batch job)"
        )
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
    if filtering(known):
        raise UsageError(
            "--resume cannot filter yet (--keep_top_fraction needs every score at once, and a part's rejected "
            "records would need outputs of their own): score with --resume, then filter the files, e.g. with "
            "python -m pipeline.report's keep_top_thresholds"
        )
