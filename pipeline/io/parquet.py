"""Parquet in and out: records from Parquet rows, and scored records as Parquet files with typed columns.

Output columns are named exactly like the JSONL output's fields. When the input is Parquet they are the
input's own columns (the image column as a string: inline image bytes are never written, an image struct
becomes its path), else typed columns for the key fields plus `record`, the whole input record as JSON
text. Then the fields `ScoreLongCLIP` adds: the score (double), reason and error (strings), truncated
(bool), and with embeddings two lists of float32 (null when the record failed).

The embeddings are plain lists, not Arrow fixed-size lists: Parquet stores both the same way, but pyarrow
(up to 25 at least) cannot read a fixed-size list column holding nulls back (apache/arrow#35692).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.io import parquet_rows, records
from transforms import OutputFields, RecordFields

RECORD_COLUMN = "record"
# Row groups are buffered in memory before they are written: about this many bytes each, built from
# batches of this many rows (as Python objects, an embedding row is ~50 KB, so batches stay small).
ROW_GROUP_BYTES = 32 * 1024 * 1024
ROWS_PER_BATCH = 256


class ReadParquetRecords(beam.PTransform):
    """Reads Parquet files (a file or glob, local or any Beam FileSystems URI), one record per row, each with
    its file and row as `__url__` and `__row__` (`parquet_rows`); row groups are spread over the workers.

    Returns a tagged result like `ReadJsonLines`: `.records`, and `[records.DEAD_LETTER]`, which stays
    empty (Parquet rows are typed; a file that is not Parquet stops the job, as Beam's source does).
    Values keep their Python types: binary columns are bytes, structs dicts, timestamps datetimes.
    """

    def __init__(self, file_pattern: str):
        super().__init__()
        self._pattern = file_pattern

    def expand(self, begin: beam.pvalue.PBegin):
        return (
            begin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern, fileio.EmptyMatchTreatment.DISALLOW)
            | "RowGroups" >> beam.FlatMap(lambda file: parquet_rows.row_groups(file.path))
            | "SpreadRowGroups" >> beam.Reshuffle()
            | "ReadRows" >> beam.FlatMap(parquet_rows.read_rows)
            | "Count" >> beam.ParDo(_CountRead()).with_outputs(records.DEAD_LETTER, main="records")
        )


class _CountRead(beam.DoFn):
    def __init__(self):
        self._read = Metrics.counter(records.METRICS_NAMESPACE, "read")

    def process(self, record: dict):
        self._read.inc()
        yield record


def read_schema(file_pattern: str) -> pa.Schema:
    """The columns of the Parquet files matching `file_pattern`, unified (read from their footers only).

    Raises ValueError when no file matches or their columns cannot be unified (same name, other type).
    """
    (match,) = FileSystems.match([file_pattern])
    paths = [metadata.path for metadata in match.metadata_list]
    if not paths:
        raise ValueError(f"no file matches {file_pattern}")

    def schema(path: str) -> pa.Schema:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            return pq.read_schema(stream).remove_metadata()

    with ThreadPoolExecutor(max_workers=16) as pool:  # footers of remote files: one or two reads each
        schemas = list(pool.map(schema, paths))
    try:
        return pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"the Parquet files of {file_pattern} do not share their columns' types: {exc}") from None


class ScoredTable:
    """The columns of scored Parquet files, and the row of each scored record.

    Args:
      fields: the transform's record fields (which columns hold the image and caption, what it adds).
      input_schema: the input's columns when it is Parquet; else the key fields and `record` are written.
      key_columns: with no `input_schema`, string columns written beside the image and caption fields
        (e.g. WebDataset's `__key__` and `__url__`).
      with_cutoff: also a column for the cutoff score the job's filter put on the records it rejected.
    """

    def __init__(
        self,
        fields: RecordFields,
        *,
        input_schema: Optional[pa.Schema] = None,
        key_columns: Sequence[str] = (),
        with_cutoff: bool = False,
    ):
        self._outputs = OutputFields.of(fields)
        self._added = self._outputs.names + ((self._outputs.cutoff,) if with_cutoff else ())
        added = set(self._added)
        self._key_columns: Optional[list[str]] = None  # None: the input's own columns
        if input_schema is not None:
            own = [_without_image_bytes(col, fields.image_key) for col in input_schema if col.name not in added]
        else:
            keys = dict.fromkeys([fields.image_key, fields.text_key, *key_columns])
            self._key_columns = [name for name in keys if name not in added]
            own = [pa.field(name, pa.string()) for name in [*self._key_columns, RECORD_COLUMN]]
        outputs = self._outputs
        scores = [
            pa.field(outputs.score, pa.float64()),
            pa.field(outputs.reason, pa.string()),
            pa.field(outputs.error, pa.string()),
            pa.field(outputs.truncated, pa.bool_()),
        ]
        if outputs.embeddings:
            vector = pa.list_(pa.float32())
            scores += [pa.field(outputs.image_embedding, vector), pa.field(outputs.text_embedding, vector)]
        if with_cutoff:
            scores.append(pa.field(outputs.cutoff, pa.float64()))
        self.schema = pa.schema(own + scores)

    def row(self, record: Mapping[str, Any]) -> dict:
        """The row of one scored record (the transform has already replaced inline image bytes)."""
        added = self._added
        if self._key_columns is None:
            return {name: record.get(name) for name in self.schema.names}
        row = {name: records.text_value(record.get(name)) for name in self._key_columns}
        row[RECORD_COLUMN] = records.to_json({key: value for key, value in record.items() if key not in added})
        row.update((name, record[name]) for name in added)
        return row


def _without_image_bytes(column: pa.Field, image_key: str) -> pa.Field:
    """The image column as the transform leaves it: binary or an image struct becomes a string (its path)."""
    if column.name != image_key:
        return column
    kind = column.type
    is_struct = pa.types.is_struct(kind) and {"bytes", "path"} & {kind.field(i).name for i in range(kind.num_fields)}
    is_binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
    return pa.field(column.name, pa.string()) if is_struct or is_binary else column


class WriteParquet(beam.PTransform):
    """Writes scored records as `<prefix>-SSSSS-of-NNNNN.parquet` (batch only), one row each."""

    def __init__(self, file_path_prefix: str, table: ScoredTable):
        super().__init__()
        self._prefix = file_path_prefix
        self._table = table

    def expand(self, scored: beam.PCollection):
        if not scored.is_bounded:
            raise ValueError("Parquet output is for batch jobs; write JSONL files in streaming")
        return (
            scored
            | "ToRows" >> beam.Map(self._table.row)
            | "WriteParquet"
            >> beam.io.WriteToParquet(
                self._prefix,
                self._table.schema,
                row_group_buffer_size=ROW_GROUP_BYTES,
                record_batch_size=ROWS_PER_BATCH,
                file_name_suffix=".parquet",
            )
        )
