"""Turning records into model inputs: an image read once however often it is listed, inline or not; text checks."""

import shutil

import torch

from transforms import PairPreparer


def test_same_bytes_share_a_digest_and_a_recent_location_is_loaded_once(tmp_path, good_images):
    copy = tmp_path / "copy_of_rgb.jpg"
    shutil.copy(good_images["rgb.jpg"], copy)
    preparer = PairPreparer(image_resolution=32, context_length=248)
    first = preparer.load_image({"image_path": str(good_images["rgb.jpg"])})
    again = preparer.load_image({"image_path": str(good_images["rgb.jpg"])})
    same_bytes = preparer.load_image({"image_path": str(copy)})
    other = preparer.load_image({"image_path": str(good_images["rgb.png"])})
    assert again.pixels is first.pixels, "a recent location must not be read and decoded again"
    assert same_bytes.digest == first.digest and same_bytes.pixels is not first.pixels
    assert torch.equal(same_bytes.pixels, first.pixels)
    assert other.digest != first.digest


def test_inline_bytes_and_image_structs_load_like_the_file_and_share_its_digest(good_images):
    preparer = PairPreparer(image_resolution=32, context_length=248)
    path = good_images["rgb.jpg"]
    from_file = preparer.load_image({"image_path": str(path)})
    data = path.read_bytes()
    inline = preparer.load_image({"image_path": data})
    struct = preparer.load_image({"image_path": {"bytes": data, "path": "elsewhere/rgb.jpg"}})
    by_path = preparer.load_image({"image_path": {"bytes": None, "path": str(good_images["rgb.png"])}})
    assert inline.digest == from_file.digest == struct.digest, "the same image must be known as the same"
    assert torch.equal(inline.pixels, from_file.pixels)
    assert struct.pixels is inline.pixels, "identical recent bytes must not be decoded again"
    assert torch.equal(by_path.pixels, preparer.load_image({"image_path": str(good_images["rgb.png"])}).pixels)


def test_outputs_keep_no_image_bytes():
    preparer = PairPreparer(image_resolution=32, context_length=248)
    record = {"image_path": b"\xff\xd8 bytes", "text": "a cat", "other": b"kept"}
    assert preparer.without_image_bytes(record) == {"image_path": None, "text": "a cat", "other": b"kept"}
    assert record["image_path"] == b"\xff\xd8 bytes", "the input record must not change"
    struct = {"image_path": {"bytes": b"...", "path": "cat.jpg"}, "text": "a cat"}
    assert preparer.without_image_bytes(struct) == {"image_path": "cat.jpg", "text": "a cat"}
    located = {"image_path": "cat.jpg", "text": "a cat"}
    assert preparer.without_image_bytes(located) is located
    assert preparer.without_image_bytes({"text": "no image"}) == {"text": "no image"}
