"""The scoring job: JSONL files or Pub/Sub in; scored JSONL files and/or a BigQuery table out, plus a
dead letter (files, a Pub/Sub topic and/or a BigQuery table) for what is not a JSON object."""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline import bigquery, records
from pipeline.options import ScoreLongCLIPOptions
from pipeline.sinks import PublishJson, WriteJsonLines
from pipeline.sources import ReadJsonLines, ReadPubSubRecords
from transforms import CheckpointFormatError, CheckpointNotFoundError, ScoreLongCLIP, resolve_checkpoint
from transforms.beam import score as score_transform
from transforms.model.architecture import read_architecture
from transforms.model.device import pick_device

_LOGGER = logging.getLogger(__name__)

# The default DirectRunner first tries to download Prism, which fails offline.
DEFAULT_LOCAL_RUNNER = "FnApiRunner"
DEFAULT_LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"


def parse_options(argv: Optional[Sequence[str]]) -> PipelineOptions:
    """Parses our flags (so `--help` and bad values fail early and clearly) plus every Beam option.

    Also makes sure BigQuery tables exist (unless `--dry_run`), so a wrong table fails before the job starts.
    """
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        allow_abbrev=False,  # Beam's own parsing does not expand abbreviations: both must agree
        description="Score image/long-caption alignment with LongCLIP on Apache Beam.",
        epilog="Every standard Beam pipeline option (--runner, --streaming, --project, --region, --temp_location, "
        f"...) is accepted too. Without --runner the job runs locally on the {DEFAULT_LOCAL_RUNNER} "
        f"(the {DEFAULT_LOCAL_STREAMING_RUNNER} with --streaming).",
    )
    ScoreLongCLIPOptions._add_argparse_args(parser)
    known, _ = parser.parse_known_args(argv)
    if sum(bool(source) for source in (known.input, known.input_subscription, known.input_topic)) != 1:
        parser.error("pass exactly one of --input, --input_subscription and --input_topic")
    if not known.output and not known.output_table:
        parser.error("pass --output (files), --output_table (BigQuery), or both")
    if known.min_batch_size < 1 or known.max_batch_size < known.min_batch_size:
        parser.error("need 1 <= --min_batch_size <= --max_batch_size")
    if known.max_batch_duration_secs is not None and known.max_batch_duration_secs <= 0:
        parser.error("--max_batch_duration_secs must be > 0")
    if known.window_seconds <= 0:
        parser.error("--window_seconds must be > 0")
    options = PipelineOptions(argv)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:
        parser.error(
            f"unknown flag(s) {', '.join('--' + name for name in sorted(unknown))}: "
            "neither this job's nor a Beam pipeline option"
        )
    standard = options.view_as(StandardOptions)
    job = options.view_as(ScoreLongCLIPOptions)
    if (known.input_subscription or known.input_topic) and not standard.streaming:
        parser.error("Pub/Sub input runs as a streaming job: add --streaming")
    if standard.runner is None:
        standard.runner = DEFAULT_LOCAL_STREAMING_RUNNER if standard.streaming else DEFAULT_LOCAL_RUNNER
    local = standard.runner in StandardOptions.LOCAL_RUNNERS
    if local:
        if known.id_label:
            parser.error("--id_label works on the DataflowRunner only; Beam's local runners cannot deduplicate")
        if standard.streaming and known.max_batch_duration_secs is not None:
            parser.error(
                "--max_batch_duration_secs needs the DataflowRunner: Beam's local streaming runner fires the "
                "batching timer only when the next Pub/Sub message arrives, so a record could wait indefinitely. "
                "Leave it out: locally the messages of each pull are scored together, without waiting"
            )
    _resolve_tables(parser, job, options)  # after the checks that need no network
    if local:
        _check_locally(parser, known.model, known.device)
    return options


def _check_locally(parser: argparse.ArgumentParser, model: str, device: Optional[str]) -> None:
    """Local workers run on this machine, so a bad --model or --device fails here, before the job starts."""
    try:
        pick_device(device)
    except RuntimeError as exc:  # unknown device strings and CUDA requested where there is none
        parser.error(f"--device: {exc}")
    try:
        read_architecture(resolve_checkpoint(model))
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        parser.error(f"--model: {exc}")


def _resolve_tables(parser: argparse.ArgumentParser, job: ScoreLongCLIPOptions, options: PipelineOptions) -> None:
    """Fills in the default dead-letter table, writes table specs as PROJECT:DATASET.TABLE, and (unless
    --dry_run) creates missing tables or checks the columns of existing ones."""
    if job.output_table and not (job.dead_letter or job.dead_letter_topic or job.dead_letter_table or job.output):
        job.dead_letter_table = f"{job.output_table}_dead_letter"
    project = options.view_as(GoogleCloudOptions).project
    dry_run = options.view_as(TestOptions).dry_run
    for flag, schema in (("output_table", bigquery.SCORED_SCHEMA), ("dead_letter_table", bigquery.DEAD_LETTER_SCHEMA)):
        spec = getattr(job, flag)
        if not spec:
            continue
        try:
            if dry_run:
                reference = bigquery.table_reference(spec, project)
                resolved = f"{reference.projectId}:{reference.datasetId}.{reference.tableId}"
            else:
                resolved = bigquery.ensure_table(spec, project, schema)
        except Exception as exc:  # bad spec, missing dataset, wrong columns, no credentials, API errors
            parser.error(f"--{flag}: {exc}")
        setattr(job, flag, resolved)


def build(pipeline: beam.Pipeline, options: ScoreLongCLIPOptions) -> None:
    """Adds read → parse → ScoreLongCLIP → write, and the dead letter, to `pipeline`."""
    if options.input:
        parsed = pipeline | "ReadJsonLines" >> ReadJsonLines(options.input)
    else:
        parsed = pipeline | "ReadPubSub" >> ReadPubSubRecords(
            subscription=options.input_subscription,
            topic=options.input_topic,
            id_label=options.id_label,
            timestamp_attribute=options.timestamp_attribute,
            attributes_key=options.attributes_key,
        )
    scored = parsed.records | "ScoreLongCLIP" >> ScoreLongCLIP(
        options.model,
        device=options.device,
        precision=options.precision,
        stored_weights=options.stored_weights,
        image_key=options.image_key,
        text_key=options.text_key,
        output_key=options.output_key,
        image_root=options.image_root,
        min_batch_size=options.min_batch_size,
        max_batch_size=options.max_batch_size,
        max_batch_duration_secs=options.max_batch_duration_secs,
        share_model_across_processes=options.share_model_across_processes,
        max_image_bytes=options.max_image_bytes,
        max_image_pixels=options.max_image_pixels,
        http_timeout_secs=options.http_timeout_secs,
    )
    dead_letters = [parsed[records.DEAD_LETTER]]
    if options.output:
        scored | "WriteScored" >> WriteJsonLines(options.output, options.window_seconds)
    if options.output_table:
        rows = scored | "ToTableRows" >> beam.Map(
            bigquery.scored_row,
            image_key=options.image_key,
            text_key=options.text_key,
            output_key=options.output_key,
            model=options.model,
        )
        dead_letters.append(
            rows | "WriteScoredToBigQuery" >> bigquery.WriteRows(options.output_table, bigquery.SCORED_SCHEMA)
        )
    dead_letter = dead_letters | "DeadLetters" >> beam.Flatten()
    if options.dead_letter or (options.output and not (options.dead_letter_topic or options.dead_letter_table)):
        dead_letter | "WriteDeadLetter" >> WriteJsonLines(
            options.dead_letter or f"{options.output}.dead_letter", options.window_seconds
        )
    if options.dead_letter_topic:
        dead_letter | "PublishDeadLetter" >> PublishJson(options.dead_letter_topic)
    if options.dead_letter_table:
        (
            dead_letter
            | "ToDeadLetterRows" >> beam.Map(bigquery.dead_letter_row)
            | "WriteDeadLetterToBigQuery" >> bigquery.WriteRows(options.dead_letter_table, bigquery.DEAD_LETTER_SCHEMA)
            | "LogUnwritable" >> beam.Map(_log_unwritable)
        )


def _log_unwritable(entry: dict) -> None:
    """The last resort for a dead-letter entry BigQuery refused: the worker log, at ERROR, in full."""
    _LOGGER.error("BigQuery refused a dead-letter entry; it is kept here only: %s", records.to_json(entry))


def run(
    argv: Optional[Sequence[str]] = None,
    save_main_session: bool = False,
    test_pipeline: Optional[beam.Pipeline] = None,
    wait: bool = True,
) -> PipelineResult:
    """Runs the job and returns its result (counts are in its metrics, see `summarize`).

    With `wait` it returns when the job ends: a batch job when all input is done, a streaming job when
    cancelled. Without, it returns the running job (e.g. to cancel a streaming job later).
    """
    options = parse_options(argv)
    options.view_as(SetupOptions).save_main_session = save_main_session
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, options.view_as(ScoreLongCLIPOptions))
    result = pipeline.run()
    if wait:
        result.wait_until_finish()
    return result


def summarize(result: PipelineResult) -> dict[str, int]:
    """Committed counters of the job: read, dead_lettered[_<reason>], scored, failed[_<reason>], truncated."""
    counts: dict[str, int] = {}
    for namespace in (records.METRICS_NAMESPACE, score_transform.METRICS_NAMESPACE):
        for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
            name = counter.key.metric.name
            counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts
