"""Typed columns from JSON records (`pipeline.io.schema`): the widening rules, one schema whatever the order
records are merged in, and values that come back from pyarrow as they went in."""

from __future__ import annotations

import functools
import json
import math

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io import schema
from pipeline.io.records import to_json
from tests.support.fuzz import json_values


def _column_type(*items) -> pa.DataType:
    return schema.arrow_type(functools.reduce(schema.merge, map(schema.shape_of, items), schema.NULL))


NESTED = pa.struct([("b", pa.list_(pa.int64())), ("c", pa.bool_())])


@pytest.mark.parametrize(
    ("items", "kind"),
    [
        ((1, 2.5), pa.float64()),
        ((None, "a"), pa.string()),
        ((None, None), pa.null()),
        ((True, None), pa.bool_()),
        ((True, 1), pa.string()),  # no shared type: JSON text
        (("1", 1), pa.string()),
        ((2**63, 1), pa.string()),  # past 64 bits
        (([1], [2.5, None], []), pa.list_(pa.float64())),
        (([], None), pa.list_(pa.null())),
        (({"a": 1}, {"b": "x"}), pa.struct([("a", pa.int64()), ("b", pa.string())])),
        (({"a": {"b": [1]}}, {"a": {"b": [None], "c": True}}), pa.struct([("a", NESTED)])),
        (({"a": 1}, {"a": [1]}), pa.struct([("a", pa.string())])),  # only the field that disagrees is JSON
        (({},), pa.string()),  # Parquet has no struct without fields
        (({"x": 1}, [1]), pa.string()),
    ],
)  # fmt: skip
def test_widening_rules(items, kind):
    assert _column_type(*items) == kind


def test_an_object_with_too_many_fields_is_json_text():
    wide = [{f"k{i}": i} for i in range(schema.MAX_FIELDS + 1)]
    assert _column_type(*[{"labels": item} for item in wide]) == pa.struct([("labels", pa.string())])
    top = functools.reduce(
        lambda shape, item: schema.merge(shape, schema.record_shape(item), top=True), wide, (schema.STRUCT, ())
    )
    assert len(schema.fields(top)) == schema.MAX_FIELDS + 1, "a record's own fields are always columns"


def _merge_all(shapes) -> schema.Shape:
    return functools.reduce(lambda a, b: schema.merge(a, b, top=True), shapes, (schema.STRUCT, ()))


records = st.lists(st.dictionaries(st.sampled_from("abcdefg"), json_values, max_size=5), min_size=1, max_size=8)


@settings(max_examples=200)
@given(records, st.randoms(use_true_random=False))
def test_one_schema_whatever_the_order_of_merges(rows, random):
    shapes = [schema.record_shape(row) for row in rows]
    in_order = functools.reduce(lambda a, b: schema.merge(a, b, top=True), shapes, (schema.STRUCT, ()))
    random.shuffle(shapes)
    middle = len(shapes) // 2
    halves = [
        functools.reduce(lambda a, b: schema.merge(a, b, top=True), part, (schema.STRUCT, ()))
        for part in (shapes[:middle], shapes[middle:])
    ]
    shuffled = schema.merge(halves[1], halves[0], top=True)
    assert schema.arrow_type(in_order) == schema.arrow_type(shuffled)


def _same(value, back) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return isinstance(back, float) and math.isnan(back)
    if isinstance(value, dict):
        return (
            isinstance(back, dict) and value.keys() == back.keys() and all(_same(v, back[k]) for k, v in value.items())
        )
    if isinstance(value, list):
        return isinstance(back, list) and len(back) == len(value) and all(map(_same, value, back))
    return value == back and type(value) is type(back)


def _expected(value, shape):
    """What pyarrow reads back: ints of a double column as floats, objects with every field of the struct, and
    where values share no type, their JSON text (which parses back to them)."""
    if value is None:
        return None
    if shape == schema.JSON or (shape[0] == schema.STRUCT and not shape[1]):
        text = to_json(value)
        assert _same(json.loads(text), json.loads(to_json(value)))
        return text
    if shape == schema.FLOAT:
        return float(value)
    if shape[0] == schema.LIST:
        return [_expected(item, shape[1]) for item in value]
    if shape[0] == schema.STRUCT:
        return {name: _expected(value.get(name), item) for name, item in schema.fields(shape)}
    return value


@settings(max_examples=150)
@given(records)
def test_values_come_back_from_parquet_as_they_went_in(tmp_path_factory, rows):
    """Through a Parquet file and pyarrow, every value as `_expected` says."""
    shape = _merge_all(map(schema.record_shape, rows))
    columns = {name: schema.to_array([row.get(name) for row in rows], item) for name, item in schema.fields(shape)}
    path = tmp_path_factory.mktemp("typed") / "rows.parquet"
    pq.write_table(pa.table(columns) if columns else pa.table({"n": [None] * len(rows)}), path)
    back = pq.read_table(path).to_pylist()
    for row, read in zip(rows, back, strict=True):
        for name, item in schema.fields(shape):
            assert _same(_expected(row.get(name), item), read[name]), (name, row.get(name), read[name])


def test_the_shape_of_every_record_is_one_global_combine_on_the_fnapi_runner(tmp_path):
    rows = [{"id": i, "score": i / 2 if i % 2 else i, "longclip_score": 0.5} for i in range(200)]
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (
            pipeline
            | beam.Create(rows, reshuffle=True)
            | beam.CombineGlobally(schema.InferShape(skip=["longclip_score"]))
            | beam.Map(lambda shape: str(schema.arrow_type(shape)))
            | beam.io.WriteToText(str(tmp_path / "shape"), shard_name_template="")
        )
    assert (tmp_path / "shape").read_text().strip() == "struct<id: int64, score: double>"
