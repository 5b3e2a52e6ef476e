"""`build(pipeline, plan)`: read → parse → ScoreLongCLIP → (filter →) write, and the dead letter, assembled from
a `JobPlan` as it is: every default and check was settled by `pipeline.preflight`."""

from __future__ import annotations

import logging
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import failure_rate, progress, retry
from pipeline.filters.keep import KeepByScore
from pipeline.io import bigquery, manifests, parquet, records, resume
from pipeline.io.jsonl import ReadJsonLines, WriteJsonLines
from pipeline.io.pubsub import PublishJson, ReadPubSubRecords
from pipeline.io.shards import WriteShards
from pipeline.io.webdataset import OFFSET_KEY, ReadWebDataset, SampleLayout
from pipeline.plan import Destinations, JobPlan
from pipeline.runs import store
from transforms.beam.score import ScoreLongCLIP
from transforms.outputs import OutputFields

_LOGGER = logging.getLogger(__name__)

# The job's ScoreLongCLIP step, and the namespace of its counters.
SCORE_STEP = "ScoreLongCLIP"


def build(pipeline: beam.Pipeline, plan: JobPlan, progress_folder: Optional[str] = None) -> None:
    """Adds the job to `pipeline`. `progress_folder`: a local batch job's `ProgressMonitor` folder, where
    records read and scored are tallied."""
    parsed = _read(pipeline, plan, progress_folder)
    scoring = plan.scoring
    score = ScoreLongCLIP(
        scoring.model,
        batching=scoring.batching,
        fields=scoring.fields,
        images=scoring.images,
        metrics_namespace=SCORE_STEP,
    )
    read, dead_letters = parsed.records, [parsed[records.DEAD_LETTER]]
    if progress_folder and plan.source.format != "jsonl":  # JSONL lines are tallied as read, dead letters too
        read = read | "ProgressRead" >> beam.ParDo(progress.CountProgress(progress_folder, progress.READ))
        dead_letters = [
            dead_letters[0]
            | "ProgressReadDeadLetters" >> beam.ParDo(progress.CountProgress(progress_folder, progress.READ))
        ]
    read = read | "NoteFields" >> beam.ParDo(failure_rate.NoteFields())  # for the hints when nothing works
    if plan.retry_failed:
        read, kept = read | "SplitForRetry" >> retry.SplitForRetry(scoring.fields)
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
    if plan.retry_failed:
        scored = retry.rejoin(scored, kept, scoring.fields)
    if plan.files is None:
        _ = scored | "WarnWhenAllFail" >> failure_rate.WarnWhenAllFail(scoring.fields)
    destinations = plan.destinations
    if plan.resume:
        (part,) = plan.files.todo  # --resume runs one pipeline per part
        tagged = (
            scored | "TagScored" >> beam.Map(lambda record: (resume.SCORED, record)),
            dead_letters[0] | "TagDeadLetters" >> beam.Map(lambda entry: (resume.DEAD, entry)),
        )
        (
            tagged
            | "Tagged" >> beam.Flatten()
            | "WriteParts" >> resume.WritePart(manifests.staging(destinations.output, part))
        )
        return
    rejected = None
    if plan.keep:
        scored, rejected = scored | "KeepByScore" >> KeepByScore(
            OutputFields.of(scoring.fields), min_score=plan.keep.min_score, top_fraction=plan.keep.top_fraction
        )
    _write_scored(plan, scored, rejected, dead_letters)
    _write_dead_letters(destinations, dead_letters | "DeadLetters" >> beam.Flatten())


def _read(pipeline: beam.Pipeline, plan: JobPlan, progress_folder: Optional[str]):
    files = plan.files
    if files is None:
        source = plan.source
        return pipeline | "ReadPubSub" >> ReadPubSubRecords(
            subscription=source.subscription,
            topic=source.topic,
            id_label=source.id_label,
            timestamp_attribute=source.timestamp_attribute,
            attributes_key=source.attributes_key,
            stoppable=source.stoppable,
        )
    if files.format == "webdataset":
        layout = SampleLayout(
            image_key=plan.scoring.fields.image_key,
            text_key=plan.scoring.fields.text_key,
            image_extensions=files.image_extensions,
            max_image_bytes=plan.scoring.images.max_image_bytes,
            with_offsets=plan.destinations.output_format == "webdataset",  # where WriteShards copies samples from
        )
        return pipeline | "ReadWebDataset" >> ReadWebDataset(files.pattern, layout)
    if files.format == "parquet":
        # An earlier output read again (--retry_failed) keeps its rows as they were: no provenance of its own.
        provenance = not plan.retry_failed
        return pipeline | "ReadParquet" >> parquet.ReadParquetRecords(files.pattern, provenance=provenance)
    total_bytes = files.total_bytes()
    if total_bytes is not None:  # for percent done on Dataflow, beside pipeline/input_bytes_read
        _ = pipeline | "InputSize" >> beam.Create([total_bytes]) | "CountInputBytes" >> beam.Map(_count_input_bytes)
    return pipeline | "ReadJsonLines" >> ReadJsonLines(files.todo, files.max_line_bytes, progress_folder)


def _count_input_bytes(total_bytes: int) -> None:
    Metrics.counter(records.METRICS_NAMESPACE, "input_bytes").inc(total_bytes)


def _write_scored(plan: JobPlan, scored, rejected, dead_letters: list) -> None:
    """Scored (and rejected) rows to files and tables; rows BigQuery refuses join `dead_letters`."""
    destinations, fields = plan.destinations, plan.scoring.fields
    if destinations.output_format == "webdataset":
        scored, rejected = _write_shards(destinations, OutputFields.of(fields), scored, rejected, dead_letters)
    elif destinations.output and destinations.output_format == "parquet":
        _write_parquet(plan, scored, rejected)
    else:
        if destinations.output:
            scored | "WriteScored" >> WriteJsonLines(destinations.output, destinations.window_seconds)
        if rejected is not None and destinations.rejected_output:
            rejected | "WriteRejected" >> WriteJsonLines(destinations.rejected_output, destinations.window_seconds)
    model = plan.scoring.model.model
    if destinations.output_table:
        rows = scored | "ToTableRows" >> beam.Map(bigquery.scored_row, fields=fields, model=model)
        dead_letters.append(
            rows
            | "WriteScoredToBigQuery"
            >> bigquery.WriteRows(destinations.output_table, bigquery.scored_schema(OutputFields.of(fields)))
        )
    if rejected is not None and destinations.rejected_table:
        rows = rejected | "ToRejectedRows" >> beam.Map(bigquery.rejected_row, fields=fields, model=model)
        dead_letters.append(
            rows
            | "WriteRejectedToBigQuery"
            >> bigquery.WriteRows(destinations.rejected_table, bigquery.rejected_schema(OutputFields.of(fields)))
        )


def _write_shards(destinations: Destinations, outputs: OutputFields, scored, rejected, dead_letters: list):
    """The samples as new shards; returns the records without the offsets the shards needed, for tables."""
    size = destinations.samples_per_shard
    dead_letters.append(scored | "WriteScored" >> WriteShards(destinations.output, outputs, size))
    if rejected is not None and destinations.rejected_output:
        dead_letters.append(rejected | "WriteRejected" >> WriteShards(destinations.rejected_output, outputs, size))
    if destinations.output_table or destinations.rejected_table:
        scored = scored | "WithoutOffsets" >> beam.Map(_without_offset)
        if rejected is not None:
            rejected = rejected | "RejectedWithoutOffsets" >> beam.Map(_without_offset)
    return scored, rejected


def _without_offset(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != OFFSET_KEY}


def _write_parquet(plan: JobPlan, scored, rejected) -> None:
    """Scored (and rejected) rows as Parquet files: the input's columns when it is Parquet, else columns typed
    from every record, kept and rejected alike, so both have the same columns."""
    destinations = plan.destinations
    key_columns = ("__key__", "__url__") if plan.source.format == "webdataset" else ()
    outputs = [("Scored", scored, destinations.output, False)]
    if rejected is not None and destinations.rejected_output:
        outputs.append(("Rejected", rejected, destinations.rejected_output, True))
    tables = {
        name: parquet.ScoredTable(
            plan.scoring.fields, input_schema=plan.input_schema, key_columns=key_columns, with_cutoff=cutoff
        )
        for name, _, _, cutoff in outputs
    }
    shape = None
    if tables["Scored"].infers:
        shape = tuple(pcoll for _, pcoll, _, _ in outputs) | "ParquetShape" >> parquet.InferColumns(tables["Scored"])
    metadata = store.parquet_metadata(plan.run_record) if plan.run_record else None
    for name, pcoll, prefix, _ in outputs:
        pcoll | f"Write{name}" >> parquet.WriteParquet(prefix, tables[name], shape, metadata)


def _write_dead_letters(destinations: Destinations, dead_letter) -> None:
    if destinations.dead_letter:
        dead_letter | "WriteDeadLetter" >> WriteJsonLines(destinations.dead_letter, destinations.window_seconds)
    if destinations.dead_letter_topic:
        dead_letter | "PublishDeadLetter" >> PublishJson(destinations.dead_letter_topic)
    if destinations.dead_letter_table:
        (
            dead_letter
            | "ToDeadLetterRows" >> beam.Map(bigquery.dead_letter_row)
            | "WriteDeadLetterToBigQuery"
            >> bigquery.WriteRows(destinations.dead_letter_table, bigquery.DEAD_LETTER_SCHEMA)
            | "LogUnwritable" >> beam.Map(_log_unwritable)
        )


def _log_unwritable(entry: dict) -> None:
    """The last resort for a dead-letter entry BigQuery refused: the worker log, at ERROR, in full."""
    _LOGGER.error("BigQuery refused a dead-letter entry; it is kept here only: %s", records.to_json(entry))
