"""The scoring job: JSONL, WebDataset or Parquet files, or Pub/Sub in; scored JSONL or Parquet files and/or
a BigQuery table out, plus a dead letter (files, a Pub/Sub topic and/or a BigQuery table) for what cannot
be read as a record."""

from __future__ import annotations

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

from pipeline import bigquery, flags, parquet, records
from pipeline.flags import UsageError
from pipeline.options import ScoreLongCLIPOptions
from pipeline.sinks import PublishJson, WriteJsonLines
from pipeline.sources import ReadJsonLines, ReadPubSubRecords, input_format
from pipeline.webdataset import ReadWebDataset, SampleLayout
from transforms import (
    BatchSettings,
    CheckpointFormatError,
    CheckpointNotFoundError,
    ImageSettings,
    InvalidSetting,
    ModelSettings,
    RecordFields,
    ScoreLongCLIP,
    pick_device,
    read_architecture,
    resolve_checkpoint,
)

_LOGGER = logging.getLogger(__name__)

# The job's ScoreLongCLIP step, and the namespace of its counters.
SCORE_STEP = "ScoreLongCLIP"


def parse_options(argv: Optional[Sequence[str]]) -> PipelineOptions:
    """Parses our flags and every Beam option, checks what can be checked offline, and picks the local
    runner when none is given. Raises `UsageError`; `--help` and malformed values exit through argparse."""
    known = flags.check_flags(argv)
    options = PipelineOptions(argv)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:
        raise UsageError(
            f"unknown flag(s) {', '.join('--' + name for name in sorted(unknown))}: "
            "neither this job's nor a Beam pipeline option"
        )
    standard = options.view_as(StandardOptions)
    if (known.input_subscription or known.input_topic) and not standard.streaming:
        raise UsageError("Pub/Sub input runs as a streaming job: add --streaming")
    if known.output_format == "parquet" and standard.streaming:
        raise UsageError("--output_format parquet is for batch jobs; a streaming job writes JSONL files")
    if standard.runner is None:
        standard.runner = flags.DEFAULT_LOCAL_STREAMING_RUNNER if standard.streaming else flags.DEFAULT_LOCAL_RUNNER
    if is_local(options):
        if known.id_label:
            raise UsageError("--id_label works on the DataflowRunner only; Beam's local runners cannot deduplicate")
        if standard.streaming and known.max_batch_duration_secs is not None:
            raise UsageError(
                "--max_batch_duration_secs needs the DataflowRunner: Beam's local streaming runner fires the "
                "batching timer only when the next Pub/Sub message arrives, so a record could wait indefinitely. "
                "Leave it out: locally the messages of each pull are scored together, without waiting"
            )
    return options


def is_local(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in StandardOptions.LOCAL_RUNNERS


def check_model_here(options: PipelineOptions) -> None:
    """Local workers run on this machine, so a bad --model or --device fails here, before the job starts."""
    settings = flags.settings_from(options.view_as(ScoreLongCLIPOptions))[ModelSettings]
    try:
        pick_device(settings.device)
        read_architecture(resolve_checkpoint(settings.model))
    except InvalidSetting as exc:
        raise UsageError(f"--{exc.name}: {exc.message}") from None
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        raise UsageError(f"--model: {exc}") from None


def ensure_tables(options: PipelineOptions) -> None:
    """Fills in the default dead-letter table, writes table specs as PROJECT:DATASET.TABLE, and (unless
    --dry_run) creates missing tables or checks the columns of existing ones, over the network."""
    job = options.view_as(ScoreLongCLIPOptions)
    if job.output_table and not (job.dead_letter or job.dead_letter_topic or job.dead_letter_table or job.output):
        job.dead_letter_table = f"{job.output_table}_dead_letter"
    project = options.view_as(GoogleCloudOptions).project
    dry_run = options.view_as(TestOptions).dry_run
    scored_schema = bigquery.scored_schema(job.embeddings)
    for flag, schema in (("output_table", scored_schema), ("dead_letter_table", bigquery.DEAD_LETTER_SCHEMA)):
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
            raise UsageError(f"--{flag}: {exc}") from None
        setattr(job, flag, resolved)


def build(pipeline: beam.Pipeline, options: ScoreLongCLIPOptions) -> None:
    """Adds read → parse → ScoreLongCLIP → write, and the dead letter, to `pipeline`."""
    settings = flags.settings_from(options)
    files = input_format(options.input, options.input_format) if options.input else None
    if files == "webdataset":
        layout = SampleLayout(
            image_key=settings[RecordFields].image_key,
            text_key=settings[RecordFields].text_key,
            image_extensions=tuple(options.image_extensions.lower().split(",")),
            max_image_bytes=settings[ImageSettings].max_image_bytes,
        )
        parsed = pipeline | "ReadWebDataset" >> ReadWebDataset(options.input, layout)
    elif files == "parquet":
        parsed = pipeline | "ReadParquet" >> parquet.ReadParquetRecords(options.input)
    elif files == "jsonl":
        parsed = pipeline | "ReadJsonLines" >> ReadJsonLines(options.input)
    else:
        parsed = pipeline | "ReadPubSub" >> ReadPubSubRecords(
            subscription=options.input_subscription,
            topic=options.input_topic,
            id_label=options.id_label,
            timestamp_attribute=options.timestamp_attribute,
            attributes_key=options.attributes_key,
        )
    score = ScoreLongCLIP(
        settings[ModelSettings],
        batching=settings[BatchSettings],
        fields=settings[RecordFields],
        images=settings[ImageSettings],
        metrics_namespace=SCORE_STEP,
    )
    scored = parsed.records | SCORE_STEP >> score
    dead_letters = [parsed[records.DEAD_LETTER]]
    if options.output and options.output_format == "parquet":
        scored | "WriteScored" >> parquet.WriteParquet(options.output, _scored_table(options, settings, files))
    elif options.output:
        scored | "WriteScored" >> WriteJsonLines(options.output, options.window_seconds)
    if options.output_table:
        rows = scored | "ToTableRows" >> beam.Map(
            bigquery.scored_row, fields=settings[RecordFields], model=options.model
        )
        schema = bigquery.scored_schema(options.embeddings)
        dead_letters.append(rows | "WriteScoredToBigQuery" >> bigquery.WriteRows(options.output_table, schema))
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


def _scored_table(options: ScoreLongCLIPOptions, settings: dict, files: Optional[str]) -> parquet.ScoredTable:
    """The Parquet output's columns: the input's own when it is Parquet (read from the files' footers now)."""
    input_schema = None
    if files == "parquet":
        try:
            input_schema = parquet.read_schema(options.input)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--input: {exc}") from None
    key_columns = ("__key__", "__url__") if files == "webdataset" else ()
    return parquet.ScoredTable(settings[RecordFields], input_schema=input_schema, key_columns=key_columns)


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

    Before anything runs: flags are checked, BigQuery tables made or checked, and on a local runner the
    model and device checked; any of these raises `UsageError`. With `wait` it returns when the job
    ends: a batch job when all input is done, a streaming job when cancelled. Without, it returns the
    running job (e.g. to cancel a streaming job later).
    """
    options = parse_options(argv)
    ensure_tables(options)  # after the checks that need no network
    if is_local(options):
        check_model_here(options)
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
    for namespace in (records.METRICS_NAMESPACE, SCORE_STEP):
        for counter in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
            name = counter.key.metric.name
            counts[name] = counts.get(name, 0) + (counter.committed or 0)
    return counts


def report(result: PipelineResult) -> int:
    """Waits for the job (Ctrl-C cancels a local one) and logs what became of every input record.

    Returns the process exit code: 0, or 130 when a Dataflow job was left running on Ctrl-C.
    """
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        if isinstance(result, DataflowPipelineResult):
            _LOGGER.info("Stopped waiting; the Dataflow job goes on running (gcloud dataflow jobs cancel stops it)")
            return 130
        _LOGGER.info("Interrupted: cancelling the job")
        result.cancel()
    counts = summarize(result)
    logger = logging.getLogger("pipeline")
    logger.info(
        "Done: %d records read, %d scored, %d scored 0.0 with an error, %d dead-lettered, %d captions truncated",
        counts.get("read", 0),
        counts.get("scored", 0),
        counts.get("failed", 0),
        counts.get("dead_lettered", 0),
        counts.get("truncated", 0),
    )
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_", "bigquery_")):
            logger.info("  %s: %d", name, counts[name])
    return 0
