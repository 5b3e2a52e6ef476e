"""One Arrow schema for records that are not Parquet rows (JSONL, WebDataset), so Parquet output has typed
columns: each record's fields are typed from their values, and the types of all records merged, widened
where they disagree (docs/formats.md, typed columns from JSON):

- null with any type is that type; an integer with a float is a float (double);
- lists merge their items' types; objects become structs with every field any of them has;
- values that share no type (a string and a number, an object and a list), integers past 64 bits and
  objects with more than `MAX_FIELDS` fields are written as their JSON text in a string column.

A type ("shape") is a small tuple, so `InferShape` merges one per record in a `CombineFn` whose accumulator
is the size of the schema, never of the data.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import apache_beam as beam
import pyarrow as pa

from pipeline.io import records

NULL, BOOL, INT, FLOAT, STRING, BINARY, JSON = (
    ("null",),
    ("bool",),
    ("int",),
    ("float",),
    ("string",),
    ("binary",),
    ("json",),
)
LIST, STRUCT = "list", "struct"
# An object (below the top level) with more distinct fields than this, over all records, is written as JSON text.
MAX_FIELDS = 1000
_INT64 = (-(2**63), 2**63 - 1)
_ARROW = {NULL: pa.null(), BOOL: pa.bool_(), INT: pa.int64(), FLOAT: pa.float64(), STRING: pa.string()}
_ARROW.update({BINARY: pa.binary(), JSON: pa.string()})

Shape = tuple  # one of the constants, (LIST, item shape) or (STRUCT, ((name, position, shape), ...))


def shape_of(value: Any) -> Shape:
    """The type of one value. A struct's fields keep their position in the object, to order the columns."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT if _INT64[0] <= value <= _INT64[1] else JSON
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STRING
    if isinstance(value, (bytes, bytearray)):
        return BINARY
    if isinstance(value, (list, tuple)):
        item = NULL
        for element in value:
            item = merge(item, shape_of(element))
        return (LIST, item)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        if len(value) > MAX_FIELDS:
            return JSON
        return (STRUCT, tuple((key, position, shape_of(item)) for position, (key, item) in enumerate(value.items())))
    return JSON


def record_shape(record: dict, skip: Iterable[str] = ()) -> Shape:
    """The type of a record's fields but those in `skip` (the fields the job adds)."""
    skipped = set(skip)
    fields = tuple(
        (key, position, shape_of(value)) for position, (key, value) in enumerate(record.items()) if key not in skipped
    )
    return (STRUCT, fields)


def merge(a: Shape, b: Shape, *, top: bool = False) -> Shape:
    """The narrowest type both fit, JSON where there is none; the same whatever the order of merges."""
    if a == b:
        return a
    if a == NULL or b == NULL:
        return b if a == NULL else a
    if JSON in (a, b):
        return JSON
    if {a, b} == {INT, FLOAT}:
        return FLOAT
    if a[0] == b[0] == LIST:
        return (LIST, merge(a[1], b[1]))
    if a[0] == b[0] == STRUCT:
        fields = {name: (position, shape) for name, position, shape in a[1]}
        for name, position, shape in b[1]:
            if name in fields:
                known_position, known = fields[name]
                fields[name] = (min(position, known_position), merge(known, shape))
            else:
                fields[name] = (position, shape)
        if len(fields) > MAX_FIELDS and not top:
            return JSON
        return (STRUCT, tuple((name, position, shape) for name, (position, shape) in fields.items()))
    return JSON


def fields(shape: Shape) -> list[tuple[str, Shape]]:
    """A struct's fields in column order: by the earliest position each had in an object, then by name."""
    return [(name, item) for name, _, item in sorted(shape[1], key=lambda field: (field[1], field[0]))]


def arrow_type(shape: Shape) -> pa.DataType:
    """The Arrow type of a shape; an object that never had a field is JSON text (Parquet has no empty struct)."""
    shape = _writable(shape)
    if shape[0] == LIST:
        return pa.list_(arrow_type(shape[1]))
    if shape[0] == STRUCT:
        return pa.struct([pa.field(name, arrow_type(item)) for name, item in fields(shape)])
    return _ARROW[shape]


def to_array(items: list, shape: Shape) -> pa.Array:
    """The column of `items`, all of them values `shape` was merged from."""
    convert = _converter(_writable(shape))
    return pa.array(items if convert is None else [convert(item) for item in items], arrow_type(shape))


def _writable(shape: Shape) -> Shape:
    return JSON if shape[0] == STRUCT and not shape[1] else shape


def _converter(shape: Shape) -> Optional[Callable[[Any], Any]]:
    """How a value becomes one `pa.array` takes for `arrow_type(shape)`; None when it already is."""
    if shape == JSON:
        return lambda value: None if value is None else records.to_json(value)
    if shape == FLOAT:
        return lambda value: float(value) if isinstance(value, int) else value
    if shape[0] == LIST:
        inner = _converter(_writable(shape[1]))
        return None if inner is None else lambda items: None if items is None else [inner(item) for item in items]
    if shape[0] == STRUCT:
        children = {name: _converter(_writable(item)) for name, item in fields(shape)}
        children = {name: child for name, child in children.items() if child is not None}
        if not children:
            return None
        return lambda row: None if row is None else {k: children[k](v) if k in children else v for k, v in row.items()}
    return None


class InferShape(beam.CombineFn):
    """The merged type of every record (a struct of their fields), leaving out the fields in `skip`."""

    def __init__(self, skip: Iterable[str] = ()):
        self._skip = frozenset(skip)

    def create_accumulator(self) -> Shape:
        return (STRUCT, ())

    def add_input(self, shape: Shape, record: dict) -> Shape:
        return merge(shape, record_shape(record, self._skip), top=True)

    def merge_accumulators(self, shapes: Iterable[Shape]) -> Shape:
        merged = (STRUCT, ())
        for shape in shapes:
            merged = merge(merged, shape, top=True)
        return merged

    def extract_output(self, shape: Shape) -> Shape:
        return shape
