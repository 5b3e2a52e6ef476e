"""Arrow values into records and back (`pipeline.io.arrow`): every valid value, no error, nothing lost."""

from __future__ import annotations

import json
import pickle
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.coders import FastPrimitivesCoder
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io import values
from pipeline.io.arrow import column_values, table_rows, to_array
from pipeline.io.records import to_json
from tests.support.arrow_fuzz import arrays, types


def _same(original: pa.Array, back: pa.Array) -> bool:
    """Equal arrays; NaN equals NaN (Arrow's `equals` says it does not), checked through the values' JSON."""
    if back.type != original.type:
        return False
    return back.equals(original) or to_json(column_values(back)) == to_json(column_values(original))


@pytest.mark.slow
@settings(max_examples=300)
@given(st.data())
def test_every_arrow_value_reads_as_a_record_value_that_writes_back_the_same(data):
    kind = data.draw(types())
    original = data.draw(arrays(kind, data.draw(st.integers(0, 5))))
    items = column_values(original)
    assert len(items) == len(original)
    text = to_json(items)  # every value has JSON text, on one line
    assert len(json.loads(text)) == len(original) and len(text.splitlines()) == 1
    assert _same(original, to_array(items, kind)), (kind, items)
    # Records cross Beam's steps pickled or in its coder: the values survive both.
    assert to_json(pickle.loads(pickle.dumps(items))) == text
    assert to_json(FastPrimitivesCoder().decode(FastPrimitivesCoder().encode(items))) == text


@settings(max_examples=60)
@given(st.data())
def test_parquet_columns_round_trip_through_records(tmp_path_factory, data):
    """Written to Parquet, read back as the job reads it, then written again: the same types and values."""
    kinds = data.draw(st.lists(types(parquet=True), min_size=1, max_size=4))
    size = data.draw(st.integers(0, 4))
    table = pa.table({f"c{i}": data.draw(arrays(kind, size, parquet=True)) for i, kind in enumerate(kinds)})
    path = tmp_path_factory.mktemp("parquet") / "in.parquet"
    pq.write_table(table, path)
    read = pq.read_table(path)
    rows = list(table_rows(read))
    assert len(rows) == size
    for column in read.schema:
        back = to_array([row[column.name] for row in rows], column.type)
        assert _same(read.column(column.name).combine_chunks(), back), column


# ---- JSON text, checked by parsing it back with arithmetic of its own -----------------------------------


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, any year (by 400-year cycles of 146,097 days)."""
    import datetime

    cycles, year_in_cycle = divmod(year, 400)
    ordinal = datetime.date(year_in_cycle + 400, month, day).toordinal()
    return ordinal - datetime.date(1970, 1, 1).toordinal() + (cycles - 1) * 146_097


def _parse_timestamp(text: str, unit: str) -> tuple[int, Optional[int]]:
    """(count of `unit` since the epoch in UTC, offset in seconds or None without one) from the ISO 8601 text."""
    import re

    match = re.fullmatch(
        r"([+-]\d{6,}|\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([+-])(\d\d):(\d\d)(?::(\d\d))?)?", text
    )
    assert match, text
    year, month, day, hour, minute, second, fraction, sign, oh, om, os_ = match.groups()
    assert len(fraction or "") == values.DIGITS[unit], text
    offset = None if sign is None else (-1 if sign == "-" else 1) * (int(oh) * 3600 + int(om) * 60 + int(os_ or 0))
    seconds = _days(int(year), int(month), int(day)) * 86_400 + int(hour) * 3600 + int(minute) * 60 + int(second)
    return (seconds - (offset or 0)) * values.PER_SECOND[unit] + int(fraction or 0), offset


@settings(max_examples=500)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(["s", "ms", "us", "ns"]),
    st.sampled_from([None, "UTC", "Europe/Paris", "Asia/Kathmandu", "+05:30", "-11:00", "Not/AZone"]),
)
def test_timestamp_text_is_the_instant_with_the_units_digits(count, unit, tz):
    text = values.Timestamp(count, unit, tz).json_value()
    parsed, offset = _parse_timestamp(text, unit)
    assert parsed == count, text
    assert (offset is None) == (tz is None), text


def test_timestamp_text_in_a_zone_is_its_local_time():
    paris = values.Timestamp(1_700_000_000_123_456_789, "ns", "Europe/Paris").json_value()
    assert paris == "2023-11-14T23:13:20.123456789+01:00"
    assert values.Timestamp(0, "s", "Not/AZone").json_value() == "1970-01-01T00:00:00+00:00", "unknown: in UTC"
    assert values.Timestamp(2**62, "s", "Europe/Paris").json_value().endswith("+00:00"), "past Python's years: UTC"


@settings(max_examples=300)
@given(st.integers(-(2**31), 2**31 - 1))
def test_date_text_is_the_day(days):
    value = values.date_value(days, "D")
    text = json.loads(to_json(value))
    year, month, day = text.rsplit("-", 2)
    assert _days(int(year), int(month), int(day)) == days, text


@settings(max_examples=300)
@given(st.integers(-(2**63), 2**63 - 1), st.sampled_from(["s", "ms", "us", "ns"]))
def test_duration_text_is_the_exact_number_of_seconds(count, unit):
    import decimal

    text = to_json({"wait": values.Duration(count, unit)})
    number = json.loads(text, parse_float=decimal.Decimal, parse_int=decimal.Decimal)["wait"]
    assert number * values.PER_SECOND[unit] == count, text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (values.TimeOfDay(1, "ns"), "00:00:00.000000001"),
        (values.TimeOfDay(86_399, "s"), "23:59:59"),
        (values.Day(1, "ms"), "1970-01-01T00:00:00.001"),
        (values.date_value(2_932_897, "D"), "+010000-01-01"),
        (values.date_value(-719_163, "D"), "0000-12-31"),
        (values.Extension("arrow.uuid", bytes(range(16))), "00010203-0405-0607-0809-0a0b0c0d0e0f"),
        (values.Extension("arrow.json", '{"a": [1]}'), '{"a": [1]}'),
        (values.Extension("arrow.bool8", 1), "1"),
        (values.Extension("test.labelled", {"label": "x", "weight": float("nan")}), '{"label": "x", "weight": "NaN"}'),
    ],
)
def test_other_values_json_lacks_have_one_text(value, text):
    assert json.loads(to_json([value])) == [text]
