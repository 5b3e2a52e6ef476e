"""Parquet in and out: LAION-style metadata (`url`, `caption`, images on an HTTP server) and Hugging Face
datasets (an image struct of bytes and path), scored end to end, one output row per input row, exact."""

import datetime
import decimal
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import run, summarize
from pipeline.io.arrow import column_values
from pipeline.io.records import to_json
from tests.support.arrow_fuzz import arrays, types
from tests.support.cli import run_job
from tests.support.reference_longclip import reference_score
from transforms.testing.captions import CAPTIONS
from transforms.testing.datasets import serve_folder

SCORE_COLUMNS = [
    ("longclip_score", pa.float64()),
    ("longclip_score_reason", pa.string()),
    ("longclip_score_error", pa.string()),
    ("longclip_score_truncated", pa.bool_()),
    ("longclip_score_image_embedding", pa.list_(pa.float32())),
    ("longclip_score_text_embedding", pa.list_(pa.float32())),
]

PROVENANCE_COLUMNS = [("__url__", pa.string()), ("__row__", pa.int64())]


def _read_output(folder) -> pa.Table:
    files = sorted(folder.glob("scored-*-of-*.parquet"))
    assert files, list(folder.iterdir())
    return pa.concat_tables(pq.read_table(path) for path in files)


def _check_scored_row(row, expected_score):
    """The score equals the reference, and is clamp((dot + 1) / 2, 0, 1) of two unit vectors."""
    assert abs(row["longclip_score"] - expected_score) < 1e-6, (row, expected_score)
    image = torch.tensor(row["longclip_score_image_embedding"], dtype=torch.float64)
    text = torch.tensor(row["longclip_score_text_embedding"], dtype=torch.float64)
    assert image.shape == text.shape == (32,)
    assert abs(image.norm() - 1) < 1e-5 and abs(text.norm() - 1) < 1e-5
    assert abs(min(max((image @ text + 1) / 2, 0.0), 1.0) - row["longclip_score"]) < 1e-6


@pytest.mark.slow
def test_laion_style_parquet_with_urls_keeps_its_columns(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    names = ["rgb.jpg", "grey.png", "cmyk.jpg", "rgb.png", "palette.gif"]
    captions = [CAPTIONS[name] for name in sorted(CAPTIONS)]
    with serve_folder(good_images["rgb.jpg"].parent) as base:
        urls = [f"{base}/{name}" for name in names] + [f"{base}/missing.jpg", f"{base}/rgb.jpg"]
        table = pa.table(
            {
                "SAMPLE_ID": pa.array(range(len(urls)), pa.int64()),
                "url": urls,
                "caption": [captions[i % len(captions)] for i in range(len(urls) - 1)] + [None],
                "similarity": [0.3 + i / 100 for i in range(len(urls))],
                "NSFW": ["UNLIKELY"] * len(urls),
                "fetched": pa.array([datetime.datetime(2021, 8, 1, i) for i in range(len(urls))], pa.timestamp("us")),
            }
        )
        pq.write_table(table.slice(0, 4), tmp_path / "part-00000.parquet")
        pq.write_table(table.slice(4), tmp_path / "part-00001.parquet")
        done = run_job(
            "--input", str(tmp_path / "part-*.parquet"), "--output", str(tmp_path / "out" / "scored"),
            "--image_key", "url", "--text_key", "caption", "--output_format", "parquet", "--embeddings",
            "--model", str(longclip_checkpoint), "--max_batch_size", "4",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = _read_output(tmp_path / "out")
    assert [(f.name, f.type) for f in out.schema] == [
        (f.name, f.type) for f in table.schema
    ] + PROVENANCE_COLUMNS + SCORE_COLUMNS
    rows = sorted(out.to_pylist(), key=lambda row: row["SAMPLE_ID"])
    assert [row["SAMPLE_ID"] for row in rows] == list(range(len(urls))), "one row per input row"
    files = [str(tmp_path / "part-00000.parquet")] * 4 + [str(tmp_path / "part-00001.parquet")] * 3
    assert [(row["__url__"], row["__row__"]) for row in rows] == list(zip(files, [0, 1, 2, 3, 0, 1, 2], strict=True))
    for row, original in zip(rows, table.to_pylist(), strict=True):
        assert {key: row[key] for key in original} == original, "the input's own columns come out as they were"
    for row, name in zip(rows, names, strict=False):
        _check_scored_row(row, reference_score(longclip_state_dict, good_images[name], row["caption"]))
    assert (
        rows[-2]["longclip_score_reason"] == "image_not_found" and rows[-1]["longclip_score_reason"] == "text_missing"
    )
    assert rows[-1]["longclip_score_image_embedding"] is None and rows[-2]["longclip_score"] == 0.0
    assert "Done: 7 records read, 5 scored, 2 scored 0.0 with an error" in done.stderr


@pytest.mark.slow
def test_hugging_face_parquet_with_image_structs(tmp_path, longclip_checkpoint, longclip_state_dict, good_images):
    """`datasets` writes images as a struct of bytes and path; the output keeps the path, never the bytes."""
    names = ["rgb.jpg", "grey.webp", "rgba.png", "animated.gif"]
    images = [{"bytes": good_images[name].read_bytes(), "path": name} for name in names]
    images += [
        {"bytes": None, "path": str(good_images["la.png"])},  # no bytes: the path is read
        {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": "broken.png"},
        None,
    ]
    texts = [CAPTIONS["over_248_tokens"], CAPTIONS["unicode"], CAPTIONS["short"], CAPTIONS["long_200_tokens"]]
    texts += [CAPTIONS["html_and_space"], "a broken picture", "no image at all"]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"image": pa.array(images, image_type), "text": texts, "label": list(range(len(texts)))})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet", row_group_size=3)
    done = run_job(
        "--input", str(tmp_path / "train-*.parquet"), "--output", str(tmp_path / "out" / "scored"),
        "--image_key", "image", "--output_format", "parquet", "--embeddings", "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = _read_output(tmp_path / "out")
    assert [(f.name, f.type) for f in out.schema] == [
        ("image", pa.string()),
        ("text", pa.string()),
        ("label", pa.int64()),
    ] + PROVENANCE_COLUMNS + SCORE_COLUMNS
    rows = sorted(out.to_pylist(), key=lambda row: row["label"])
    assert [row["label"] for row in rows] == list(range(len(texts)))
    source = str(tmp_path / "train-00000-of-00001.parquet")
    assert [(row["__url__"], row["__row__"]) for row in rows] == [(source, i) for i in range(len(texts))], (
        "each row says where its image bytes are: file and row (row groups of 3 rows)"
    )
    assert [row["image"] for row in rows] == names + [str(good_images["la.png"]), "broken.png", None]
    for row, name in zip(rows[:5], names + ["la.png"], strict=True):
        _check_scored_row(row, reference_score(longclip_state_dict, good_images[name], row["text"]))
    assert rows[0]["longclip_score_truncated"] is True
    assert [row["longclip_score_reason"] for row in rows[5:]] == ["image_undecodable", "image_missing"]
    written = b"".join(path.read_bytes() for path in (tmp_path / "out").glob("scored-*.parquet"))
    assert images[0]["bytes"][100:164] not in written, "image bytes must never reach the output"


def test_parquet_values_json_lacks_are_written_as_text_in_jsonl(tmp_path, longclip_checkpoint, good_images):
    """Parquet input, JSONL output: timestamps (with their unit's digits), dates, decimals and other binary
    columns become JSON text."""
    table = pa.table(
        {
            "image_path": [str(good_images["rgb.png"]), str(good_images["grey.png"])],
            "text": ["a red square", "a grey square"],
            "taken": pa.array([datetime.datetime(2024, 5, 1, 12, 30), None], pa.timestamp("ms")),
            "day": pa.array([datetime.date(2024, 5, 1)] * 2, pa.date32()),
            "price": pa.array([decimal.Decimal("1.50")] * 2, pa.decimal128(5, 2)),
            "thumbnail": [b"\x00\x01", None],
            "tags": pa.array([[("a", 1)], []], pa.map_(pa.string(), pa.int64())),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out" / "scored")]
    counts = summarize(run(argv + ["--model", str(longclip_checkpoint)]))
    assert (counts["read"], counts["scored"]) == (2, 2)
    lines = [json.loads(line) for path in (tmp_path / "out").glob("scored-*.jsonl") for line in path.open()]
    first = next(line for line in lines if line["text"] == "a red square")
    assert (first["taken"], first["day"], first["price"]) == ("2024-05-01T12:30:00.000", "2024-05-01", "1.50")
    assert (first["__url__"], first["__row__"]) == (str(tmp_path / "in.parquet"), 0)
    assert first["thumbnail"] == "AAE=" and first["tags"] == [["a", 1]]


@pytest.mark.slow
def test_a_filtered_parquet_job_writes_its_rejected_rows_as_parquet_with_the_cutoff(
    tmp_path, longclip_checkpoint, good_images
):
    names = ["rgb.jpg", "grey.png", "cmyk.jpg", "rgb.png", "palette.gif", "la.png"]
    table = pa.table(
        {
            "id": pa.array(range(len(names) + 1), pa.int64()),
            "image_path": [str(good_images[name]) for name in names] + [str(tmp_path / "missing.png")],
            "text": [CAPTIONS[caption] for caption in sorted(CAPTIONS)][: len(names) + 1],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    done = run_job(
        "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out" / "scored"),
        "--output_format", "parquet", "--keep_top_fraction", "0.5", "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept = _read_output(tmp_path / "out").to_pylist()
    rejected_files = sorted((tmp_path / "out").glob("scored.rejected-*-of-*.parquet"))
    rejected_table = pa.concat_tables(pq.read_table(path) for path in rejected_files)
    assert rejected_table.schema.field("longclip_score_cutoff").type == pa.float64()
    rejected = rejected_table.to_pylist()
    assert sorted(row["id"] for row in kept + rejected) == list(range(len(names) + 1)), "each row once"
    assert len(kept) == 3, "the top half of 6 scored rows"
    (cutoff,) = {row["longclip_score_cutoff"] for row in rejected}
    assert min(row["longclip_score"] for row in kept) == cutoff
    assert all(row["longclip_score"] < cutoff for row in rejected)
    assert [row["longclip_score_reason"] for row in rejected if row["id"] == len(names)] == ["image_not_found"]
    assert "Filter: 3 kept, 4 rejected" in done.stderr


def _values_python_lacks(good_images) -> pa.Table:
    """Valid Parquet values that Python's datetime, date and json cannot hold as they are (issue 20.5)."""
    ns = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
    return pa.table(
        {
            "id": [0, 1],
            "image_path": [str(good_images["rgb.png"]), str(good_images["grey.png"])],
            "text": ["a red square", "a grey square"],
            "taken": pa.array([ns, None], pa.timestamp("ns")),
            "taken_paris": pa.array([ns, 0], pa.timestamp("ns", "Europe/Paris")),
            "taken_ms": pa.array([1_714_566_600_000, None], pa.timestamp("ms")),
            "far_second": pa.array([253_402_300_800, -62_135_596_801], pa.timestamp("s")),  # Parquet keeps it in ms
            "far_day": pa.array([2_932_897, 0], pa.date32()),
            "uuid": pa.array([bytes(range(16)), None], pa.uuid()),
            "wait": pa.array([1_500_000_001, -1], pa.duration("ns")),
            "clock": pa.array([1, 86_399_999_999_999], pa.time64("ns")),
            "stamps": pa.array([[ns, None], []], pa.list_(pa.timestamp("ns"))),
        }
    )


VALUES_AS_JSON = [
    {
        "taken": "2023-11-14T22:13:20.123456789",
        "taken_paris": "2023-11-14T23:13:20.123456789+01:00",
        "taken_ms": "2024-05-01T12:30:00.000",
        "far_second": "+010000-01-01T00:00:00.000",
        "far_day": "+010000-01-01",
        "uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f",
        "wait": 1.500000001,
        "clock": "00:00:00.000000001",
        "stamps": ["2023-11-14T22:13:20.123456789", None],
    },
    {
        "taken": None,
        "taken_paris": "1970-01-01T01:00:00.000000000+01:00",
        "taken_ms": None,
        "far_second": "0000-12-31T23:59:59.000",
        "far_day": "1970-01-01",
        "uuid": None,
        "wait": -1e-09,
        "clock": "23:59:59.999999999",
        "stamps": [],
    },
]


@pytest.mark.slow
@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_parquet_values_python_cannot_hold_are_carried_as_they_are(
    tmp_path, longclip_checkpoint, good_images, output_format
):
    """Nanosecond timestamps, dates past 9999 and extension types used to stop the job (exit 1, nothing
    written), the uuid one only when writing JSONL, after all the scoring."""
    pq.write_table(_values_python_lacks(good_images), tmp_path / "in.parquet")
    table = pq.read_table(tmp_path / "in.parquet")  # as Parquet keeps it
    done = run_job(
        "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out" / "scored"),
        "--output_format", output_format, "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done: 2 records read, 2 scored" in done.stderr
    if output_format == "jsonl":
        lines = [json.loads(line) for path in (tmp_path / "out").glob("scored-*.jsonl") for line in path.open()]
        rows = sorted(lines, key=lambda line: line["id"])
        assert [{key: row[key] for key in VALUES_AS_JSON[0]} for row in rows] == VALUES_AS_JSON
        return
    out = _read_output(tmp_path / "out")
    out = out.take(pa.compute.sort_indices(out, [("id", "ascending")]))
    assert out.schema.names[: len(table.schema)] == table.schema.names
    for column in table.schema:
        assert out.schema.field(column.name).type == column.type, column.name
        assert out.column(column.name).combine_chunks().equals(table.column(column.name).combine_chunks()), column.name


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not parquet", "footer zeroed"])
@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_a_file_that_is_not_parquet_stops_the_job_before_it_starts_whatever_the_output(
    tmp_path, longclip_checkpoint, good_images, output_format, damage
):
    """It used to fail before the start with Parquet output (exit 2) but at run time with JSONL (exit 1); a
    zeroed footer's error (Arrow's message ends in a newline) broke the one-line error in two."""
    pq.write_table(pa.table({"image_path": [str(good_images["rgb.png"])], "text": ["a"]}), tmp_path / "a.parquet")
    if damage == "not parquet":
        (tmp_path / "b.parquet").write_bytes(b"PAR1 not Parquet at all PAR1")
    else:
        data = (tmp_path / "a.parquet").read_bytes()
        (tmp_path / "b.parquet").write_bytes(data[:300] + bytes(200) + b"PAR1")
    done = run_job(
        "--input", str(tmp_path / "*.parquet"), "--output", str(tmp_path / "out" / "scored"),
        "--output_format", output_format, "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "--input:" in line and "b.parquet" in line and "not a readable Parquet file" in line, line
    assert line.endswith("replace or remove it"), done.stderr[-3000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_jsonl_to_parquet_gives_typed_columns_for_kept_and_rejected_rows(tmp_path, longclip_checkpoint, good_images):
    """The user's fields become typed columns (issue 21.3), widened where rows disagree, JSON text only where
    they share no type; kept and rejected rows have the same columns."""
    names = ["rgb.jpg", "grey.png", "cmyk.jpg", "rgb.png", "palette.gif"]
    records = [
        {
            "id": i,
            "url": f"https://example.com/{name}",
            "image_path": str(good_images[name]),
            "text": CAPTIONS[sorted(CAPTIONS)[i]],
            "meta": {"width": 640 + i, "source": {"site": "example.com", "tags": ["a", "b"][: i % 3]}},
            "similarity": 0.25 if i % 2 else 1,  # int and float: double
            "note": None if i < 3 else "late",  # null and string: string
            "extra": [1, "two"] if i == 0 else {"k": i},  # no shared type: JSON text
        }
        for i, name in enumerate(names)
    ]
    records.append({"id": 5, "image_path": str(tmp_path / "missing.png"), "text": "gone", "only_here": [[1.5]]})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    done = run_job(
        "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored"),
        "--output_format", "parquet", "--keep_top_fraction", "0.5", "--model", str(longclip_checkpoint),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept = _read_output(tmp_path / "out")
    rejected = pa.concat_tables(pq.read_table(p) for p in sorted((tmp_path / "out").glob("scored.rejected-*.parquet")))
    source = pa.struct([("site", pa.string()), ("tags", pa.list_(pa.string()))])
    expected = [
        ("image_path", pa.string()),
        ("text", pa.string()),
        ("id", pa.int64()),
        ("url", pa.string()),
        ("only_here", pa.list_(pa.list_(pa.float64()))),  # 4th in its record: by the earliest position
        ("meta", pa.struct([("width", pa.int64()), ("source", source)])),
        ("similarity", pa.float64()),
        ("note", pa.string()),
        ("extra", pa.string()),
    ] + SCORE_COLUMNS[:4]  # fmt: skip
    assert [(f.name, f.type) for f in kept.schema] == expected
    assert [(f.name, f.type) for f in rejected.schema] == expected + [("longclip_score_cutoff", pa.float64())]
    rows = sorted(kept.to_pylist() + rejected.to_pylist(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(6)), "every record once"
    for row, record in zip(rows, records, strict=True):
        for key, value in record.items():
            if key == "extra":
                assert json.loads(row[key]) == value
            elif key != "meta":
                assert row[key] == value, key
        assert row.get("meta") == ({**record["meta"], "source": record["meta"]["source"]} if "meta" in record else None)
        assert isinstance(row["similarity"], float) or row["similarity"] is None
    assert rows[5]["longclip_score_reason"] == "image_not_found" and rows[5]["url"] is None


@pytest.mark.slow
@settings(max_examples=3)
@given(st.data())
def test_fuzz_any_parquet_columns_through_the_job(tmp_path_factory, longclip_checkpoint, good_images, data):
    """Columns of any type Parquet holds, read by the job: never a crash, every row once; Parquet output gives
    back the same types and values, JSONL output the values' JSON text."""
    kinds = data.draw(st.lists(types(parquet=True), min_size=6, max_size=12))
    size = data.draw(st.integers(1, 6))
    columns = {f"c{i}": data.draw(arrays(kind, size, parquet=True)) for i, kind in enumerate(kinds)}
    folder = tmp_path_factory.mktemp("fuzz")
    own = {"id": list(range(size)), "image_path": [str(good_images["rgb.png"])] * size, "text": ["a red square"] * size}
    pq.write_table(pa.table({**own, **columns}), folder / "in.parquet", row_group_size=4)
    table = pq.read_table(folder / "in.parquet")  # as Parquet gives it back
    for output_format in ("jsonl", "parquet"):
        done = run_job(
            "--input", str(folder / "in.parquet"), "--output", str(folder / output_format / "scored"),
            "--output_format", output_format, "--model", str(longclip_checkpoint),
        )  # fmt: skip
        assert done.returncode == 0, (kinds, done.stderr[-3000:])
        assert f"Done: {size} records read, {size} scored" in done.stderr
        if output_format == "parquet":
            out = _read_output(folder / output_format)
            out = out.take(pa.compute.sort_indices(out, [("id", "ascending")]))
            for name in columns:
                original, back = table.column(name).combine_chunks(), out.column(name).combine_chunks()
                assert back.type == original.type, name
                assert back.equals(original) or to_json(column_values(back)) == to_json(column_values(original))
        else:
            lines = [json.loads(line) for path in (folder / "jsonl").glob("scored-*.jsonl") for line in path.open()]
            rows = sorted(lines, key=lambda line: line["id"])
            assert [row["id"] for row in rows] == list(range(size)), "every row once"
            for name in columns:
                expected = json.loads(to_json(column_values(table.column(name))))
                assert [row[name] for row in rows] == expected, name
