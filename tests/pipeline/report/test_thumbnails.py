"""Thumbnails are read as the transform reads images: bounded, and a failure is a reason, never an exception."""

import base64
import io

from PIL import Image

from pipeline.report.thumbnails import thumbnail, thumbnails
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
    results = thumbnails([None, 42, "/no/such.png", str(bad_images["corrupt.jpg"])], ImageSettings())
    results.append(thumbnail(str(good_images["large_1800x1200.jpg"]), ImageSettings(max_image_pixels=1000)))
    assert [r.data_uri for r in results] == [None] * 5
    reasons = [r.error.split(":")[0] for r in results]
    assert reasons == ["image_missing", "image_wrong_type", "image_not_found", "image_undecodable", "image_too_large"]
