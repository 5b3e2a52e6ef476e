"""Writing scored records and dead-letter entries to BigQuery, through Beam's `WriteToBigQuery`.

Tables are made (or checked) with google-cloud-bigquery before the job starts, so a wrong table,
dataset or schema fails at once and not on a worker; the job then writes with CREATE_NEVER through
streaming inserts, in batch and streaming alike (the JSON column rules out load jobs). Rows BigQuery
rejects come back as dead-letter entries instead of being retried forever.

`BIGQUERY_EMULATOR_HOST=http://host:port` points both steps at a BigQuery API emulator.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Optional

import apache_beam as beam
from apache_beam.io.gcp import bigquery_tools
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.metrics import Metrics

from pipeline.io import records
from transforms import OutputFields, RecordFields

_LOGGER = logging.getLogger(__name__)

EMULATOR_HOST_VARIABLE = "BIGQUERY_EMULATOR_HOST"
BIGQUERY_REJECTED = "bigquery_rejected"

SCORED_SCHEMA: dict = {
    "fields": [
        {"name": "image", "type": "STRING", "mode": "NULLABLE", "description": "the record's image field"},
        {"name": "text", "type": "STRING", "mode": "NULLABLE", "description": "the record's caption field"},
        {"name": "score", "type": "FLOAT", "mode": "REQUIRED", "description": "clamp((cos + 1) / 2, 0, 1)"},
        {"name": "error", "type": "STRING", "mode": "NULLABLE", "description": "<reason>: <message>, score 0.0"},
        {"name": "reason", "type": "STRING", "mode": "NULLABLE", "description": "why it was not scored, or null"},
        {"name": "truncated", "type": "BOOLEAN", "mode": "REQUIRED", "description": "caption cut to the context"},
        {"name": "model", "type": "STRING", "mode": "REQUIRED", "description": "the --model that scored it"},
        {"name": "scored_at", "type": "TIMESTAMP", "mode": "REQUIRED", "description": "when it was scored"},
        {"name": "record", "type": "JSON", "mode": "REQUIRED", "description": "the whole input record"},
    ]
}

# Rejected rows (`--rejected_table`) have the scored columns and the cutoff that rejected them.
CUTOFF_COLUMN: dict = {
    "name": "cutoff",
    "type": "FLOAT",
    "mode": "NULLABLE",
    "description": "the filter's cutoff score",
}

# With --embeddings: the L2-normalised features, empty for failed rows (BigQuery arrays cannot be null).
EMBEDDING_COLUMNS: list = [
    {"name": "image_embedding", "type": "FLOAT", "mode": "REPEATED", "description": "image features, unit norm"},
    {"name": "text_embedding", "type": "FLOAT", "mode": "REPEATED", "description": "caption features, unit norm"},
]

# A caption's parts and their scores (long_captions=chunks, sentence_scores), empty for failed rows. The files'
# {start, end} are start_offset and end_offset here: END is a reserved word of BigQuery's SQL.
_SPAN_FIELDS = [
    {"name": "start_offset", "type": "INTEGER", "mode": "REQUIRED", "description": "offset into the caption"},
    {"name": "end_offset", "type": "INTEGER", "mode": "REQUIRED", "description": "caption[start:end] is the part"},
    {"name": "score", "type": "FLOAT", "mode": "REQUIRED", "description": "the part scored alone"},
]
CHUNK_COLUMNS: list = [
    {"name": "score_min", "type": "FLOAT", "mode": "NULLABLE", "description": "the lowest chunk score"},
    {"name": "chunks", "type": "RECORD", "mode": "REPEATED", "fields": _SPAN_FIELDS, "description": "chunk scores"},
]
SENTENCE_COLUMNS: list = [
    {"name": "sentences", "type": "RECORD", "mode": "REPEATED", "fields": _SPAN_FIELDS, "description": "sentences"},
]

# Columns a table made by an earlier version of this job may lack: rows are written without them.
ADDED_LATER = frozenset({"reason"})


def scored_schema(outputs: OutputFields) -> dict:
    """The scored table's schema: `SCORED_SCHEMA`, plus the columns of the optional outputs `outputs` has."""
    columns = SCORED_SCHEMA["fields"] + (EMBEDDING_COLUMNS if outputs.embeddings else [])
    columns += CHUNK_COLUMNS if outputs.chunked else []
    return {"fields": columns + (SENTENCE_COLUMNS if outputs.sentence_scores else [])}


def rejected_schema(outputs: OutputFields) -> dict:
    """The rejected table's schema: the scored table's, plus the cutoff."""
    return {"fields": scored_schema(outputs)["fields"] + [CUTOFF_COLUMN]}


DEAD_LETTER_SCHEMA: dict = {
    "fields": [
        {"name": "source", "type": "STRING", "mode": "REQUIRED"},
        {"name": "reason", "type": "STRING", "mode": "REQUIRED"},
        {"name": "error", "type": "STRING", "mode": "NULLABLE"},
        {"name": "raw", "type": "STRING", "mode": "NULLABLE"},
        {"name": "raw_base64", "type": "STRING", "mode": "NULLABLE"},
        {"name": "message_id", "type": "STRING", "mode": "NULLABLE"},
        {"name": "attributes", "type": "JSON", "mode": "NULLABLE"},
        {"name": "dead_lettered_at", "type": "TIMESTAMP", "mode": "REQUIRED"},
    ]
}


def scored_row(record: Mapping[str, Any], *, fields: RecordFields, model: str) -> dict:
    """One scored record as a row of `scored_schema(OutputFields.of(fields))`; the record itself goes into
    `record`, whole but for the embeddings and the caption's parts, which have their own columns."""
    outputs = OutputFields.of(fields)
    row = {
        "image": records.text_value(record.get(fields.image_key)),
        "text": records.text_value(record.get(fields.text_key)),
        "score": record[outputs.score],
        "error": record[outputs.error],
        "reason": record[outputs.reason],
        "truncated": record[outputs.truncated],
        "model": model,
        "scored_at": _now(),
        "record": records.to_json(record),
    }
    own_columns = {}  # output field -> column, for the outputs that have columns of their own
    if outputs.embeddings:
        own_columns.update({outputs.image_embedding: "image_embedding", outputs.text_embedding: "text_embedding"})
    if outputs.chunked:
        own_columns.update({outputs.score_min: "score_min", outputs.chunks: "chunks"})
        row["score_min"] = record[outputs.score_min]
    if outputs.sentence_scores:
        own_columns[outputs.sentences] = "sentences"
    for field, column in own_columns.items():
        if column in ("chunks", "sentences"):
            row[column] = [_span_row(span) for span in record[field] or []]  # arrays cannot be null
        elif column != "score_min":
            row[column] = record[field] or []
    if own_columns:
        row["record"] = records.to_json({key: value for key, value in record.items() if key not in own_columns})
    return row


def _span_row(span: Mapping[str, Any]) -> dict:
    return {"start_offset": span["start"], "end_offset": span["end"], "score": span["score"]}


def rejected_row(record: Mapping[str, Any], *, fields: RecordFields, model: str) -> dict:
    """One rejected record as a row of `rejected_schema(OutputFields.of(fields))`."""
    return {**scored_row(record, fields=fields, model=model), "cutoff": record[OutputFields.of(fields).cutoff]}


def dead_letter_row(entry: Mapping[str, Any]) -> dict:
    """One dead-letter entry as a row of `DEAD_LETTER_SCHEMA`."""
    row = {field["name"]: entry.get(field["name"]) for field in DEAD_LETTER_SCHEMA["fields"]}
    row["attributes"] = None if entry.get("attributes") is None else records.to_json(entry["attributes"])
    row["dead_lettered_at"] = _now()
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def table_reference(spec: str, project: Optional[str]):
    """`PROJECT:DATASET.TABLE` or `DATASET.TABLE` (+ --project) → a TableReference; ValueError if neither."""
    try:
        reference = bigquery_tools.parse_table_reference(spec)
    except ValueError:
        reference = None
    if reference is not None and not reference.projectId:
        reference.projectId = project
    if reference is None or not reference.projectId:
        raise ValueError(f"{spec!r} is not PROJECT:DATASET.TABLE (or DATASET.TABLE with --project)")
    return reference


def client(project: str, endpoint: Optional[str] = None):
    """A google-cloud-bigquery client; on an emulator (anonymous) when `endpoint` or `BIGQUERY_EMULATOR_HOST`
    gives its URL."""
    from google.cloud import bigquery

    endpoint = endpoint or os.environ.get(EMULATOR_HOST_VARIABLE)
    if not endpoint:
        return bigquery.Client(project=project)
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


def ensure_table(spec: str, project: Optional[str], schema: Mapping[str, Any]) -> str:
    """Creates the table if it is missing, or checks that it has every column of `schema` with its type.

    A table made by an earlier version may lack the columns added since (`ADDED_LATER`): it is used as it
    is, with a warning that says how to add them; rows are written with BigQuery's `ignoreUnknownValues`,
    so their values for those columns are dropped. Returns the table as `PROJECT:DATASET.TABLE`. Raises
    `ValueError` with the fix when it cannot be used.
    """
    from google.api_core import exceptions
    from google.cloud import bigquery

    reference = table_reference(spec, project)
    bq = client(reference.projectId)
    table_id = f"{reference.projectId}.{reference.datasetId}.{reference.tableId}"
    try:
        bq.get_dataset(f"{reference.projectId}.{reference.datasetId}")
    except exceptions.NotFound:
        raise ValueError(
            f"BigQuery dataset {reference.projectId}:{reference.datasetId} does not exist; create it first "
            f"(`bq mk --dataset --location=LOCATION {reference.projectId}:{reference.datasetId}`)"
        ) from None
    fields = [bigquery.SchemaField.from_api_repr(field) for field in schema["fields"]]
    try:
        existing = bq.get_table(table_id)
    except exceptions.NotFound:
        bq.create_table(bigquery.Table(table_id, schema=fields), exists_ok=True)
        _LOGGER.info("Created BigQuery table %s", table_id)
    else:
        have = {field.name: (_type(field.field_type), field.mode) for field in existing.schema}
        older = [f for f in fields if f.name in ADDED_LATER and f.name not in have]
        if older:
            added = ", ".join(f"ADD COLUMN {f.name} {f.field_type}" for f in older)
            _LOGGER.warning(
                "BigQuery table %s has no column(s) %s (added in a later version); rows are written without "
                "them. To keep them: ALTER TABLE `%s` %s",
                table_id,
                ", ".join(f.name for f in older),
                table_id,
                added,
            )
        fields = [f for f in fields if f not in older]
        ours = {field.name for field in fields}
        missing = [f"{f.name} {f.field_type}" for f in fields if have.get(f.name, (None,))[0] != _type(f.field_type)]
        if missing:
            raise ValueError(
                f"BigQuery table {table_id} exists without the column(s) {', '.join(missing)}; "
                "pass a new table, or add the columns (see docs/bigquery.md)"
            )
        # Every row would be refused: a column we do not fill is REQUIRED, or one we fill once is REPEATED.
        unfillable = [name for name, (_, mode) in have.items() if mode == "REQUIRED" and name not in ours]
        unfillable += [f.name for f in fields if have[f.name][1] == "REPEATED" and f.mode != "REPEATED"]
        if unfillable:
            raise ValueError(
                f"BigQuery table {table_id} has column(s) {', '.join(sorted(unfillable))} that no row of this job "
                "can fill (REQUIRED columns it does not write, or REPEATED ones); make them NULLABLE or pass "
                "a new table"
            )
        # ... or one we fill with a list is not REPEATED (the embeddings).
        not_lists = [
            f"{f.name} ({have[f.name][1]})" for f in fields if f.mode == "REPEATED" and have[f.name][1] != "REPEATED"
        ]
        if not_lists:
            raise ValueError(
                f"BigQuery table {table_id} has column(s) {', '.join(not_lists)} where this job writes lists "
                "(REPEATED FLOAT); pass a new table"
            )
    return f"{reference.projectId}:{reference.datasetId}.{reference.tableId}"


def _type(name: Optional[str]) -> Optional[str]:
    aliases = {"FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "INT64": "INTEGER"}
    return aliases.get(name, name)


class _EmulatorClient:
    """What `WriteToBigQuery(test_client=...)` needs to talk to an emulator: picklable, built on first use."""

    def __init__(self, endpoint: str, project: str):
        self._endpoint = endpoint
        self._project = project
        self._client = None

    def insert_rows_json(self, *args, **kwargs):
        if self._client is None:
            self._client = client(self._project, self._endpoint)
        return self._client.insert_rows_json(*args, **kwargs)

    def __getstate__(self):
        return {"_endpoint": self._endpoint, "_project": self._project, "_client": None}


class WriteRows(beam.PTransform):
    """Streams rows into an existing table; returns the rows BigQuery rejected, as dead-letter entries."""

    def __init__(self, table: str, schema: Mapping[str, Any]):
        super().__init__()
        self._table = table
        self._schema = schema

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        endpoint = os.environ.get(EMULATOR_HOST_VARIABLE)
        project = self._table.split(":", 1)[0]
        result = rows | "WriteToBigQuery" >> beam.io.WriteToBigQuery(
            self._table,
            schema=self._schema,
            method=beam.io.WriteToBigQuery.Method.STREAMING_INSERTS,
            create_disposition=beam.io.BigQueryDisposition.CREATE_NEVER,
            write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
            insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
            ignore_unknown_columns=True,  # columns of ADDED_LATER that an older table lacks
            test_client=_EmulatorClient(endpoint, project) if endpoint else None,
        )
        return result.failed_rows_with_errors | "Rejected" >> beam.FlatMap(_rejected_entry)


def _rejected_entry(failure: tuple) -> Iterator[dict]:
    destination, row, errors = failure
    Metrics.counter(records.METRICS_NAMESPACE, BIGQUERY_REJECTED).inc()
    raw = records.to_json(row).encode("utf-8")
    yield records.dead_letter_entry(f"bigquery:{destination}", raw, BIGQUERY_REJECTED, records.to_json(errors))
