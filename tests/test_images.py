"""Every way a record's image or text can be bad gives a reason code; good images of every kind decode."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from transforms import ImageSettings
from transforms import reasons as errors
from transforms.inputs.images import decode_image, read_image_bytes
from transforms.inputs.prepare import PairPreparer
from transforms.reasons import InputError


@pytest.fixture(scope="module")
def preparer():
    return PairPreparer(image_resolution=32, context_length=248)


@pytest.fixture(scope="module")
def http_server(good_images):
    """A real HTTP server on loopback: images, a 404, a 500, a slow answer and oversized bodies."""
    png = good_images["rgb.png"].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/rgb.png":
                self._send(200, png)
            elif self.path == "/slow.png":
                time.sleep(3)
                self._send(200, png)
            elif self.path == "/drip.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                for byte in png[:40]:  # one byte every 0.1 s: each read is quick, the whole is not
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path == "/declared-huge.png":
                self.send_response(200)
                self.send_header("Content-Length", str(10**10))
                self.end_headers()
                self.wfile.write(png)
            elif self.path == "/undeclared-big.png":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"\0" * 50_000)
            elif self.path == "/error.png":
                self._send(500, b"boom")
            else:
                self._send(404, b"not found")

        def _send(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _reason(preparer, record) -> str:
    with pytest.raises(InputError) as caught:
        preparer.tokenize_text(record)
        preparer.load_image(record)
    return caught.value.code


@pytest.mark.parametrize(
    "record, code",
    [
        ({"image_path": "x.png"}, errors.TEXT_MISSING),
        ({"image_path": "x.png", "text": None}, errors.TEXT_MISSING),
        ({"image_path": "x.png", "text": float("nan")}, errors.TEXT_MISSING),
        ({"image_path": "x.png", "text": 42}, errors.TEXT_WRONG_TYPE),
        ({"image_path": "x.png", "text": ["a", "list"]}, errors.TEXT_WRONG_TYPE),
        ({"image_path": "x.png", "text": ""}, errors.TEXT_EMPTY),
        ({"image_path": "x.png", "text": " \t\n\u3000"}, errors.TEXT_EMPTY),
        ({"text": "a cat"}, errors.IMAGE_MISSING),
        ({"image_path": None, "text": "a cat"}, errors.IMAGE_MISSING),
        ({"image_path": "  ", "text": "a cat"}, errors.IMAGE_MISSING),
        ({"image_path": 7, "text": "a cat"}, errors.IMAGE_WRONG_TYPE),
        ({"image_path": "/no/such/file.jpg", "text": "a cat"}, errors.IMAGE_NOT_FOUND),
        ({"image_path": b"", "text": "a cat"}, errors.IMAGE_UNDECODABLE),
        ({"image_path": b"GIF89a broken", "text": "a cat"}, errors.IMAGE_UNDECODABLE),
        ({"image_path": {"bytes": None, "path": None}, "text": "a cat"}, errors.IMAGE_MISSING),
        ({"image_path": {"bytes": "not bytes", "path": "x.png"}, "text": "a cat"}, errors.IMAGE_WRONG_TYPE),
        ({"image_path": {"bytes": None, "path": "/no/such/file.jpg"}, "text": "a cat"}, errors.IMAGE_NOT_FOUND),
        ({"image_path": {"size": 3}, "text": "a cat"}, errors.IMAGE_WRONG_TYPE),
    ],
)
def test_bad_fields(preparer, record, code):
    assert _reason(preparer, record) == code


@pytest.mark.parametrize(
    "name, code",
    [
        ("corrupt.jpg", errors.IMAGE_UNDECODABLE),
        ("truncated.jpg", errors.IMAGE_UNDECODABLE),
        ("empty.png", errors.IMAGE_UNDECODABLE),
        ("text_as.png", errors.IMAGE_UNDECODABLE),
        ("a_directory.jpg", errors.IMAGE_UNREADABLE),
        ("bomb.png", errors.IMAGE_TOO_LARGE),
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
        image_resolution=32, context_length=248, images=ImageSettings(max_image_bytes=1000, max_image_pixels=10**9)
    )
    assert (
        _reason(strict, {"image_path": str(good_images["large_1800x1200.jpg"]), "text": "x"}) == errors.IMAGE_TOO_LARGE
    )
    inline = good_images["large_1800x1200.jpg"].read_bytes()
    assert _reason(strict, {"image_path": inline, "text": "x"}) == errors.IMAGE_TOO_LARGE
    few_pixels = PairPreparer(image_resolution=32, context_length=248, images=ImageSettings(max_image_pixels=1000))
    assert _reason(few_pixels, {"image_path": str(good_images["rgb.jpg"]), "text": "x"}) == errors.IMAGE_TOO_LARGE


def test_relative_paths_resolve_against_image_root(good_images):
    rooted = PairPreparer(
        image_resolution=32, context_length=248, images=ImageSettings(image_root=str(good_images["rgb.png"].parent))
    )
    assert rooted.load_image({"image_path": "rgb.png"}).pixels.shape == (3, 32, 32)


@pytest.mark.parametrize(
    "path, code",
    [
        ("/missing.png", errors.IMAGE_NOT_FOUND),
        ("/error.png", errors.IMAGE_UNREADABLE),
        ("/slow.png", errors.IMAGE_UNREADABLE),
        ("/drip.png", errors.IMAGE_UNREADABLE),
        ("/declared-huge.png", errors.IMAGE_TOO_LARGE),
        ("/undeclared-big.png", errors.IMAGE_TOO_LARGE),
    ],
)
def test_http_failures(http_server, path, code):
    preparer = PairPreparer(
        image_resolution=32, context_length=248, images=ImageSettings(http_timeout_secs=0.5, max_image_bytes=20_000)
    )
    started = time.monotonic()
    assert _reason(preparer, {"image_path": http_server + path, "text": "x"}) == code
    assert time.monotonic() - started < 2.5, "the timeout must bound a slow server"


def test_http_image_equals_the_local_file(preparer, http_server, good_images):
    remote = preparer.load_image({"image_path": http_server + "/rgb.png"}).pixels
    assert torch.equal(remote, preparer.load_image({"image_path": str(good_images["rgb.png"])}).pixels)


@pytest.mark.parametrize(
    "name",
    [
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


def test_fifo_and_devices_are_refused_without_blocking(preparer, tmp_path):
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert _reason(preparer, {"image_path": str(fifo), "text": "x"}) == errors.IMAGE_UNREADABLE
    assert _reason(preparer, {"image_path": "/dev/zero", "text": "x"}) == errors.IMAGE_UNREADABLE
    assert time.monotonic() - started < 5


def test_symlink_to_an_image_is_followed(preparer, tmp_path, good_images):
    (tmp_path / "link.png").symlink_to(good_images["rgb.png"])
    assert preparer.load_image({"image_path": str(tmp_path / "link.png")}).pixels.shape == (3, 32, 32)


def test_extreme_aspect_ratio_is_too_large_not_out_of_memory(tmp_path):
    Image.new("L", (2, 100_000), 128).save(tmp_path / "sliver.png")  # resizes to 336 x 16.8 M pixels
    preparer = PairPreparer(image_resolution=336, context_length=248)
    assert _reason(preparer, {"image_path": str(tmp_path / "sliver.png"), "text": "x"}) == errors.IMAGE_TOO_LARGE


def test_read_image_bytes_unknown_scheme_is_unreadable():
    with pytest.raises(InputError) as caught:
        read_image_bytes("nosuchscheme://bucket/x.png")
    assert caught.value.code == errors.IMAGE_UNREADABLE
