"""Thumbnails are read as the transform reads images: bounded, and a failure is a reason, never an exception."""

import base64
import io

from PIL import Image

from pipeline.report.thumbnails import thumbnail
from transforms import ImageSettings


def _size(uri: str) -> tuple[int, int]:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def test_thumbnails_of_paths_relative_paths_and_bytes(good_images):
    folder = good_images["rgb.png"].parent
    large = thumbnail(str(good_images["large_1800x1200.jpg"]), ImageSettings())
    assert large.error is None and _size(large.data_uri) == (160, 107)
    relative = thumbnail("rgb.png", ImageSettings(image_root=str(folder)))
    assert relative.error is None and max(_size(relative.data_uri)) <= 160
    inline = thumbnail(good_images["grey.png"].read_bytes(), ImageSettings())
    assert inline.error is None


def test_an_unreadable_image_gives_its_reason(good_images, bad_images):
    images = (None, 42, "/no/such.png", str(bad_images["corrupt.jpg"]))
    results = [thumbnail(image, ImageSettings()) for image in images]
    results.append(thumbnail(str(good_images["large_1800x1200.jpg"]), ImageSettings(max_image_pixels=1000)))
    assert [r.data_uri for r in results] == [None] * 5
    notes = [r.note for r in results]
    assert notes == ["no image in the row", "not a path", "not found", "not a readable image", "over the size limit"]
    assert all(not r.error.startswith("image_") for r in results), "words, not the job's reason codes"
    assert results[2].error == "Not found: /no/such.png does not exist"
