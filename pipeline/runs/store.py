"""Where run records live, and how they are found again.

- Files: `<prefix>.run.json` beside `<prefix>-SSSSS-of-NNNNN.jsonl|parquet` (JSON, indented, so that a glob
  that catches it by mistake reads no row from it). A file's record is that of the longest prefix it starts
  with, followed by `-`.
- Parquet files: also in their key-value metadata under `longclip_beam.run`, as the record stood when the job
  started (no counts, no end time: the files are written before the job ends).
- BigQuery: the scored table's description holds the record (a pointer instead, past BigQuery's 16,384
  characters), and `<table>_runs` gets one row per finished run, whose `record` column holds it whole.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Iterable, Mapping, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.io import bigquery

_LOGGER = logging.getLogger(__name__)

RECORD_SUFFIX = ".run.json"
PARQUET_KEY = "longclip_beam.run"
RUNS_TABLE_SUFFIX = "_runs"
DESCRIPTION_LIMIT = 16384  # characters, BigQuery's limit on a table's description
# The longest BigQuery gets to take the record, all calls together: the clients' own retries would hold a job's
# end for ten minutes on a table that answers 500 (as the emulator does after a read) or not at all.
BIGQUERY_SECONDS = 20.0
RUNS_SCHEMA: dict = {
    "fields": [
        {"name": "started_at", "type": "TIMESTAMP", "mode": "REQUIRED", "description": "when the run started"},
        {"name": "ended_at", "type": "TIMESTAMP", "mode": "NULLABLE", "description": "when it ended"},
        {"name": "status", "type": "STRING", "mode": "REQUIRED", "description": "done, nothing_worked, failed, ..."},
        {"name": "output_table", "type": "STRING", "mode": "REQUIRED", "description": "the table it wrote"},
        {"name": "checkpoint_sha256", "type": "STRING", "mode": "NULLABLE", "description": "the model's bytes"},
        {"name": "record", "type": "JSON", "mode": "REQUIRED", "description": "the whole run record"},
    ]
}


def record_file(prefix: str) -> str:
    return prefix + RECORD_SUFFIX


def to_text(record: Mapping[str, Any], indent: Optional[int] = 2) -> str:
    separators = None if indent else (",", ":")
    return json.dumps(record, indent=indent, separators=separators, ensure_ascii=False, sort_keys=False) + "\n"


def write_file(prefix: str, record: Mapping[str, Any]) -> None:
    """`<prefix>.run.json`, local or on any Beam FileSystems URI (written whole: a reader never sees half)."""
    with FileSystems.create(record_file(prefix)) as stream:
        stream.write(to_text(record).encode("utf-8"))


def read_file(path: str) -> dict:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return json.loads(stream.read().decode("utf-8"))


def records_for(paths: Iterable[str]) -> tuple[dict[str, dict], list[str]]:
    """The run records of the outputs `paths` belong to, by prefix, and the paths that have none.

    One listing per folder (`*.run.json`), not one lookup per file. Local prefixes are absolute paths."""
    paths = [path if "://" in path else os.path.abspath(path) for path in paths]
    found: list[str] = []
    for folder in sorted({FileSystems.split(path)[0] for path in paths}):
        pattern = FileSystems.join(folder, "*" + RECORD_SUFFIX)
        found += [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]
    prefixes = sorted((path[: -len(RECORD_SUFFIX)] for path in found), key=len, reverse=True)
    owners: dict[str, dict] = {}
    without = []
    for path in paths:
        owner = next((prefix for prefix in prefixes if path.startswith(prefix + "-")), None)
        if owner is None:
            if not path.endswith(RECORD_SUFFIX):
                without.append(path)
            continue
        if owner not in owners:
            owners[owner] = read_file(record_file(owner))
    return owners, without


def parquet_metadata(record: Mapping[str, Any]) -> dict[str, str]:
    """The key-value metadata of Parquet files: the record as the job started."""
    return {PARQUET_KEY: to_text(record, indent=None)}


def runs_table(output_table: str) -> str:
    return output_table + RUNS_TABLE_SUFFIX


def ensure_runs_table(output_table: str, project: Optional[str]) -> str:
    """Makes (or checks) `<table>_runs`; raises what `bigquery.ensure_table` raises."""
    return bigquery.ensure_table(runs_table(output_table), project, RUNS_SCHEMA)


def write_bigquery(output_table: str, record: Mapping[str, Any], *, finished: bool) -> None:
    """The record as the table's description; once `finished`, also a row of `<table>_runs`. The clients' retries
    stop at BIGQUERY_SECONDS; `write_all` also stops waiting then (an attempt under way could go on)."""
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    deadline = time.monotonic() + BIGQUERY_SECONDS

    def within_deadline() -> dict:
        left = max(deadline - time.monotonic(), 0.1)
        return {"retry": DEFAULT_RETRY.with_timeout(left), "timeout": left}

    reference = bigquery.table_reference(output_table, None)
    client = bigquery.client(reference.projectId)
    table_id = f"{reference.projectId}.{reference.datasetId}.{reference.tableId}"
    table = client.get_table(table_id, **within_deadline())
    text = to_text(record, indent=None)
    if len(text) > DESCRIPTION_LIMIT:
        text = (
            f"Scored by longclip-beam; this run started {record.get('started_at')}; its whole run record is in "
            f"the table {runs_table(table_id)} (column record)"
        )
    table.description = text
    client.update_table(table, ["description"], **within_deadline())
    if finished:
        row = {
            "started_at": record["started_at"],
            "ended_at": record.get("ended_at"),
            "status": record["status"],
            "output_table": output_table,
            "checkpoint_sha256": (record.get("checkpoint") or {}).get("sha256"),
            "record": to_text(record, indent=None),
        }
        errors = client.insert_rows_json(runs_table(table_id), [row], **within_deadline())
        if errors:
            raise RuntimeError(f"BigQuery refused the run record's row: {errors}")


def write_all(destinations: Any, record: Mapping[str, Any], *, finished: bool) -> None:
    """The record beside every output of `destinations` (the plan's): scored and rejected files, the scored
    table. A failure to write it is logged, not raised: the records are out already."""
    prefixes = [prefix for prefix in (destinations.output, destinations.rejected_output) if prefix]
    for prefix in prefixes:
        try:
            write_file(prefix, record)
        except Exception as exc:  # noqa: BLE001 - an unwritable record must not turn a done job into a failed one
            _LOGGER.warning("Could not write the run record %s: %s", record_file(prefix), exc)
    if destinations.output_table:
        try:
            _within(BIGQUERY_SECONDS, lambda: write_bigquery(destinations.output_table, record, finished=finished))
        except Exception as exc:  # noqa: BLE001
            _LOGGER.warning("Could not write the run record of BigQuery table %s: %s", destinations.output_table, exc)
    if not finished and prefixes:  # said as the job starts, so that the last line is what became of the records
        _LOGGER.info("Run record: %s (finished when the job ends)", ", ".join(record_file(p) for p in prefixes))


def _within(seconds: float, write: Any) -> None:
    """`write()` on a thread of its own, waited for `seconds` at most: a server that answers byte by byte is not
    bounded by the clients' timeouts, which apply to each read."""
    outcome: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="run-record-bigquery", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"BigQuery did not take it within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
