"""Hypothesis strategies for Arrow columns of every kind Parquet holds: timestamps of each unit with and without
a zone, dates and times at their extremes, decimals of full precision, durations, binary and views, NaN and
infinite floats, the widest integers, lists, structs and maps nested, dictionary-encoded columns and
extension types. Arrays are built with Arrow's own constructors (from storage values and casts), not with
the code under test.
"""

from __future__ import annotations

import decimal

import pyarrow as pa
from hypothesis import strategies as st

UNITS = ("s", "ms", "us", "ns")
ZONES = (None, "UTC", "Europe/Paris", "America/St_Johns", "+05:30", "-11:00")
INT64 = (-(2**63), 2**63 - 1)
DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


class Labelled(pa.ExtensionType):
    """An extension type of the user's own (registered only in the test's process)."""

    def __init__(self):
        super().__init__(pa.struct([("label", pa.string()), ("weight", pa.float64())]), "test.labelled")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


INTEGERS = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
PLAIN = INTEGERS + [pa.null(), pa.bool_(), pa.float16(), pa.float32(), pa.float64()]
PLAIN += [pa.string(), pa.large_string(), pa.string_view(), pa.binary(), pa.large_binary(), pa.binary_view()]
PLAIN += [pa.binary(3), pa.date32(), pa.date64(), pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns")]


def leaf_types(parquet: bool = False) -> st.SearchStrategy[pa.DataType]:
    """Types without children. `parquet`: only those Parquet files can hold and give back as they were written."""
    kinds = [
        st.sampled_from(PLAIN),
        st.builds(pa.timestamp, st.sampled_from(UNITS), st.sampled_from(ZONES)),
        st.builds(pa.duration, st.sampled_from(UNITS)),
        st.integers(1, 38).flatmap(lambda p: st.builds(pa.decimal128, st.just(p), st.integers(0, p))),
        st.integers(1, 76).flatmap(lambda p: st.builds(pa.decimal256, st.just(p), st.integers(0, p))),
        st.sampled_from([pa.uuid(), pa.json_(), pa.bool8()]),
    ]
    if not parquet:
        kinds.append(st.just(Labelled()))
    return st.one_of(kinds)


def types(parquet: bool = False) -> st.SearchStrategy[pa.DataType]:
    """Any type, nested up to three levels; with `parquet`, what Parquet gives back as written (no date64,
    second timestamps, views of lists or dictionaries of other than strings)."""
    leaves = leaf_types(parquet)
    if parquet:
        leaves = leaves.filter(
            lambda kind: (
                not (
                    pa.types.is_date64(kind)
                    or (pa.types.is_timestamp(kind) and kind.unit == "s")
                    or (pa.types.is_time32(kind) and kind.unit == "s")
                )
            )
        )

    def nest(inner):
        names = st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True)
        kinds = [
            st.builds(pa.list_, inner),
            st.builds(pa.large_list, inner),
            st.builds(pa.list_, inner, st.integers(1, 3)),
            st.builds(_struct, names, st.lists(inner, min_size=3)),
            st.builds(pa.map_, st.sampled_from([pa.string(), pa.int32()]), inner),
        ]
        if not parquet:
            kinds.append(st.builds(pa.list_view, inner))
        return st.one_of(kinds)

    dictionaries = st.builds(pa.dictionary, st.sampled_from([pa.int8(), pa.int32()]), st.just(pa.string()))
    if not parquet:
        value_types = st.sampled_from([pa.string(), pa.int64(), pa.timestamp("ns"), pa.date32()])
        dictionaries = st.builds(pa.dictionary, st.sampled_from([pa.int8(), pa.int32()]), value_types)
    return st.recursive(leaves | dictionaries, nest, max_leaves=4)


def _struct(names: list[str], kinds: list[pa.DataType]) -> pa.DataType:
    return pa.struct(list(zip(names, kinds, strict=False)))


def _int_range(kind: pa.DataType) -> tuple[int, int]:
    bits = kind.bit_width
    return (0, 2**bits - 1) if pa.types.is_unsigned_integer(kind) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _storage_values(kind: pa.DataType) -> tuple[pa.DataType, st.SearchStrategy]:
    """A leaf type's storage type, and its values (nulls included)."""
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        year_10000 = 253_402_300_800 * 10 ** (3 * UNITS.index(kind.unit))  # past int64 in ns
        extremes = st.sampled_from([INT64[0], INT64[1], 0, -1, min(year_10000, INT64[1])])
        return pa.int64(), st.integers(*INT64) | extremes
    if pa.types.is_date32(kind):
        return pa.int32(), st.integers(-(2**31), 2**31 - 1) | st.sampled_from(
            [2_932_896, 2_932_897, -719_163, -719_162]
        )
    if pa.types.is_date64(kind):
        return pa.int64(), st.integers(*INT64) | st.integers(-(10**6), 10**6).map(lambda day: day * DAY["ms"])
    if pa.types.is_time32(kind) or pa.types.is_time64(kind):
        return (pa.int32() if kind.bit_width == 32 else pa.int64()), st.integers(0, DAY[kind.unit] - 1)
    if pa.types.is_decimal(kind):
        digits = st.integers(-(10**kind.precision) + 1, 10**kind.precision - 1)
        return kind, digits.map(lambda n: decimal.Decimal(f"{n}e-{kind.scale}"))  # exact, whatever the context
    if pa.types.is_integer(kind):
        low, high = _int_range(kind)
        return kind, st.integers(low, high) | st.sampled_from([low, high])
    if pa.types.is_floating(kind):
        width = {16: 16, 32: 32, 64: 64}[kind.bit_width]
        return kind, st.floats(width=width, allow_nan=True, allow_infinity=True)
    if pa.types.is_boolean(kind):
        return kind, st.booleans()
    if pa.types.is_null(kind):
        return kind, st.none()
    if pa.types.is_fixed_size_binary(kind):
        return kind, st.binary(min_size=kind.byte_width, max_size=kind.byte_width)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return kind, st.binary(max_size=20)
    return kind, st.text(max_size=20)


@st.composite
def arrays(draw, kind: pa.DataType, size: int, parquet: bool = False) -> pa.Array:
    """An array of `kind` with `size` values, some null. `parquet`: no null fixed-size list (nor struct, which
    may hold one), which pyarrow writes to Parquet but cannot read back (apache/arrow#35692)."""
    nulls = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    if isinstance(kind, pa.BaseExtensionType):
        storage = kind.storage_type
        if kind.extension_name == "arrow.bool8":
            return pa.ExtensionArray.from_storage(kind, draw(arrays(pa.int8(), size, parquet)))
        return pa.ExtensionArray.from_storage(kind, draw(arrays(storage, size, parquet)))
    if pa.types.is_dictionary(kind):
        return draw(arrays(kind.value_type, size, parquet)).dictionary_encode().cast(kind)
    if pa.types.is_struct(kind):
        children = [draw(arrays(kind.field(i).type, size, parquet)) for i in range(kind.num_fields)]
        mask = None if parquet else pa.array(nulls, pa.bool_())
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=mask)
    if pa.types.is_fixed_size_list(kind):
        child = draw(arrays(kind.value_type, size * kind.list_size, parquet))
        mask = None if parquet else pa.array(nulls, pa.bool_())
        return pa.FixedSizeListArray.from_arrays(child, kind.list_size, mask=mask)
    if pa.types.is_map(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        lengths = draw(st.lists(st.integers(0, 3), min_size=size, max_size=size))
        offsets = [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        mask = pa.array(nulls, pa.bool_())
        if pa.types.is_map(kind):
            count = offsets[-1]
            keys = pa.array(
                draw(st.lists(_storage_values(kind.key_type)[1], min_size=count, max_size=count)), kind.key_type
            )
            items = draw(arrays(kind.item_type, offsets[-1], parquet))
            made = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items, mask=mask)
            return made if made.type == kind else made.cast(kind)
        child = draw(arrays(kind.value_type, offsets[-1], parquet))
        if pa.types.is_list_view(kind):
            return pa.ListViewArray.from_arrays(offsets[:-1], lengths, child, mask=mask)
        make = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
        return make.from_arrays(offsets, child, mask=mask)
    storage, values = _storage_values(kind)
    items = [None if null else draw(values) for null in nulls]
    return pa.array(items, storage).cast(kind) if storage != kind else pa.array(items, kind)
