"""Turning records into model inputs: an image read once however often it is listed, text checks."""

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
