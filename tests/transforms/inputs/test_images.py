"""Every way a record's image or text can be bad gives a reason code; good images of every kind decode."""

import io
import itertools
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.fuzz import mutated_image
from transforms import ImageSettings, reasons
from transforms.inputs.images import ENABLED_FORMATS, decode_image
from transforms.inputs.prepare import PairPreparer
from transforms.reasons import InputError
from transforms.settings import PILLOW_PIXEL_LIMIT


@pytest.fixture(scope="module")
def preparer():
    return PairPreparer(image_resolution=32, context_length=248)


def _reason(preparer, record) -> str:
    with pytest.raises(InputError) as caught:
        preparer.tokenize_text(record)
        preparer.load_image(record)
    return caught.value.reason


@pytest.mark.parametrize(
    "record, code",
    [
        ({"image_path": "x.png"}, reasons.TEXT_MISSING),
        ({"image_path": "x.png", "text": None}, reasons.TEXT_MISSING),
        ({"image_path": "x.png", "text": float("nan")}, reasons.TEXT_MISSING),
        ({"image_path": "x.png", "text": 42}, reasons.TEXT_WRONG_TYPE),
        ({"image_path": "x.png", "text": ["a", "list"]}, reasons.TEXT_WRONG_TYPE),
        ({"image_path": "x.png", "text": ""}, reasons.TEXT_EMPTY),
        ({"image_path": "x.png", "text": " \t\n\u3000"}, reasons.TEXT_EMPTY),
        ({"text": "a cat"}, reasons.IMAGE_MISSING),
        ({"image_path": None, "text": "a cat"}, reasons.IMAGE_MISSING),
        ({"image_path": "  ", "text": "a cat"}, reasons.IMAGE_MISSING),
        ({"image_path": 7, "text": "a cat"}, reasons.IMAGE_WRONG_TYPE),
        ({"image_path": "/no/such/file.jpg", "text": "a cat"}, reasons.IMAGE_NOT_FOUND),
        ({"image_path": b"", "text": "a cat"}, reasons.IMAGE_UNDECODABLE),
        ({"image_path": b"GIF89a broken", "text": "a cat"}, reasons.IMAGE_UNDECODABLE),
        ({"image_path": {"bytes": None, "path": None}, "text": "a cat"}, reasons.IMAGE_MISSING),
        ({"image_path": {"bytes": "not bytes", "path": "x.png"}, "text": "a cat"}, reasons.IMAGE_WRONG_TYPE),
        ({"image_path": {"bytes": None, "path": "/no/such/file.jpg"}, "text": "a cat"}, reasons.IMAGE_NOT_FOUND),
        ({"image_path": {"size": 3}, "text": "a cat"}, reasons.IMAGE_WRONG_TYPE),
    ],
)
def test_bad_fields(preparer, record, code):
    assert _reason(preparer, record) == code


@pytest.mark.parametrize(
    "name, code",
    [
        ("corrupt.jpg", reasons.IMAGE_UNDECODABLE),
        ("truncated.jpg", reasons.IMAGE_UNDECODABLE),
        ("empty.png", reasons.IMAGE_UNDECODABLE),
        ("text_as.png", reasons.IMAGE_UNDECODABLE),
        ("a_directory.jpg", reasons.IMAGE_UNREADABLE),
        ("bomb.png", reasons.IMAGE_TOO_LARGE),
    ],
)
def test_bad_files(preparer, bad_images, name, code):
    assert _reason(preparer, {"image_path": str(bad_images[name]), "text": "a cat"}) == code
    if bad_images[name].is_file():  # the same bytes inline, raw or in a Hugging Face image struct: the same reason
        data = bad_images[name].read_bytes()
        assert _reason(preparer, {"image_path": data, "text": "a cat"}) == code
        assert _reason(preparer, {"image_path": {"bytes": data, "path": name}, "text": "a cat"}) == code


def test_byte_and_pixel_limits(good_images):
    strict = PairPreparer(
        image_resolution=32,
        context_length=248,
        images=ImageSettings(max_image_bytes=1000, max_image_pixels=PILLOW_PIXEL_LIMIT),
    )
    assert (
        _reason(strict, {"image_path": str(good_images["large_1800x1200.jpg"]), "text": "x"}) == reasons.IMAGE_TOO_LARGE
    )
    inline = good_images["large_1800x1200.jpg"].read_bytes()
    assert _reason(strict, {"image_path": inline, "text": "x"}) == reasons.IMAGE_TOO_LARGE
    few_pixels = PairPreparer(image_resolution=32, context_length=248, images=ImageSettings(max_image_pixels=1000))
    assert _reason(few_pixels, {"image_path": str(good_images["rgb.jpg"]), "text": "x"}) == reasons.IMAGE_TOO_LARGE


def test_relative_paths_resolve_against_image_root(good_images):
    rooted = PairPreparer(
        image_resolution=32, context_length=248, images=ImageSettings(image_root=str(good_images["rgb.png"].parent))
    )
    assert rooted.load_image({"image_path": "rgb.png"}).pixels.shape == (3, 32, 32)


def test_http_image_equals_the_local_file(preparer, image_server, good_images):
    remote = preparer.load_image({"image_path": image_server.url + "/img/rgb.png"}).pixels
    assert torch.equal(remote, preparer.load_image({"image_path": str(good_images["rgb.png"])}).pixels)


@pytest.mark.parametrize(
    "name",
    [
        "rgb.png",
        "rgb.jpg",
        "rgba.png",
        "la.png",
        "palette.gif",
        "cmyk.jpg",
        "bilevel.png",
        "grey.png",
        "palette_transparent.png",
        "tiny_1x1.png",
        "wide_1000x12.png",
    ],
)
def test_every_mode_decodes_to_rgb_like_pillow_convert(good_images, name):
    decoded = decode_image(good_images[name].read_bytes())
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(good_images[name]).convert("RGB")))


def test_animation_uses_the_first_frame(good_images):
    decoded = decode_image(good_images["animated.gif"].read_bytes())
    with Image.open(good_images["animated.gif"]) as animation:
        assert animation.n_frames == 3
        first = animation.convert("RGB")
        animation.seek(2)
        last = animation.convert("RGB")
    assert np.array_equal(np.asarray(decoded), np.asarray(first))
    assert not np.array_equal(np.asarray(decoded), np.asarray(last))


def test_sixteen_bit_grey_converts_exactly_like_pillow(good_images):
    assert Image.open(good_images["grey16.png"]).mode == "I;16"
    decoded = np.asarray(decode_image(good_images["grey16.png"].read_bytes()))
    assert np.array_equal(decoded, np.asarray(Image.open(good_images["grey16.png"]).convert("RGB")))
    assert decoded.std() > 10, "8-bit values stored as 16 bits must keep their picture"


def test_extreme_aspect_ratio_is_too_large_not_out_of_memory(tmp_path):
    Image.new("L", (2, 100_000), 128).save(tmp_path / "sliver.png")  # resizes to 336 x 16.8 M pixels
    preparer = PairPreparer(image_resolution=336, context_length=248)
    assert _reason(preparer, {"image_path": str(tmp_path / "sliver.png"), "text": "x"}) == reasons.IMAGE_TOO_LARGE


def test_only_ordinary_formats_are_enabled():
    assert ENABLED_FORMATS == ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "BMP", "TIFF")


@pytest.mark.parametrize("kind", ["MPO", "AVIF"])
def test_camera_and_modern_web_formats_decode(tmp_path, kind):
    frames = [Image.fromarray(np.full((40, 30, 3), value, np.uint8)) for value in (60, 200)]
    path = tmp_path / f"picture.{kind.lower()}"
    frames[0].save(path, kind, save_all=True, append_images=frames[1:])
    assert Image.open(path).format == kind
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("kind", ["ICO", "PPM", "TGA", "PCX", "SGI", "IM", "DDS", "QOI", "JPEG2000", "PSD"])
def test_other_pillow_formats_are_not_decoded(tmp_path, kind):
    path = tmp_path / "picture"
    if kind == "PSD":  # Pillow reads PSD but cannot write it: a minimal 1x1 RGB Photoshop file
        path.write_bytes(b"8BPS\0\1" + b"\0" * 6 + b"\0\3\0\0\0\1\0\0\0\1\0\x08\0\3" + b"\0" * 12 + b"\0\0" + b"\1\2\3")
    else:
        Image.new("RGB", (16, 16), (10, 200, 30)).save(path, kind)
    with pytest.raises(InputError) as caught:
        decode_image(path.read_bytes())
    assert caught.value.reason == reasons.IMAGE_UNDECODABLE
    assert caught.value.message == f"not an image in an enabled format ({', '.join(ENABLED_FORMATS)})"


def test_an_eps_record_never_starts_ghostscript(tmp_path, monkeypatch):
    """A `gs` on the PATH that leaves a mark when run: Pillow runs it to render an EPS file."""
    from PIL import EpsImagePlugin

    fake_gs = tmp_path / "bin" / "gs"
    fake_gs.parent.mkdir()
    fake_gs.write_text(f"#!/bin/sh\ntouch {tmp_path / 'ghostscript-ran'}\necho 10.0\n")
    fake_gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_gs.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks for gs again, on this PATH
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n"
    with pytest.raises(InputError) as caught:
        decode_image(eps)
    assert caught.value.message.startswith("not an image in an enabled format")
    assert not (tmp_path / "ghostscript-ran").exists()


def test_messages_never_quote_the_files_content(tmp_path):
    header = b"P6\nSECRETTOKENXYZ 16\n255\n"  # Pillow's PPM reader would quote the first 11 bytes of the token
    with pytest.raises(InputError) as caught:
        decode_image(header + b"\0" * 768)
    assert "SECRET" not in str(caught.value)
    truncated = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(truncated, "PNG")
    with pytest.raises(InputError) as caught:
        decode_image(truncated.getvalue()[:-300])
    assert caught.value.reason == reasons.IMAGE_UNDECODABLE and caught.value.message.endswith("the file is truncated")


@settings(max_examples=250)
@given(data=st.data())
def test_mutated_images_of_every_format_decode_or_fail_with_a_reason(tmp_path, good_images, small_preparer, data):
    """Fuzzing: image files of every supported format with bytes damaged or cut decode, or fail with an image
    reason code, never with another exception (which would fail the worker's bundle)."""
    name, damaged = data.draw(mutated_image(good_images))
    path = tmp_path / f"{next(_FUZZ_NUMBERS)}-{name}"
    path.write_bytes(damaged)
    try:
        pixels = small_preparer.load_image({"image_path": str(path)}).pixels
    except InputError as error:
        assert error.reason in (reasons.IMAGE_UNDECODABLE, reasons.IMAGE_TOO_LARGE), error
        return
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.uint8


_FUZZ_NUMBERS = itertools.count()


@pytest.fixture(scope="module")
def small_preparer():
    """Damaged headers can claim large sizes: a low pixel limit keeps each example quick."""
    return PairPreparer(image_resolution=32, context_length=248, images=ImageSettings(max_image_pixels=4_000_000))
