"""The scoring job: JSONL, WebDataset or Parquet files, or Pub/Sub in; scored JSONL or Parquet files and/or
a BigQuery table out, plus a dead letter (files, a Pub/Sub topic and/or a BigQuery table) for what cannot
be read as a record."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline import bigquery, flags, parquet, progress, records, resume
from pipeline.filters import KeepByScore
from pipeline.flags import UsageError
from pipeline.options import ScoreLongCLIPOptions, input_format, is_local, parse_options
from pipeline.parts import InputPart, InputProblem, is_local_path, local_path, plan_parts
from pipeline.progress import ProgressMonitor
from pipeline.sinks import PublishJson, WriteJsonLines
from pipeline.sources import ReadJsonLines, ReadPubSubRecords
from pipeline.webdataset import ReadWebDataset, SampleLayout
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


class InputPlan(NamedTuple):
    """The parts of the --input files, and the ones this run reads (all, unless --resume found some done).

    `files`: their format (`options.input_format`). JSONL files are cut into parts of --input_part_bytes;
    WebDataset shards and Parquet files are one part each, read by their own readers."""

    parts: tuple[InputPart, ...]
    todo: tuple[InputPart, ...]
    files: str = "jsonl"

    def total_bytes(self) -> Optional[int]:
        """The bytes of JSONL lines this run reads, for percent done; None when a part is compressed (its size
        is not known) or the files are not JSONL."""
        if self.files != "jsonl" or any(part.compressed for part in self.todo):
            return None
        return sum(part.end - part.start for part in self.todo)


def check_files(options: PipelineOptions) -> Optional[InputPlan]:
    """Finds the --input files and checks the output locations before the job starts; `file://` paths
    become local ones. With --resume, leaves out the parts whose outputs are there. Raises `UsageError`."""
    job = options.view_as(ScoreLongCLIPOptions)
    local = is_local(options)
    for flag in ("input", "output", "dead_letter"):
        value = getattr(job, flag)
        if not value:
            continue
        try:
            value = local_path(value)
        except InputProblem as exc:
            raise UsageError(f"--{flag}: {exc}") from None
        setattr(job, flag, value)
        if is_local_path(value) and not local:
            raise UsageError(f"--{flag}: {value!r} is on this machine, out of the workers' reach: use a gs:// path")
        if flag != "input" and is_local_path(value):
            _check_output_prefix(flag, value)
    if not job.input:
        return None
    try:
        plan = plan_input(job)
    except InputProblem as exc:
        raise UsageError(f"--input: {exc}") from None
    size = sum(part.end - part.start for part in plan.parts)
    files = len({part.path for part in plan.parts})
    if plan.files == "jsonl":
        _LOGGER.info("Input: %d file(s) matching %s, %s in %d part(s)", files, job.input, _size(size), len(plan.parts))
    else:
        _LOGGER.info("Input: %d %s file(s) matching %s, %s", files, plan.files, job.input, _size(size))
    if job.resume:
        old = resume.unresumable_outputs(job.output)
        if old:
            raise UsageError(
                f"--output: {old[0]} is from a run without --resume; with it some lines would come out twice: "
                "pass a new --output, or move those files away"
            )
        done = len(plan.parts) - len(plan.todo)
        done_bytes = sum(part.end - part.start for part in plan.parts if part not in plan.todo)
        _LOGGER.info(
            "Resume: %d of %d part(s) (%s) already have their outputs and are not read again; %d to go",
            done,
            len(plan.parts),
            _size(done_bytes),
            len(plan.todo),
        )
    return plan


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def plan_input(options: ScoreLongCLIPOptions) -> InputPlan:
    """The parts of --input; with --resume, those without outputs under --output. Raises `InputProblem`."""
    files = input_format(options.input, options.input_format)
    part_bytes = options.input_part_bytes if files == "jsonl" else sys.maxsize
    parts = tuple(plan_parts(options.input, part_bytes))
    todo = resume.progress(parts, options.output).todo if options.resume else parts
    return InputPlan(parts, todo, files)


def _check_output_prefix(flag: str, prefix: str) -> None:
    """A local output prefix names files in a folder that exists or can be made, and can be written."""
    if prefix.endswith(os.sep) or os.path.isdir(prefix):
        example = os.path.join(prefix, "scored")
        raise UsageError(f"--{flag}: {prefix!r} is a folder; give a path prefix in it, such as {example!r}")
    existing = os.path.dirname(os.path.abspath(prefix))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--{flag}: {existing!r} is a file, so no folder can be made there for {prefix!r}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--{flag}: cannot write in {existing!r} (permission denied)")


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
        ("output_table", bigquery.scored_schema(job.embeddings)),
        ("dead_letter_table", bigquery.DEAD_LETTER_SCHEMA),
        ("rejected_table", bigquery.rejected_schema(job.embeddings)),
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


def build(
    pipeline: beam.Pipeline,
    options: ScoreLongCLIPOptions,
    plan: Optional[InputPlan] = None,
    progress_folder: Optional[str] = None,
) -> None:
    """Adds read → parse → ScoreLongCLIP → (filter →) write, and the dead letter, to `pipeline`.

    `plan`: the input files (and JSONL parts) from `check_files` (found here when not given).
    `progress_folder`: a local batch job's `ProgressMonitor` folder, where records read and scored are tallied.
    """
    settings = flags.settings_from(options)
    if options.input:
        plan = plan or plan_input(options)
    files = plan.files if plan else None
    if files == "jsonl":
        parsed = pipeline | "ReadJsonLines" >> ReadJsonLines(plan.todo, options.max_line_bytes, progress_folder)
        total_bytes = plan.total_bytes()
        if total_bytes is not None:  # for percent done on Dataflow, beside pipeline/input_bytes_read
            _ = pipeline | "InputSize" >> beam.Create([total_bytes]) | "CountInputBytes" >> beam.Map(_count_input_bytes)
    elif files == "webdataset":
        layout = SampleLayout(
            image_key=settings[RecordFields].image_key,
            text_key=settings[RecordFields].text_key,
            image_extensions=tuple(options.image_extensions.lower().split(",")),
            max_image_bytes=settings[ImageSettings].max_image_bytes,
        )
        parsed = pipeline | "ReadWebDataset" >> ReadWebDataset(options.input, layout)
    elif files == "parquet":
        parsed = pipeline | "ReadParquet" >> parquet.ReadParquetRecords(options.input)
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
    read, dead_letters = parsed.records, [parsed[records.DEAD_LETTER]]
    if progress_folder and files != "jsonl":  # JSONL lines are tallied as they are read, dead letters included
        read = read | "ProgressRead" >> beam.ParDo(progress.CountProgress(progress_folder, progress.READ))
        dead_letters = [
            dead_letters[0]
            | "ProgressReadDeadLetters" >> beam.ParDo(progress.CountProgress(progress_folder, progress.READ))
        ]
    if progress_folder:
        # Counted before any Flatten: the FnApiRunner runs what follows a Flatten only once all before it is done.
        outcomes = read | SCORE_STEP >> score.with_exception_handling()
        scored = [
            pcoll | f"Progress{name}" >> beam.ParDo(progress.CountProgress(progress_folder, progress.SCORED))
            for name, pcoll in zip(("Scored", "Failed"), outcomes, strict=True)
        ] | "ScoredAndFailed" >> beam.Flatten()
        dead_letters = [
            dead_letters[0]
            | "ProgressDeadLettered" >> beam.ParDo(progress.CountProgress(progress_folder, progress.DEAD_LETTERED))
        ]
    else:
        scored = read | SCORE_STEP >> score
    if options.resume:
        tagged = (
            scored | "TagScored" >> beam.Map(lambda record: (resume.SCORED, record)),
            dead_letters[0] | "TagDeadLetters" >> beam.Map(lambda entry: (resume.DEAD, entry)),
        )
        dead_letter = options.dead_letter or f"{options.output}.dead_letter"
        tagged | "Tagged" >> beam.Flatten() | "WriteParts" >> resume.WriteParts(plan.todo, options.output, dead_letter)
        return
    rejected = None
    if flags.filtering(options):
        scored, rejected = scored | "KeepByScore" >> KeepByScore(
            OutputFields(options.output_key), min_score=options.keep_min_score, top_fraction=options.keep_top_fraction
        )
    rejected_output = options.rejected_output or (f"{options.output}.rejected" if options.output else None)
    if options.output and options.output_format == "parquet":
        scored_table, rejected_table = _parquet_tables(options, settings, files)
        scored | "WriteScored" >> parquet.WriteParquet(options.output, scored_table)
        if rejected is not None and rejected_output:
            rejected | "WriteRejected" >> parquet.WriteParquet(rejected_output, rejected_table)
    elif options.output:
        scored | "WriteScored" >> WriteJsonLines(options.output, options.window_seconds)
    if rejected is not None and rejected_output and options.output_format != "parquet":
        rejected | "WriteRejected" >> WriteJsonLines(rejected_output, options.window_seconds)
    if options.output_table:
        rows = scored | "ToTableRows" >> beam.Map(
            bigquery.scored_row, fields=settings[RecordFields], model=options.model
        )
        dead_letters.append(
            rows
            | "WriteScoredToBigQuery"
            >> bigquery.WriteRows(options.output_table, bigquery.scored_schema(options.embeddings))
        )
    if rejected is not None and options.rejected_table:
        rows = rejected | "ToRejectedRows" >> beam.Map(
            bigquery.rejected_row, fields=settings[RecordFields], model=options.model
        )
        dead_letters.append(
            rows
            | "WriteRejectedToBigQuery"
            >> bigquery.WriteRows(options.rejected_table, bigquery.rejected_schema(options.embeddings))
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


def _log_outputs(job: ScoreLongCLIPOptions) -> None:
    """Says where the job reads from (Pub/Sub; files are said by `check_files`) and where every record goes."""
    if not job.input:
        _LOGGER.info("Input: Pub/Sub %s", job.input_subscription or f"{job.input_topic} (temporary subscription)")
    scored = []
    if job.output:
        extension = ".parquet" if job.output_format == "parquet" else ".jsonl"
        scored.append(f"{job.output}-part-ID.jsonl files" if job.resume else f"{job.output}-*{extension} files")
    if job.output_table:
        scored.append(f"BigQuery table {job.output_table}")
    dead = [f"BigQuery table {job.dead_letter_table}"] if job.dead_letter_table else []
    if job.dead_letter_topic:
        dead.append(f"Pub/Sub topic {job.dead_letter_topic}")
    if job.dead_letter or (job.output and not dead):
        name = "-part-ID.jsonl" if job.resume else "-*.jsonl"
        dead.append(f"{job.dead_letter or job.output + '.dead_letter'}{name} files")
    _LOGGER.info("Scored records (score 0.0 with a reason when they cannot be) go to %s", " and ".join(scored))
    _LOGGER.info("Dead letters (lines that are not JSON objects, refused rows) go to %s", " and ".join(dead))


def _parquet_tables(
    options: ScoreLongCLIPOptions, settings: dict, files: Optional[str]
) -> tuple[parquet.ScoredTable, parquet.ScoredTable]:
    """The Parquet output's columns, for scored and for rejected records (which also carry the cutoff that
    rejected them): the input's own when it is Parquet (read from the files' footers now, once)."""
    input_schema = None
    if files == "parquet":
        try:
            input_schema = parquet.read_schema(options.input)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--input: {exc}") from None
    key_columns = ("__key__", "__url__") if files == "webdataset" else ()
    return tuple(
        parquet.ScoredTable(
            settings[RecordFields], input_schema=input_schema, key_columns=key_columns, with_cutoff=with_cutoff
        )
        for with_cutoff in (False, True)
    )


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
    plan = check_files(options)
    _log_outputs(options.view_as(ScoreLongCLIPOptions))
    options.view_as(SetupOptions).save_main_session = save_main_session
    if options.view_as(ScoreLongCLIPOptions).resume:
        return _run_part_by_part(options, plan)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    job = options.view_as(ScoreLongCLIPOptions)
    reports = job.input and is_local(options) and progress_interval_secs
    # A local batch job runs inside `pipeline.run()`: the monitor's thread reports while it does.
    with (
        ProgressMonitor(plan.total_bytes() if plan else None, progress_interval_secs) if reports else nullcontext()
    ) as monitor:
        try:  # building reads the checkpoint's header (its input sizes), here, once: workers only load the model
            build(pipeline, job, plan, monitor.folder if monitor else None)
        except (CheckpointNotFoundError, CheckpointFormatError) as exc:
            raise UsageError(f"--model: {exc}") from None
        result = pipeline.run()
        if wait:
            result.wait_until_finish()
    return result


def _run_part_by_part(options: PipelineOptions, plan: InputPlan) -> PipelineResult:
    """--resume: one local pipeline per input part, each ending with the part's files in place, so a job
    stopped at any point loses at most the part it was on. (Beam's local runner runs a pipeline stage by
    stage, so within one pipeline no part would be done before all are read.)"""
    results = []
    for number, part in enumerate(plan.todo, 1):
        pipeline = beam.Pipeline(options=options)
        build(pipeline, options.view_as(ScoreLongCLIPOptions), InputPlan(plan.parts, (part,)))
        result = pipeline.run()
        result.wait_until_finish()
        results.append(result)
        _LOGGER.info("Part %d of %d done: %s, bytes %d to %d", number, len(plan.todo), part.path, part.start, part.end)
    return resume.PartByPartResult(results)


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

    Returns the process exit code: 0; 1 when the job failed (e.g. Pub/Sub unreachable from the local
    runner), after logging why and the counts so far; 130 when a Dataflow job was left running on Ctrl-C.
    """
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

    failed = False
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        if isinstance(result, DataflowPipelineResult):
            _LOGGER.info("Stopped waiting; the Dataflow job goes on running (gcloud dataflow jobs cancel stops it)")
            return 130
        _LOGGER.info("Interrupted: cancelling the job")
        result.cancel()
    except Exception as exc:  # noqa: BLE001 - whatever stopped the job, say so and give the counts
        log_failure(exc)
        failed = True
    counts = summarize(result)
    logger = logging.getLogger("pipeline")
    logger.info(
        "%s: %d records read, %d scored, %d scored 0.0 with an error, %d dead-lettered, %d captions truncated",
        "Stopped by the failure above" if failed else "Done",
        counts.get("read", 0),
        counts.get("scored", 0),
        counts.get("failed", 0),
        counts.get("dead_lettered", 0),
        counts.get("truncated", 0),
    )
    if "kept" in counts or "rejected" in counts:
        logger.info("Filter: %d kept, %d rejected", counts.get("kept", 0), counts.get("rejected", 0))
    for name in sorted(counts):
        if name.startswith(("failed_", "dead_lettered_", "bigquery_")) or name == resume.PARTS_DONE:
            logger.info("  %s: %d", name, counts[name])
    return 1 if failed else 0


def log_failure(exc: BaseException) -> None:
    """The traceback, then one line that says what stopped the job (just before the counts)."""
    _LOGGER.error("Traceback of the failure:", exc_info=exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    _LOGGER.error("The job failed: %s: %s", type(exc).__name__, first[:500])
