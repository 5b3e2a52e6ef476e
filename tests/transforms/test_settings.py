"""Image settings that cannot work are refused when made, naming the argument and what to do."""

import pytest
from PIL import Image

from transforms import ImageSettings, InvalidSetting
from transforms.settings import PILLOW_PIXEL_LIMIT


def test_the_pixel_cap_is_pillows_own():
    assert PILLOW_PIXEL_LIMIT == 2 * Image.MAX_IMAGE_PIXELS
    assert ImageSettings(max_image_pixels=PILLOW_PIXEL_LIMIT).max_image_pixels == PILLOW_PIXEL_LIMIT


def test_a_pixel_limit_above_pillows_is_refused_not_lowered():
    with pytest.raises(InvalidSetting) as caught:
        ImageSettings(max_image_pixels=PILLOW_PIXEL_LIMIT + 1)
    assert caught.value.name == "max_image_pixels"
    assert f"must be at most {PILLOW_PIXEL_LIMIT}" in caught.value.message and "Pillow" in caught.value.message


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(max_image_bytes=-1), "max_image_bytes: must be at least 1, got -1"),
        (dict(max_image_bytes=0), "max_image_bytes: must be at least 1, got 0"),
        (dict(max_image_pixels=0), "max_image_pixels: must be at least 1, got 0"),
        (dict(max_image_pixels=-5), "max_image_pixels: must be at least 1, got -5"),
        (dict(http_timeout_secs=0), "http_timeout_secs: must be more than 0, got 0"),
        (dict(http_timeout_secs=-1.5), "http_timeout_secs: must be more than 0, got -1.5"),
        (dict(http_timeout_secs=float("nan")), "http_timeout_secs: must be a number"),
        (dict(prepare_threads=0), "prepare_threads: must be at least 1, got 0"),
    ],
)
def test_zero_and_negative_limits_are_refused(values, message):
    with pytest.raises(InvalidSetting) as caught:
        ImageSettings(**values)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "prefixes, message",
    [
        (" , ", "is empty"),
        ("1http://host/", "does not start with a scheme"),
        ("https:///images", "has no host"),
        ("https://user:pw@host/images", "without user, query or #"),
        ("https://host/images?sig=1", "without user, query or #"),
    ],
)
def test_malformed_allowed_prefixes_are_refused(prefixes, message):
    with pytest.raises(InvalidSetting) as caught:
        ImageSettings(allowed_image_prefixes=prefixes)
    assert caught.value.name == "allowed_image_prefixes" and message in caught.value.message


def test_allowed_prefixes_take_folders_schemes_and_url_prefixes():
    text = "/data/images, relative/dir, file:///srv/x, gs://, gs://bucket/path, https://cdn.example.com:8443/i"
    assert ImageSettings(allowed_image_prefixes=text).allowed_image_prefixes == text
