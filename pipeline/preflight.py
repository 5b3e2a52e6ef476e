"""Everything checked and decided before a job is submitted, resolved once into a `JobPlan`: the input files and
their parts, every destination with its default, the BigQuery tables (made or checked), the model (on a local
runner: loaded far enough to know it works) and its input sizes, and the Dataflow workers' defaults.

Each problem a user can fix raises `UsageError` naming the flag and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Optional

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TestOptions,
)

from pipeline import dataflow, retry
from pipeline.cli.command import Flags
from pipeline.cli.declarations import filtering, settings_from
from pipeline.cli.kit import DEFAULT_LOCAL_STREAMING_RUNNER, UsageError, is_local
from pipeline.destinations import check_collisions, check_input, earlier_outputs, manifest_text, resume_state
from pipeline.io import bigquery, manifests, parquet, parquet_rows
from pipeline.io.formats import DEFAULT_SAMPLES_PER_SHARD, input_format
from pipeline.io.parts import InputProblem, plan_parts
from pipeline.plan import Destinations, FileInput, JobPlan, KeepFilter, PubSubInput, Scoring
from pipeline.runs import record, store
from transforms.inputs.locations import has_scheme, local_path
from transforms.model.architecture import read_architecture
from transforms.model.device import pick_device
from transforms.model.formats import CheckpointFormatError
from transforms.model.header import InputSizes, read_input_sizes
from transforms.model.locate import CheckpointNotFoundError, resolve_checkpoint
from transforms.outputs import OutputFields
from transforms.settings import BatchSettings, ImageSettings, InvalidSetting, ModelSettings, RecordFields

_LOGGER = logging.getLogger(__name__)


def preflight(flags: Flags, *, save_main_session: bool = False) -> JobPlan:
    """The plan of the job `flags` describe. Raises `UsageError`."""
    started_at = record.now()
    job, options = flags.job, flags.beam
    local = is_local(options)
    settings = settings_from(job)
    beam, model = workers(flags, settings[ModelSettings], save_main_session=save_main_session)
    destinations = plan_destinations(flags)
    check_collisions(job, destinations)
    if local:
        _check_model_here(model)
    source = _file_input(job, local) if job.input else _pubsub_input(job, options)
    if isinstance(source, FileInput):
        check_input(job, destinations, source)
    scoring = Scoring(
        _with_input_sizes(model), settings[BatchSettings], settings[RecordFields], settings[ImageSettings]
    )
    source, remove_first, manifest = _earlier_runs(flags, destinations, source, scoring)
    plan = JobPlan(
        source=source,
        destinations=destinations,
        scoring=scoring,
        keep=KeepFilter(job.keep_min_score, job.keep_top_fraction) if filtering(job) else None,
        resume=job.resume,
        local=local,
        beam=beam,
        input_schema=_input_schema(source, provenance=not job.retry_failed),
        retry_failed=job.retry_failed,
        max_failed_fraction=job.max_failed_fraction,
        remove_first=remove_first,
        resume_manifest=manifest,
    )
    plan = _with_run_record(plan, flags, started_at)
    if plan.retry_failed:
        retry.check_previous(plan)
    _log_destinations(plan)
    return plan


def _with_run_record(plan: JobPlan, flags: Flags, started_at: str) -> JobPlan:
    """The plan with its run record (the checkpoint hashed once, here); `<output_table>_runs` made or checked.
    A --dry_run runs nothing, so it has none (and reads no checkpoint whole)."""
    if flags.beam.view_as(TestOptions).dry_run:
        return plan
    if plan.destinations.output_table:
        try:
            store.ensure_runs_table(plan.destinations.output_table, None)
        except Exception as exc:  # as for the other tables: missing dataset, wrong columns, no credentials
            raise UsageError(f"--output_table: {exc}") from None
    try:
        run = record.start(plan, flags.beam_args, started_at)
    except (CheckpointNotFoundError, CheckpointFormatError, OSError) as exc:
        raise UsageError(f"--model: cannot read the checkpoint for the run record: {exc}") from None
    return dataclasses.replace(plan, run_record=run)


def workers(flags: Flags, model: ModelSettings, *, save_main_session: bool = False):
    """Beam's options and the model's settings as the workers get them: on Dataflow with the workers' defaults
    (`pipeline.dataflow`), logged. Raises `UsageError`."""
    beam_args = list(flags.beam_args)
    if dataflow.is_dataflow(flags.beam):
        defaults = dataflow.worker_defaults(flags.beam, model)
        model, beam_args = defaults.model, beam_args + list(defaults.beam_args)
        for note in defaults.notes:
            _LOGGER.info("Dataflow workers: %s", note)
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = save_main_session  # Beam's default pickles it on Dataflow
    return options, model


def _local_flag(flag: str, value: Optional[str], local: bool) -> Optional[str]:
    """A path flag's value as a local path when it is one (`file://` URIs included), checked for reach."""
    if not value:
        return value
    try:
        path = local_path(value)
    except ValueError as exc:
        raise UsageError(f"--{flag}: {exc}") from None
    value = value if path is None else path
    if not has_scheme(value) and not local:
        raise UsageError(f"--{flag}: {value!r} is on this machine, out of the workers' reach: use a gs:// path")
    return value


def plan_destinations(flags: Flags) -> Destinations:
    """Every destination, with the defaults: dead letters beside the output (files, else a table), rejected
    rows beside the output (with a filter); local prefixes checked, tables made or checked."""
    job, options = flags.job, flags.beam
    local = is_local(options)
    output = _local_flag("output", job.output, local)
    dead_letter = _local_flag("dead_letter", job.dead_letter, local)
    rejected_output = _local_flag("rejected_output", job.rejected_output, local)
    dead_letter_table, rejected_table = job.dead_letter_table, job.rejected_table
    if not (dead_letter or job.dead_letter_topic or dead_letter_table):
        if output:
            dead_letter = f"{output}.dead_letter"
        elif job.output_table:
            dead_letter_table = f"{job.output_table}_dead_letter"
    if filtering(job):
        rejected_output = rejected_output or (f"{output}.rejected" if output else None)
        if job.output_table and not rejected_table:
            rejected_table = f"{job.output_table}_rejected"
    for flag, prefix in (("output", output), ("dead_letter", dead_letter), ("rejected_output", rejected_output)):
        if prefix and not has_scheme(prefix):
            _check_output_prefix(flag, prefix)
    outputs = OutputFields.of(settings_from(job)[RecordFields])
    tables = {
        "output_table": (job.output_table, bigquery.scored_schema(outputs)),
        "dead_letter_table": (dead_letter_table, bigquery.DEAD_LETTER_SCHEMA),
        "rejected_table": (rejected_table, bigquery.rejected_schema(outputs)),
    }
    resolved = {flag: _table(flag, spec, schema, options) for flag, (spec, schema) in tables.items()}
    return Destinations(
        output=output,
        output_format=job.output_format,
        output_table=resolved["output_table"],
        dead_letter=dead_letter,
        dead_letter_topic=job.dead_letter_topic,
        dead_letter_table=resolved["dead_letter_table"],
        rejected_output=rejected_output,
        rejected_table=resolved["rejected_table"],
        window_seconds=job.window_seconds,
        samples_per_shard=job.samples_per_shard or DEFAULT_SAMPLES_PER_SHARD,
    )


def _table(flag: str, spec: Optional[str], schema: dict, options: PipelineOptions) -> Optional[str]:
    """The table as PROJECT:DATASET.TABLE, made if missing or its columns checked (not with --dry_run)."""
    if not spec:
        return None
    project = options.view_as(GoogleCloudOptions).project
    try:
        if options.view_as(TestOptions).dry_run:
            reference = bigquery.table_reference(spec, project)
            return f"{reference.projectId}:{reference.datasetId}.{reference.tableId}"
        return bigquery.ensure_table(spec, project, schema)
    except Exception as exc:  # bad spec, missing dataset, wrong columns, no credentials, API errors
        raise UsageError(f"--{flag}: {exc}") from None


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


def _check_model_here(model: ModelSettings) -> None:
    """Local workers run on this machine, so a bad --model or --device fails here, before the job starts."""
    try:
        pick_device(model.device)
        read_architecture(resolve_checkpoint(model.model))
    except InvalidSetting as exc:
        raise UsageError(f"--{exc.name}: {exc.message}") from None
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        raise UsageError(f"--model: {exc}") from None


def _with_input_sizes(model: ModelSettings) -> ModelSettings:
    """The settings with the image resolution and context length given, else read from the checkpoint's
    header (not its weights), here, once: workers then open the checkpoint only to load the model."""
    if model.image_resolution is not None:
        return model
    try:
        sizes: InputSizes = read_input_sizes(model.model)
    except (CheckpointNotFoundError, CheckpointFormatError) as exc:
        raise UsageError(f"--model: {exc}") from None
    return dataclasses.replace(model, image_resolution=sizes.image_resolution, context_length=sizes.context_length)


def _file_input(job, local: bool) -> FileInput:
    """The parts of --input (found now: a missing file fails here)."""
    pattern = _local_flag("input", job.input, local)
    files = input_format(pattern, job.input_format)
    part_bytes = job.input_part_bytes if files == "jsonl" else sys.maxsize  # a shard or Parquet file: one part
    try:
        parts = tuple(plan_parts(pattern, part_bytes))
    except InputProblem as exc:
        raise UsageError(f"--input: {exc}") from None
    extensions = tuple(job.image_extensions.lower().split(","))
    source = FileInput(pattern, files, parts, parts, job.max_line_bytes, extensions)
    size = sum(part.end - part.start for part in parts)
    count = len({part.path for part in parts})
    if files == "jsonl":
        _LOGGER.info("Input: %d file(s) matching %s, %s in %d part(s)", count, pattern, _size(size), len(parts))
    else:
        _LOGGER.info("Input: %d %s file(s) matching %s, %s", count, files, pattern, _size(size))
    return source


def _earlier_runs(flags: Flags, destinations: Destinations, source, scoring: Scoring):
    """What earlier runs left under the file prefixes of a batch job (`pipeline.destinations`): the source
    (with --resume, the parts not done), the files to remove before the job, and --resume's job manifest."""
    job, options = flags.job, flags.beam
    if not isinstance(source, FileInput) or options.view_as(TestOptions).dry_run:
        return source, (), None
    if not job.resume:
        return source, earlier_outputs(job, destinations), None
    recorded = {
        "input_part_bytes": job.input_part_bytes,
        "max_line_bytes": job.max_line_bytes,
        "dead_letter": destinations.dead_letter,
        "output_format": destinations.output_format,
    }
    manifest = manifests.job_manifest(source.parts, recorded, (scoring.model, scoring.fields, scoring.images))
    source, remove_first = resume_state(job, destinations, source, manifest)
    done = [part for part in source.parts if part not in source.todo]
    _LOGGER.info(
        "Resume: %d of %d part(s) (%s) already have their outputs and are not read again; %d to go",
        len(done),
        len(source.parts),
        _size(sum(part.end - part.start for part in done)),
        len(source.todo),
    )
    return source, remove_first, manifest_text(manifest)


def _pubsub_input(job, options) -> PubSubInput:
    _LOGGER.info("Input: Pub/Sub %s", job.input_subscription or f"{job.input_topic} (temporary subscription)")
    runner = options.view_as(StandardOptions).runner or ""
    stoppable = runner.rsplit(".", 1)[-1] == DEFAULT_LOCAL_STREAMING_RUNNER  # Ctrl-C stops it cleanly
    return PubSubInput(
        job.input_subscription, job.input_topic, job.id_label, job.timestamp_attribute, job.attributes_key, stoppable
    )


def _input_schema(source, *, provenance: bool):
    """The Parquet input's columns, which Parquet output keeps, with the reader's `__url__` and `__row__` (with
    `provenance`), read from the files' footers, once, whatever the output: a file that is not Parquet stops
    every job here, not some of them when the file is reached."""
    if not (isinstance(source, FileInput) and source.format == "parquet"):
        return None
    try:
        schema = parquet.read_schema(source.pattern)
        return parquet_rows.with_provenance(schema) if provenance else schema
    except (ValueError, OSError) as exc:
        raise UsageError(f"--input: {exc}") from None


def _log_destinations(plan: JobPlan) -> None:
    scored, dead = plan.destinations.described(plan.resume)
    _LOGGER.info("Scored records (score 0.0 with a reason when they cannot be) go to %s", scored)
    _LOGGER.info("Dead letters (lines that are not JSON objects, refused rows) go to %s", dead)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
