"""Parquet rows read by row group, each knowing where it came from: file (`__url__`) and row (`__row__`).

The job reads Parquet input with these (`ReadParquetRecords`), so that a scored row points back to its
input row, as a WebDataset record points to its shard and sample with `__url__` and `__key__`; the report
reads scored files with them, and one cell back (`read_cell`) for a thumbnail whose image bytes the
output does not hold. Rows are decoded in small batches, so memory is a few rows, not a row group.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.io import arrow

URL_FIELD = "__url__"
ROW_FIELD = "__row__"
PROVENANCE = (pa.field(URL_FIELD, pa.string()), pa.field(ROW_FIELD, pa.int64()))
BATCH_ROWS = 64  # rows decoded at once: inline images make a row up to an image's size
_READ_BUFFER = 1 << 20  # column chunks are read through a buffer of this size, not whole


class RowGroup(NamedTuple):
    """Row group `index` of `path`, holding rows [first_row, first_row + rows) of the file."""

    path: str
    index: int
    first_row: int
    rows: int


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """The file with its footer read; its row groups are read later, a buffer at a time (any FileSystems path)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        yield pq.ParquetFile(stream, buffer_size=_READ_BUFFER)


def row_groups(path: str) -> list[RowGroup]:
    """The file's row groups, from its footer."""
    with open_parquet(path) as parquet:
        groups, first = [], 0
        for index in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            groups.append(RowGroup(path, index, first, rows))
            first += rows
        return groups


def has_provenance(schema: pa.Schema) -> bool:
    """Whether the columns already hold a `__url__` or `__row__` (then the reader adds neither: the input's own
    are kept, e.g. a WebDataset job's `__url__` and `__key__` in its Parquet output scored again)."""
    return URL_FIELD in schema.names or ROW_FIELD in schema.names


def with_provenance(schema: pa.Schema) -> pa.Schema:
    """The columns of rows read by `read_rows(provenance=True)` from files of `schema`."""
    return schema if has_provenance(schema) else pa.schema([*schema, *PROVENANCE])


def read_rows(group: RowGroup, columns: Optional[Sequence[str]] = None, provenance: bool = True) -> Iterator[dict]:
    """The rows of a row group in order, as dicts (values as `arrow.table_rows` gives them: every valid value,
    at its own unit); with `provenance`, `__url__` and `__row__` added unless the file has such a column."""
    with open_parquet(group.path) as parquet:
        add = provenance and not has_provenance(parquet.schema_arrow)
        number = group.first_row
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group.index], columns=columns):
            for row in arrow.table_rows(pa.Table.from_batches([batch])):
                if add:
                    row[URL_FIELD], row[ROW_FIELD] = group.path, number
                number += 1
                yield row


def read_cell(path: str, row: int, column: str) -> Any:
    """The value of `column` in row `row` (0-based) of the file; raises LookupError when there is no such
    row or column. Reads the row group holding it, a batch of rows at a time, that column only."""
    with open_parquet(path) as parquet:
        if column.split(".", 1)[0] not in parquet.schema_arrow.names:
            raise LookupError(f"the file has no column {column!r}")
        total = parquet.metadata.num_rows
        if not 0 <= row < total:
            raise LookupError(f"the file has no row {row} (it has {total})")
        first = 0
        for index in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if row < first + rows:
                break
            first += rows
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[index], columns=[column]):
            if row < first + batch.num_rows:
                return arrow.column_values(batch.column(0).slice(row - first, 1))[0]
            first += batch.num_rows
    raise LookupError(f"the file has no row {row}")
