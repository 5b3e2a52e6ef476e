"""Turning records into model inputs: an image read once however often it is listed, inline or not; text
checks, and how many images are decoded at once."""

import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from transforms import ImageSettings, reasons
from transforms.inputs import images as image_io
from transforms.inputs.prepare import PairPreparer
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.reasons import InputError


@pytest.fixture(scope="module")
def preparer():
    return PairPreparer(image_resolution=32, context_length=248)


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


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \t\n\u3000",
        "\x1c\x1d\x1e\x1f",  # whitespace to str.split(), not to LongCLIP's regex
        "\x00\x01\x07\x7f",  # control characters: no tokens after LongCLIP's cleaning
        "\u200b\u200c\u200d\u2060\ufeff",  # zero-width characters: LongCLIP would make 5 tokens of them
        "\u200e\u202e\u061c",  # direction marks
        "\u0301\u20dd",  # combining marks with nothing to mark
        "&nbsp;",  # a space once HTML entities are unescaped
        " \u200b \x00 ",
    ],
)
def test_captions_with_nothing_to_read_are_empty_whatever_their_characters(preparer, text):
    with pytest.raises(InputError) as caught:
        preparer.tokenize_text({"text": text})
    assert caught.value.reason == reasons.TEXT_EMPTY


@pytest.mark.parametrize("text", ["a\u200bcat", "\x00cat\x07", "\u202ecat", "<|endoftext|>", "\u00e9", "\U0001f642"])
def test_captions_with_something_visible_are_tokenized_as_longclip_does(preparer, text):
    assert preparer.tokenize_text({"text": text}) == LongCLIPTokenizer()(text)


def test_a_transient_failure_is_tried_again_by_the_next_record(image_server):
    preparer = PairPreparer(image_resolution=32, context_length=248, images=ImageSettings(http_timeout_secs=1))
    path = f"/once/429+5/{uuid.uuid4().hex}/rgb.png"  # Retry-After: 5 s, past the deadline: no retry
    record = {"image_path": image_server.url + path}
    with pytest.raises(InputError) as caught:
        preparer.load_image(record)
    assert caught.value.reason == reasons.IMAGE_UNAVAILABLE and "(1 attempt in " in caught.value.message
    assert preparer.load_image(record).pixels.shape == (3, 32, 32), "a transient failure is not remembered"
    assert image_server.count(path) == 2
    missing = f"/status/404?k={uuid.uuid4().hex}"
    for _ in range(2):
        with pytest.raises(InputError):
            preparer.load_image({"image_path": image_server.url + missing})
    assert image_server.count(missing) == 1, "a permanent one is"


def test_many_fetches_at_once_but_only_prepare_threads_decode(tmp_path, monkeypatch):
    """Counts the threads inside the (real) decoder at once, and which threads decode, while 8 threads ask for
    large images: memory a decoded image leaves behind stays with the thread that decoded it."""
    gradient = np.broadcast_to(np.arange(1600, dtype=np.uint16)[:, None, None] % 251, (1600, 1600, 3))
    for index in range(8):
        Image.fromarray((gradient + index).astype(np.uint8)).save(tmp_path / f"{index}.png", compress_level=1)
    preparer = PairPreparer(image_resolution=32, context_length=248, images=ImageSettings(prepare_threads=2))
    inside, most, decoding_threads, lock = [0], [0], set(), threading.Lock()
    decode = image_io.decode_image

    def counting_decode(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            decoding_threads.add(threading.get_ident())
        try:
            return decode(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(image_io, "decode_image", counting_decode)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: preparer.load_image({"image_path": str(tmp_path / f"{i}.png")}), range(8)))
    assert most[0] == 2 and len(decoding_threads) == 2
    preparer.close()


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
