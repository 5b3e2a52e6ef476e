"""Parquet rows by row group, each with its file and row; one cell read back by file, row and column."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.parquet_rows import read_cell, read_rows, row_groups, with_provenance

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _table(count: int) -> pa.Table:
    images = [{"bytes": bytes([i]) * (i + 1), "path": f"{i}.png"} for i in range(count)]
    return pa.table({"image": pa.array(images, IMAGE), "raw": [bytes([i]) for i in range(count)], "n": range(count)})


def test_rows_carry_their_file_and_row_across_row_groups(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(_table(200), path, row_group_size=70)
    groups = row_groups(str(path))
    assert [(group.index, group.first_row, group.rows) for group in groups] == [(0, 0, 70), (1, 70, 70), (2, 140, 60)]
    rows = [row for group in reversed(groups) for row in read_rows(group)]  # in any order, each knows its row
    assert sorted((row["__row__"], row["n"]) for row in rows) == [(i, i) for i in range(200)]
    assert {row["__url__"] for row in rows} == {str(path)}
    assert rows[-1]["image"] == {"bytes": b"\x45" * 70, "path": "69.png"}, "values as pyarrow gives them"
    assert list(read_rows(groups[0], columns=["n"], provenance=False))[:2] == [{"n": 0}, {"n": 1}]


def test_a_file_with_its_own_url_column_keeps_it_and_gets_no_row(tmp_path):
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"__url__": ["shards/0.tar"], "__key__": ["000"], "image": ["000.jpg"]}), path)
    (group,) = row_groups(str(path))
    assert list(read_rows(group)) == [{"__url__": "shards/0.tar", "__key__": "000", "image": "000.jpg"}]
    schema = pq.read_schema(path)
    assert with_provenance(schema) == schema
    plain = pa.schema([("n", pa.int64())])
    assert with_provenance(plain).names == ["n", "__url__", "__row__"]


def test_one_cell_is_read_back_by_file_row_and_column(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(_table(200), path, row_group_size=70)
    assert read_cell(str(path), 141, "image") == {"bytes": b"\x8d" * 142, "path": "141.png"}
    assert read_cell(str(path), 0, "raw") == b"\x00"
    assert read_cell(str(path), 199, "image.path") == {"path": "199.png"}
    with pytest.raises(LookupError, match="no row 200 \\(it has 200\\)"):
        read_cell(str(path), 200, "image")
    with pytest.raises(LookupError, match="no column 'picture'"):
        read_cell(str(path), 0, "picture")
