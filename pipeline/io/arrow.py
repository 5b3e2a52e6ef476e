"""Arrow tables into records and records' values back into Arrow arrays, every value kept as what it is.

`pyarrow`'s `as_py()` (and Beam's Parquet reader, which calls it) raises on valid values (nanoseconds, dates
past 9999) and returns types JSON lacks (`uuid.UUID`). Here a column whose type holds times, dates, durations
or extension types is seen as its storage type (integers, the extension's storage: the same buffers), read in
one go, and its values wrapped in `pipeline.io.values` types; the way back builds the storage array and sees
it as the column's type again. Other columns are read and written as `pyarrow` does.

`table_rows` is the one way the project reads Parquet rows (the job and the report).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import pyarrow as pa

from pipeline.io import values

Convert = Optional[Callable[[Any], Any]]  # None: values pass as they are


def table_rows(table: pa.Table) -> Iterator[dict]:
    """The rows of `table` as dicts: binary columns are bytes, structs dicts, maps lists of (key, value)
    tuples, dictionary-encoded columns their values; times, dates and extension values as `values` has them."""
    columns = [column_values(table.column(i)) for i in range(table.num_columns)]
    names = table.schema.names
    for row in zip(*columns, strict=True) if columns else ({} for _ in range(table.num_rows)):
        yield dict(zip(names, row, strict=True))


def column_values(column: pa.ChunkedArray | pa.Array) -> list:
    """One column's values as Python values (`table_rows`)."""
    wrap = _wrapper(column.type)
    if wrap is None:
        return column.to_pylist()
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return [wrap(value) for chunk in chunks for value in as_storage(chunk).to_pylist()]


def to_array(items: list, kind: pa.DataType) -> pa.Array:
    """An array of `kind` from the values `column_values` gives (or plain Python values `pyarrow` takes)."""
    unwrap = _unwrapper(kind)
    if unwrap is None and storage_type(kind) == kind:
        return pa.array(items, kind)
    storage = pa.array(items if unwrap is None else [unwrap(item) for item in items], storage_type(kind))
    return from_storage(storage, kind)


def as_storage(array: pa.Array) -> pa.Array:
    """The same values as `storage_type(array.type)`: times as their integers (the same buffers), extension
    values as their storage, dictionaries decoded; nested arrays rebuilt around their converted children."""
    if array.offset:  # children of a slice are not sliced: take the values first
        array = array.take(pa.array(range(len(array)), pa.int64()))
    kind = array.type
    if isinstance(kind, pa.BaseExtensionType):
        return as_storage(array.storage)
    if pa.types.is_dictionary(kind):
        return as_storage(array.dictionary_decode())
    if storage_type(kind) == kind:
        return array
    if _is_temporal(kind):
        return array.view(storage_type(kind))
    return _rebuild(array, storage_type(kind), as_storage)


def from_storage(array: pa.Array, kind: pa.DataType) -> pa.Array:
    """The inverse of `as_storage`: an array of `storage_type(kind)` as an array of `kind`."""
    if isinstance(kind, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(kind, from_storage(array, kind.storage_type))
    if pa.types.is_dictionary(kind):
        encoded = from_storage(array, kind.value_type).dictionary_encode()
        return encoded if encoded.type == kind else encoded.cast(kind)
    if array.type == kind:
        return array
    if _is_temporal(kind):
        return array.view(kind)
    return _rebuild(array, kind, lambda child, child_kind: from_storage(child, child_kind))


def _rebuild(array: pa.Array, kind: pa.DataType, convert: Callable) -> pa.Array:
    """A list, map or struct `array` as `kind`, its children converted with `convert(child[, child kind])`."""
    mask = array.is_null() if array.null_count else None

    def child(values: pa.Array, child_kind: pa.DataType) -> pa.Array:
        return convert(values) if convert is as_storage else convert(values, child_kind)

    if pa.types.is_struct(kind):
        children = [child(array.field(i), kind.field(i).type) for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=mask)
    if pa.types.is_map(kind):
        keys, items = child(array.keys, kind.key_type), child(array.items, kind.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=kind, mask=mask)
    values = child(array.values, kind.value_type)
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(values, type=kind, mask=mask)
    if pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind):
        make = pa.LargeListViewArray if pa.types.is_large_list_view(kind) else pa.ListViewArray
        return make.from_arrays(array.offsets, array.sizes, values, type=kind, mask=mask)
    make = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
    return make.from_arrays(array.offsets, values, type=kind, mask=mask)


def _is_temporal(kind: pa.DataType) -> bool:
    return pa.types.is_temporal(kind) and not pa.types.is_interval(kind)


def storage_type(kind: pa.DataType) -> pa.DataType:
    """`kind` with times, dates and durations as integers and extension types as their storage, nested
    types alike (dictionaries decoded): what `to_pylist()` reads without loss or error."""
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_date64(kind):
        return pa.int64()
    if pa.types.is_time64(kind):
        return pa.int64()
    if pa.types.is_date32(kind) or pa.types.is_time32(kind):
        return pa.int32()
    if isinstance(kind, pa.BaseExtensionType):
        return storage_type(kind.storage_type)
    if pa.types.is_dictionary(kind):
        return storage_type(kind.value_type)
    return _nested(kind, storage_type)


def _nested(kind: pa.DataType, convert: Callable[[pa.DataType], pa.DataType]) -> pa.DataType:
    """`kind` with `convert` applied to its children (the same type when it has none)."""
    if pa.types.is_map(kind):
        return pa.map_(convert(kind.key_type), _child(kind.item_field, convert), kind.keys_sorted)
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_child(kind.value_field, convert), kind.list_size)
    if pa.types.is_large_list(kind):
        return pa.large_list(_child(kind.value_field, convert))
    if pa.types.is_list(kind):
        return pa.list_(_child(kind.value_field, convert))
    if pa.types.is_large_list_view(kind):
        return pa.large_list_view(_child(kind.value_field, convert))
    if pa.types.is_list_view(kind):
        return pa.list_view(_child(kind.value_field, convert))
    if pa.types.is_struct(kind):
        return pa.struct([_child(kind.field(i), convert) for i in range(kind.num_fields)])
    return kind


def _child(field: pa.Field, convert: Callable[[pa.DataType], pa.DataType]) -> pa.Field:
    return field.with_type(convert(field.type))


def _wrapper(kind: pa.DataType) -> Convert:
    """How a value of `storage_type(kind)` becomes the Python value of `kind`; None when it already is."""
    if pa.types.is_timestamp(kind):
        unit, tz = kind.unit, kind.tz
        return lambda count: None if count is None else values.Timestamp(count, unit, tz)
    if pa.types.is_duration(kind):
        unit = kind.unit
        return lambda count: None if count is None else values.Duration(count, unit)
    if pa.types.is_time32(kind) or pa.types.is_time64(kind):
        unit = kind.unit
        return lambda count: None if count is None else values.TimeOfDay(count, unit)
    if pa.types.is_date32(kind) or pa.types.is_date64(kind):
        unit = "D" if pa.types.is_date32(kind) else "ms"
        return lambda count: None if count is None else values.date_value(count, unit)
    if isinstance(kind, pa.BaseExtensionType):
        name, inner = kind.extension_name, _wrapper(kind.storage_type)
        if inner is None:
            return lambda value: None if value is None else values.Extension(name, value)
        return lambda value: None if value is None else values.Extension(name, inner(value))
    if pa.types.is_dictionary(kind):
        return _wrapper(kind.value_type)
    return _nested_converter(kind, _wrapper)


def _unwrapper(kind: pa.DataType) -> Convert:
    """How a Python value of `kind` becomes a value of `storage_type(kind)`; None when `pa.array` takes it."""
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind) or pa.types.is_time(kind):
        return _count
    if pa.types.is_date32(kind) or pa.types.is_date64(kind):
        per_day = 1 if pa.types.is_date32(kind) else values.DAY_MS
        return lambda value: _day_count(value, per_day)
    if isinstance(kind, pa.BaseExtensionType):
        inner = _unwrapper(kind.storage_type) or (lambda value: value)
        return lambda value: inner(value.storage if isinstance(value, values.Extension) else value)
    if pa.types.is_dictionary(kind):
        return _unwrapper(kind.value_type)
    return _nested_converter(kind, _unwrapper)


def _count(value):
    return value.count if isinstance(value, (values.Timestamp, values.Duration, values.TimeOfDay)) else value


def _day_count(value, per_day: int):
    """Days (`per_day` 1, date32) or milliseconds (date64) since 1970-01-01."""
    if value is None:
        return None
    if isinstance(value, values.Day):
        count = value.count * values.DAY_MS if value.unit == "D" else value.count
        return count if per_day == values.DAY_MS else count // values.DAY_MS
    return (value.toordinal() - values.EPOCH_ORDINAL) * per_day


def _nested_converter(kind: pa.DataType, converter: Callable[[pa.DataType], Convert]) -> Convert:
    """A list, map or struct converter that applies `converter(child type)` to its children; None when no
    child needs one."""
    if pa.types.is_map(kind):
        key, item = converter(kind.key_type), converter(kind.item_type)
        if key is None and item is None:
            return None
        key, item = key or _same, item or _same
        return lambda entries: None if entries is None else [(key(k), item(v)) for k, v in _entries(entries)]
    if _is_list(kind):
        inner = converter(kind.value_type)
        if inner is None:
            return None
        return lambda items: None if items is None else [inner(item) for item in items]
    if pa.types.is_struct(kind):
        children = {kind.field(i).name: converter(kind.field(i).type) for i in range(kind.num_fields)}
        children = {name: child for name, child in children.items() if child is not None}
        if not children:
            return None
        return lambda row: None if row is None else {k: children[k](v) if k in children else v for k, v in row.items()}
    return None


def _same(value):
    return value


def _entries(entries):
    """A map's entries: (key, value) pairs, or a dict's items."""
    return entries.items() if isinstance(entries, dict) else entries


def _is_list(kind: pa.DataType) -> bool:
    return (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    )
