"""Reading scored files for the report: the job's own readers, so that whatever a file holds costs linear time
and bounded memory.

JSONL files are cut into parts and read with the job's line reader (`pipeline/io/lines.py`): linear in the
line length (Beam's text reader is quadratic: 85 s for one 48 MB line), each line at most
`--max_line_bytes`; a longer line is skipped through and counted as unreadable, never loaded. Parquet files
are read by row group, a few rows at a time, only the columns the report uses; an image column holding
bytes is not read at all: the row gets an `ImageCell` naming where they are, for its thumbnail.
"""

from __future__ import annotations

import logging
from typing import Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
import pyarrow as pa

from pipeline.io import parquet_rows, records
from pipeline.io.jsonl import read_part
from pipeline.io.lines import LongLine
from pipeline.io.parts import InputPart
from transforms import OutputFields, RecordFields

_LOGGER = logging.getLogger(__name__)

# Where a WebDataset sample or a Parquet input row lies, as the job's readers add them.
PROVENANCE_FIELDS = ("__url__", "__key__", "__row__")


class ImageCell(NamedTuple):
    """Image bytes left in a scored Parquet file: row `row` (from 0) of `path`, column `column`."""

    path: str
    row: int
    column: str


def is_parquet(path: str) -> bool:
    return path.lower().endswith(".parquet")


class ReadScoredRows(beam.PTransform):
    """Parts of scored files → dicts (None for a line that is not a JSON object or is over the limit).

    `parts` as `pipeline.io.parts.plan_parts` cuts them; Parquet files (by extension) are read by row group.
    """

    def __init__(self, parts: Sequence[InputPart], fields: RecordFields, max_line_bytes: int):
        super().__init__()
        self._parts = sorted(parts)
        self._fields = fields
        self._max_line_bytes = max_line_bytes

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        jsonl = [part for part in self._parts if not is_parquet(part.path)]
        parquet = sorted({part.path for part in self._parts if is_parquet(part.path)})
        parts = []
        if jsonl:
            parts.append(
                begin
                | "JsonlParts" >> beam.Create(jsonl)
                | "ReadLines" >> beam.FlatMap(_rows_of_part, self._max_line_bytes)
            )
        if parquet:
            parts.append(
                begin
                | "ParquetFiles" >> beam.Create(parquet)
                | "RowGroups" >> beam.FlatMap(parquet_rows.row_groups)
                | "SpreadRowGroups" >> beam.Reshuffle()
                | "ReadRowGroups" >> beam.FlatMap(_rows_of_group, self._fields)
            )
        if not parts:
            return begin | "NoFiles" >> beam.Create([])
        return parts | "AllRows" >> beam.Flatten()


def _rows_of_part(part: InputPart, max_line_bytes: int) -> Iterator[Optional[dict]]:
    for _, line in read_part(part, max_line_bytes):
        if isinstance(line, LongLine):
            yield None
            continue
        if not line.strip():
            continue
        try:
            yield records.parse_record(line)
        except records.MalformedRecord:
            yield None


def _rows_of_group(group: parquet_rows.RowGroup, fields: RecordFields) -> Iterator[dict]:
    """The rows of a row group, with the columns the report uses; image bytes as an `ImageCell`."""
    with parquet_rows.open_parquet(group.path) as parquet:
        schema = parquet.schema_arrow
    image_bytes = fields.image_key in schema.names and _holds_bytes(schema.field(fields.image_key).type)
    outputs = OutputFields.of(fields)
    wanted = {outputs.score, outputs.reason, outputs.truncated, fields.text_key, *PROVENANCE_FIELDS}
    if not image_bytes:
        wanted.add(fields.image_key)
    columns = [name for name in schema.names if name in wanted]
    for number, row in enumerate(parquet_rows.read_rows(group, columns, provenance=False), start=group.first_row):
        if image_bytes:
            row[fields.image_key] = ImageCell(group.path, number, fields.image_key)
        yield row


def _holds_bytes(kind: pa.DataType) -> bool:
    """A binary column, or an image struct with a `bytes` field (as Hugging Face `datasets` writes)."""
    if pa.types.is_struct(kind):
        return any(kind.field(i).name == "bytes" for i in range(kind.num_fields))
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
