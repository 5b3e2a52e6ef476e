"""Parquet in and out: LAION-style metadata (`url`, `caption`, images on an HTTP server) and Hugging Face
datasets (an image struct of bytes and path), scored end to end, one output row per input row, exact."""

import datetime
import decimal
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import run, summarize
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
    """Parquet input, JSONL output: timestamps, dates, decimals and other binary columns become JSON text."""
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
    assert (first["taken"], first["day"], first["price"]) == ("2024-05-01T12:30:00", "2024-05-01", "1.50")
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
