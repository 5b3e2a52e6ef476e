"""The scoring job: JSONL files or Pub/Sub in; scored JSONL files and/or a BigQuery table out, plus a
dead letter (files, a Pub/Sub topic and/or a BigQuery table) for what is not a JSON object."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline import bigquery, flags, progress, records, workers
from pipeline.filters import KeepByScore
from pipeline.flags import UsageError
from pipeline.options import ScoreLongCLIPOptions
from pipeline.progress import ProgressMonitor
from pipeline.sinks import PublishJson, WriteJsonLines
from pipeline.sources import ReadJsonLines, ReadPubSubRecords
from transforms import (
    BatchSettings,
    CheckpointFormatError,
    CheckpointNotFoundError,
    ImageSettings,
    InvalidSetting,
    ModelSettings,
    OutputFields,
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
    if known.keep_top_fraction is not None and standard.streaming:
        raise UsageError(
            "--keep_top_fraction needs every score before it can cut, so it works in batch jobs only; "
            "in streaming use --keep_min_score"
        )
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
    if workers.is_dataflow(options):
        for note in workers.apply_worker_defaults(options):
            _LOGGER.info("Dataflow workers: %s", note)
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
    if job.output_table and flags.filtering(job) and not job.rejected_table:
        job.rejected_table = f"{job.output_table}_rejected"
    project = options.view_as(GoogleCloudOptions).project
    dry_run = options.view_as(TestOptions).dry_run
    tables = (
        ("output_table", bigquery.SCORED_SCHEMA),
        ("dead_letter_table", bigquery.DEAD_LETTER_SCHEMA),
        ("rejected_table", bigquery.REJECTED_SCHEMA),
    )
    for flag, schema in tables:
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


def build(pipeline: beam.Pipeline, options: ScoreLongCLIPOptions, progress_folder: Optional[str] = None) -> None:
    """Adds read → parse → ScoreLongCLIP → (filter →) write, and the dead letter, to `pipeline`.

    `progress_folder`: a local batch job's `ProgressMonitor` folder, where records read and scored are tallied.
    """
    if options.input:
        parsed = pipeline | "ReadJsonLines" >> ReadJsonLines(options.input, progress_folder)
        total_bytes = progress.input_size(options.input)
        if total_bytes is not None:  # for percent done on Dataflow, beside pipeline/input_bytes_read
            _ = pipeline | "InputSize" >> beam.Create([total_bytes]) | "CountInputBytes" >> beam.Map(_count_input_bytes)
    else:
        parsed = pipeline | "ReadPubSub" >> ReadPubSubRecords(
            subscription=options.input_subscription,
            topic=options.input_topic,
            id_label=options.id_label,
            timestamp_attribute=options.timestamp_attribute,
            attributes_key=options.attributes_key,
        )
    settings = flags.settings_from(options)
    score = ScoreLongCLIP(
        settings[ModelSettings],
        batching=settings[BatchSettings],
        fields=settings[RecordFields],
        images=settings[ImageSettings],
        metrics_namespace=SCORE_STEP,
    )
    dead_letters = [parsed[records.DEAD_LETTER]]
    if progress_folder:
        # Counted before any Flatten: the FnApiRunner runs what follows a Flatten only once all before it is done.
        outcomes = parsed.records | SCORE_STEP >> score.with_exception_handling()
        scored = [
            pcoll | f"Progress{name}" >> beam.ParDo(progress.CountProgress(progress_folder, progress.SCORED))
            for name, pcoll in zip(("Scored", "Failed"), outcomes, strict=True)
        ] | "ScoredAndFailed" >> beam.Flatten()
        dead_letters = [
            dead_letters[0]
            | "ProgressDeadLettered" >> beam.ParDo(progress.CountProgress(progress_folder, progress.DEAD_LETTERED))
        ]
    else:
        scored = parsed.records | SCORE_STEP >> score
    rejected = None
    if flags.filtering(options):
        scored, rejected = scored | "KeepByScore" >> KeepByScore(
            OutputFields(options.output_key), min_score=options.keep_min_score, top_fraction=options.keep_top_fraction
        )
    if options.output:
        scored | "WriteScored" >> WriteJsonLines(options.output, options.window_seconds)
    if options.output_table:
        rows = scored | "ToTableRows" >> beam.Map(
            bigquery.scored_row, fields=settings[RecordFields], model=options.model
        )
        dead_letters.append(
            rows | "WriteScoredToBigQuery" >> bigquery.WriteRows(options.output_table, bigquery.SCORED_SCHEMA)
        )
    if rejected is not None and (options.rejected_output or options.output):
        rejected | "WriteRejected" >> WriteJsonLines(
            options.rejected_output or f"{options.output}.rejected", options.window_seconds
        )
    if rejected is not None and options.rejected_table:
        rows = rejected | "ToRejectedRows" >> beam.Map(
            bigquery.rejected_row, fields=settings[RecordFields], model=options.model
        )
        dead_letters.append(
            rows | "WriteRejectedToBigQuery" >> bigquery.WriteRows(options.rejected_table, bigquery.REJECTED_SCHEMA)
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


def _count_input_bytes(total_bytes: int) -> None:
    Metrics.counter(records.METRICS_NAMESPACE, "input_bytes").inc(total_bytes)


def _log_unwritable(entry: dict) -> None:
    """The last resort for a dead-letter entry BigQuery refused: the worker log, at ERROR, in full."""
    _LOGGER.error("BigQuery refused a dead-letter entry; it is kept here only: %s", records.to_json(entry))


def run(
    argv: Optional[Sequence[str]] = None,
    save_main_session: bool = False,
    test_pipeline: Optional[beam.Pipeline] = None,
    wait: bool = True,
    progress_interval_secs: Optional[float] = 10.0,
) -> PipelineResult:
    """Runs the job and returns its result (counts are in its metrics, see `summarize`).

    Before anything runs: flags are checked, Dataflow worker settings filled in (`pipeline.workers`), BigQuery
    tables made or checked, on a local runner the model and device checked, and the checkpoint's header read;
    any of these raises `UsageError`. With `wait` it returns when the job
    ends: a batch job when all input is done, a streaming job when cancelled. Without, it returns the
    running job (e.g. to cancel a streaming job later). A local batch job reports its progress every
    `progress_interval_secs` (None: never) while it runs: see `pipeline.progress`.
    """
    options = parse_options(argv)
    ensure_tables(options)  # after the checks that need no network
    if is_local(options):
        check_model_here(options)
    options.view_as(SetupOptions).save_main_session = save_main_session
    pipeline = test_pipeline or beam.Pipeline(options=options)
    job = options.view_as(ScoreLongCLIPOptions)
    reports = job.input and is_local(options) and progress_interval_secs
    # A local batch job runs inside `pipeline.run()`: the monitor's thread reports while it does.
    with (
        ProgressMonitor(progress.input_size(job.input), progress_interval_secs) if reports else nullcontext() as monitor
    ):
        try:  # building reads the checkpoint's header (its input sizes), here, once: workers only load the model
            build(pipeline, job, monitor.folder if monitor else None)
        except (CheckpointNotFoundError, CheckpointFormatError) as exc:
            raise UsageError(f"--model: {exc}") from None
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
    if "kept" in counts or "rejected" in counts:
        logger.info("Filter: %d kept, %d rejected", counts.get("kept", 0), counts.get("rejected", 0))
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_", "bigquery_")):
            logger.info("  %s: %d", name, counts[name])
    return 0
