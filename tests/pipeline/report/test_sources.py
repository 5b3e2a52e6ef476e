"""Thumbnails read from where the job read each image: a shard's member, a Parquet input row, a path under
--image_root, a URL allowed by --allowed_image_prefixes; what cannot be shown is said in words."""

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.report import thumbnails
from pipeline.report.read import ImageCell
from pipeline.report.shown import Origin, ShownRow
from pipeline.report.sources import read_shard_images
from transforms import ImageSettings
from transforms.testing.datasets import img2dataset_sample, jpeg, serve_folder, write_shard


def _row(image, origin=None) -> ShownRow:
    return ShownRow(0.5, "a caption", None, image, origin)


def _shown(rows, settings=None, image_key="image"):
    return thumbnails.thumbnails(rows, settings or ImageSettings(), image_key)


def _pixels(uri: str) -> tuple[int, int]:
    import base64

    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def test_shard_members_by_name_or_by_key_in_one_pass(tmp_path, good_images):
    members = []
    for number, name in enumerate(["rgb.jpg", "grey.png", "large_1800x1200.jpg"]):
        members += img2dataset_sample(f"part/{number:05d}", jpeg(good_images[name]), f"caption {number}")
    shard = tmp_path / "00000.tar"
    write_shard(shard, members)
    wanted = {("part/00000", "part/00000.jpg"), ("part/00002", None), ("part/00009", None), ("part/00001", "x.jpg")}
    found = read_shard_images(str(shard), wanted, ImageSettings())
    assert found[("part/00000", "part/00000.jpg")] == members[0][1]
    assert found[("part/00002", None)] == jpeg(good_images["large_1800x1200.jpg"])
    assert str(found[("part/00009", None)]).endswith("has no image of sample part/00009")
    assert str(found[("part/00001", "x.jpg")]).endswith("has no member x.jpg")

    origin = Origin("shard", str(shard), "part/00002")
    made = _shown([_row("part/00002.jpg", origin), _row(None, Origin("shard", str(tmp_path / "gone.tar"), "k"))])
    assert made[0].data_uri and _pixels(made[0].data_uri) == (160, 107)
    assert made[1].note == "not found" and made[1].error == f"Not found: shard {tmp_path / 'gone.tar'} does not exist"


def test_a_damaged_or_huge_shard_is_refused_in_words(tmp_path, good_images):
    shard = tmp_path / "bad.tar"
    shard.write_bytes(b"\x00" * 100 + b"not a tar header" * 100)
    (made,) = _shown([_row("000.jpg", Origin("shard", str(shard), "000"))])
    assert made.note == "cannot be read" and "cannot be read" in made.error
    fine = tmp_path / "ok.tar"
    write_shard(fine, img2dataset_sample("000", jpeg(good_images["rgb.jpg"]), "x"))
    (made,) = _shown([_row("000.jpg", Origin("shard", str(fine), "000"))], ImageSettings(max_image_bytes=100))
    assert made.note == "over the size limit"
    allowed = ImageSettings(allowed_image_prefixes=str(tmp_path / "elsewhere"))
    (made,) = _shown([_row("000.jpg", Origin("shard", str(fine), "000"))], allowed)
    assert made.note == "not allowed" and "outside allowed_image_prefixes" in made.error


def test_parquet_rows_lead_back_to_inline_bytes(tmp_path, good_images):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    values = [{"bytes": good_images[name].read_bytes(), "path": name} for name in ("rgb.png", "grey.png", "rgba.png")]
    values.append({"bytes": None, "path": str(good_images["la.png"])})
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": pa.array(values, image), "raw": [v["bytes"] for v in values]}), path)
    rows = [
        _row("grey.png", Origin("parquet", str(path), 1)),  # the output kept the struct's path only
        _row(None, Origin("parquet", str(path), 3)),  # no bytes: the struct's path is read
        _row(None, Origin("parquet", str(path), 7)),
        _row(ImageCell(str(path), 2, "raw")),  # bytes left in a scored file
        _row(str(good_images["rgb.jpg"]), Origin("parquet", str(tmp_path / "moved.parquet"), 0)),
    ]
    made = _shown(rows)
    assert [bool(t.data_uri) for t in made] == [True, True, False, True, True], [t.error for t in made]
    assert made[2].note == "not found" and made[2].error.endswith("has no row 7 (it has 4)")


def test_relative_paths_without_or_outside_the_image_root_say_so(tmp_path, good_images):
    folder = good_images["rgb.png"].parent
    rows = [_row("rgb.png"), _row("no_such.png")]
    without = _shown(rows)
    assert [t.unresolved for t in without] == [True, True]
    assert without[0].note == "no --image_root given"
    assert f"rgb.png is a relative path and no file in the working directory ({os.getcwd()})" in without[0].error
    under = _shown(rows, ImageSettings(image_root=str(folder)))
    assert under[0].data_uri and not under[0].unresolved
    assert under[1].unresolved and under[1].error == f"Image not found: no_such.png is not under --image_root={folder}"


def test_urls_are_read_as_the_job_reads_them(good_images):
    with serve_folder(good_images["rgb.jpg"].parent) as base:
        rows = [_row(f"{base}/rgb.jpg"), _row(f"{base}/missing.jpg")]
        made = _shown(rows)
        refused = _shown(rows[:1], ImageSettings(allowed_image_prefixes="https://cdn.example.com/"))
    assert made[0].data_uri and made[1].note == "not found"
    assert refused[0].note == "not allowed" and not refused[0].error.startswith("image_")
