"""Parquet in and out: records from Parquet rows, and scored records as Parquet files with typed columns.

Rows are read as `pipeline.io.arrow.table_rows` gives them: every valid value, at its own unit, nothing lost.
Output columns are named exactly like the JSONL output's fields. When the input is Parquet they are the
input's own columns, of the same types (the image column as a string: inline image bytes are never written,
an image struct becomes its path). Else the image and caption fields (strings), WebDataset's `__key__` and
`__url__`, then a column per field of the records, typed from every record (`pipeline.io.schema`, a global
combine whose result the writer takes as a side input). Then the fields `ScoreLongCLIP` adds: the score
(double), reason and error (strings), truncated (bool), and with embeddings two lists of float32 (null when
the record failed).

The embeddings are plain lists, not Arrow fixed-size lists: Parquet stores both the same way, but pyarrow
(up to 25 at least) cannot read a fixed-size list column holding nulls back (apache/arrow#35692).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.io import arrow, parquet_rows, records, schema
from transforms import OutputFields, RecordFields

# Row groups are buffered in memory before they are written: about this many bytes each, built from
# batches of this many rows (as Python objects, an embedding row is ~50 KB, so batches stay small).
ROW_GROUP_BYTES = 32 * 1024 * 1024
ROWS_PER_BATCH = 256


class ReadParquetRecords(beam.PTransform):
    """Reads Parquet files (a file or glob, local or any Beam FileSystems URI), one record per row, each with
    its file and row as `__url__` and `__row__` (`parquet_rows`; not with `provenance=False`); row groups are
    spread over the workers.

    Returns a tagged result like `ReadJsonLines`: `.records`, and `[records.DEAD_LETTER]`, which stays
    empty (Parquet rows are typed; the job reads every file's footer before it starts, and a file whose
    data is damaged past its footer stops the job, as Beam's source does). Values as `arrow.table_rows`
    gives them.
    """

    def __init__(self, file_pattern: str, *, provenance: bool = True):
        super().__init__()
        self._pattern = file_pattern
        self._provenance = provenance

    def expand(self, begin: beam.pvalue.PBegin):
        return (
            begin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern, fileio.EmptyMatchTreatment.DISALLOW)
            | "RowGroups" >> beam.FlatMap(lambda file: parquet_rows.row_groups(file.path))
            | "SpreadRowGroups" >> beam.Reshuffle()
            | "ReadRows" >> beam.FlatMap(parquet_rows.read_rows, provenance=self._provenance)
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

    Raises ValueError when no file matches, a file's footer cannot be read, or their columns cannot be unified
    (same name, other type).
    """
    (match,) = FileSystems.match([file_pattern])
    paths = [metadata.path for metadata in match.metadata_list]
    if not paths:
        raise ValueError(f"no file matches {file_pattern}")

    def schema(path: str) -> pa.Schema:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                return pq.read_schema(stream).remove_metadata()
        except (pa.ArrowException, OSError) as exc:
            why = " ".join(str(exc).split())  # Arrow's messages may span lines; the error is one
            raise ValueError(f"{path} is not a readable Parquet file ({why}): replace or remove it") from None

    with ThreadPoolExecutor(max_workers=16) as pool:  # footers of remote files: one or two reads each
        schemas = list(pool.map(schema, paths))
    try:
        return pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"the Parquet files of {file_pattern} do not share their columns' types: {exc}") from None


class ScoredTable:
    """The columns of scored Parquet files, and how rows become them.

    Args:
      fields: the transform's record fields (which columns hold the image and caption, what it adds).
      input_schema: the input's columns when it is Parquet; else the columns are typed from the records.
      key_columns: with no `input_schema`, string columns written first after the image and caption fields
        (WebDataset's `__key__` and `__url__`).
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
        outputs = OutputFields.of(fields)
        # Every field the job adds, the cutoff included: never typed from the records.
        self.added = outputs.names + (outputs.cutoff,)
        scores = [
            pa.field(outputs.score, pa.float64()),
            pa.field(outputs.reason, pa.string()),
            pa.field(outputs.error, pa.string()),
            pa.field(outputs.truncated, pa.bool_()),
        ]
        if outputs.embeddings:
            vector = pa.list_(pa.float32())
            scores += [pa.field(outputs.image_embedding, vector), pa.field(outputs.text_embedding, vector)]
        spans = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())]))
        if outputs.chunked:
            scores += [pa.field(outputs.score_min, pa.float64()), pa.field(outputs.chunks, spans)]
        if outputs.sentence_scores:
            scores.append(pa.field(outputs.sentences, spans))
        if with_cutoff:
            scores.append(pa.field(outputs.cutoff, pa.float64()))
        self._scores = [(field, _plain(field.type)) for field in scores]
        self._own: Optional[list] = None  # the input's columns, when it is Parquet
        self._leading: list[str] = []
        if input_schema is not None:
            self._own = [
                _own_column(column, fields.image_key) for column in input_schema if column.name not in self.added
            ]
        else:
            keys = dict.fromkeys([fields.image_key, fields.text_key, *key_columns])
            self._leading = [name for name in keys if name not in self.added]

    @property
    def infers(self) -> bool:
        """Whether the columns are typed from the records (a shape from `schema.InferShape`)."""
        return self._own is None

    def layout(self, shape: Optional[schema.Shape] = None) -> Layout:
        """The columns, with the records' `shape` when they are typed from it (without: no record columns)."""
        columns = list(self._own or [])
        if self._own is None:
            columns += [(pa.field(name, pa.string()), _text) for name in self._leading]
            for name, item in schema.fields(shape) if shape else ():
                if name not in self._leading and name not in self.added:
                    columns.append((pa.field(name, schema.arrow_type(item)), _shaped(item)))
        return Layout(columns + self._scores)


class Layout:
    """A schema, and for each column how the values of rows become its array."""

    def __init__(self, columns: list[tuple[pa.Field, Callable[[list], pa.Array]]]):
        self.schema = pa.schema([field for field, _ in columns])
        self._makers = [(field.name, make) for field, make in columns]

    def batch(self, rows: Sequence[dict]) -> pa.RecordBatch:
        arrays = [make([row.get(name) for row in rows]) for name, make in self._makers]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _own_column(column: pa.Field, image_key: str) -> tuple[pa.Field, Callable[[list], pa.Array]]:
    """An input column as written: the image column, when binary or an image struct, as a string (its path)."""
    kind = column.type
    if column.name == image_key:
        is_struct = pa.types.is_struct(kind) and {"bytes", "path"} & {
            kind.field(i).name for i in range(kind.num_fields)
        }
        is_binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
        if is_struct or is_binary:
            return pa.field(column.name, pa.string()), _text
    return column, lambda items: arrow.to_array(items, kind)


def _text(items: list) -> pa.Array:
    return pa.array([records.text_value(item) for item in items], pa.string())


def _plain(kind: pa.DataType) -> Callable[[list], pa.Array]:
    return lambda items: pa.array(items, kind)


def _shaped(shape: schema.Shape) -> Callable[[list], pa.Array]:
    return lambda items: schema.to_array(items, shape)


class InferColumns(beam.PTransform):
    """The shape of every record of the given PCollections (one element), for `ScoredTable.layout`."""

    def __init__(self, table: ScoredTable):
        super().__init__()
        self._skip = table.added

    def expand(self, scored: Sequence[beam.PCollection]):
        return scored | "All" >> beam.Flatten() | "Merge" >> beam.CombineGlobally(schema.InferShape(self._skip))


class WriteParquet(beam.PTransform):
    """Writes scored records as `<prefix>-SSSSS-of-NNNNN.parquet` (batch only), one row each.

    `shape`: when `table.infers`, the `InferColumns` of these records (and any written beside them with the same
    columns, such as the rejected ones). `metadata`: the files' key-value metadata (the job's run record).
    """

    def __init__(
        self,
        file_path_prefix: str,
        table: ScoredTable,
        shape: Optional[beam.PCollection] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ):
        super().__init__()
        if table.infers and shape is None:
            raise ValueError("records typed from their values need their shape (InferColumns)")
        self._prefix = file_path_prefix
        self._table = table
        self._shape = shape if table.infers else None
        self._metadata = dict(metadata or {})

    def expand(self, scored: beam.PCollection):
        if not scored.is_bounded:
            raise ValueError("Parquet output is for batch jobs; write JSONL files in streaming")
        side = [beam.pvalue.AsSingleton(self._shape)] if self._shape is not None else []
        return (
            scored
            | "ToTables" >> beam.ParDo(_ToTables(self._table), *side)
            | "WriteParquet" >> beam.io.Write(_ParquetSink(self._prefix, self._table.layout().schema, self._metadata))
        )


class _ToTables(beam.DoFn):
    """Records → tables of about `ROW_GROUP_BYTES`, each written as one row group."""

    def __init__(self, table: ScoredTable):
        self._table = table

    def setup(self) -> None:
        self._layout: Optional[Layout] = None

    def start_bundle(self) -> None:
        self._rows: list[dict] = []
        self._batches: list[pa.RecordBatch] = []
        self._bytes = 0

    def process(self, record: dict, shape: Any = None):
        if self._layout is None:
            self._layout = self._table.layout(shape)
        self._rows.append(record)
        if len(self._rows) >= ROWS_PER_BATCH:
            self._flush_rows()
        if self._bytes >= ROW_GROUP_BYTES:
            yield self._take_table()

    def finish_bundle(self):
        if self._rows:
            self._flush_rows()
        if self._batches:
            yield GlobalWindows.windowed_value_at_end_of_window(self._take_table())

    def _flush_rows(self) -> None:
        batch = self._layout.batch(self._rows)
        self._rows = []
        self._batches.append(batch)
        self._bytes += batch.nbytes

    def _take_table(self) -> pa.Table:
        table = pa.Table.from_batches(self._batches)
        self._batches, self._bytes = [], 0
        return table


class _ParquetSink(filebasedsink.FileBasedSink):
    """Parquet files of the tables written to them; the schema is the first table's (all have the same), or
    `empty_schema` for a file with no rows; `metadata` goes into every file's key-value metadata."""

    def __init__(self, file_path_prefix: str, empty_schema: pa.Schema, metadata: Mapping[str, str]):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=".parquet",
            mime_type="application/x-parquet",
            compression_type=CompressionTypes.UNCOMPRESSED,  # Parquet compresses its pages itself
        )
        self._empty_schema = empty_schema
        self._metadata = metadata

    def open(self, temp_path: str) -> _ParquetFile:
        return _ParquetFile(super().open(temp_path), self._empty_schema, self._metadata)

    def write_record(self, file: _ParquetFile, table: pa.Table) -> None:
        file.write(table)

    def close(self, file: _ParquetFile) -> None:
        file.close()


class _ParquetFile:
    def __init__(self, handle, empty_schema: pa.Schema, metadata: Mapping[str, str]):
        self._handle = handle
        self._empty_schema = empty_schema
        self._metadata = metadata
        self._writer: Optional[pq.ParquetWriter] = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = self._open(table.schema)
        self._writer.write_table(table)

    def _open(self, schema: pa.Schema) -> pq.ParquetWriter:
        if self._metadata:
            schema = schema.with_metadata({**(schema.metadata or {}), **self._metadata})
        return pq.ParquetWriter(self._handle, schema, compression="none")

    def close(self) -> None:
        if self._writer is None:
            self._writer = self._open(self._empty_schema)
        self._writer.close()
        self._handle.close()
