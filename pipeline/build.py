"""`build(pipeline, plan)`: read → parse → ScoreLongCLIP → (filter →) write, and the dead letter, assembled from
a `JobPlan` as it is: every default and check was settled by `pipeline.preflight`."""

from __future__ import annotations

import logging
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import progress
from pipeline.filters.keep import KeepByScore
from pipeline.io import bigquery, manifests, parquet, records, resume
from pipeline.io.jsonl import ReadJsonLines, WriteJsonLines
from pipeline.io.pubsub import PublishJson, ReadPubSubRecords
from pipeline.io.webdataset import ReadWebDataset, SampleLayout
from pipeline.plan import Destinations, JobPlan
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
        )
    if files.format == "webdataset":
        layout = SampleLayout(
            image_key=plan.scoring.fields.image_key,
            text_key=plan.scoring.fields.text_key,
            image_extensions=files.image_extensions,
            max_image_bytes=plan.scoring.images.max_image_bytes,
        )
        return pipeline | "ReadWebDataset" >> ReadWebDataset(files.pattern, layout)
    if files.format == "parquet":
        return pipeline | "ReadParquet" >> parquet.ReadParquetRecords(files.pattern)
    total_bytes = files.total_bytes()
    if total_bytes is not None:  # for percent done on Dataflow, beside pipeline/input_bytes_read
        _ = pipeline | "InputSize" >> beam.Create([total_bytes]) | "CountInputBytes" >> beam.Map(_count_input_bytes)
    return pipeline | "ReadJsonLines" >> ReadJsonLines(files.todo, files.max_line_bytes, progress_folder)


def _count_input_bytes(total_bytes: int) -> None:
    Metrics.counter(records.METRICS_NAMESPACE, "input_bytes").inc(total_bytes)


def _write_scored(plan: JobPlan, scored, rejected, dead_letters: list) -> None:
    """Scored (and rejected) rows to files and tables; rows BigQuery refuses join `dead_letters`."""
    destinations, fields = plan.destinations, plan.scoring.fields
    if destinations.output and destinations.output_format == "parquet":
        key_columns = ("__key__", "__url__") if plan.source.format == "webdataset" else ()
        scored_table, rejected_table = (
            parquet.ScoredTable(fields, input_schema=plan.input_schema, key_columns=key_columns, with_cutoff=cutoff)
            for cutoff in (False, True)
        )
        scored | "WriteScored" >> parquet.WriteParquet(destinations.output, scored_table)
        if rejected is not None and destinations.rejected_output:
            rejected | "WriteRejected" >> parquet.WriteParquet(destinations.rejected_output, rejected_table)
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
            >> bigquery.WriteRows(destinations.output_table, bigquery.scored_schema(fields.embeddings))
        )
    if rejected is not None and destinations.rejected_table:
        rows = rejected | "ToRejectedRows" >> beam.Map(bigquery.rejected_row, fields=fields, model=model)
        dead_letters.append(
            rows
            | "WriteRejectedToBigQuery"
            >> bigquery.WriteRows(destinations.rejected_table, bigquery.rejected_schema(fields.embeddings))
        )


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
