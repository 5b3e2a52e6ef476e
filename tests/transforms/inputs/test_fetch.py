"""Reading image bytes: local files and `file://`, Beam FileSystems and http(s), each read under one deadline,
transient failures retried within it and permanent ones not, against real servers and files."""

import os
import time
import uuid

import pytest

from tests.support.flaky_filesystem import SERVER_BODY, FlakyFileSystem
from tests.support.http_servers import SECRET_BODY
from transforms import reasons
from transforms.inputs import retries
from transforms.inputs.fetch import read_image_bytes
from transforms.inputs.locations import AllowedPrefixes
from transforms.reasons import InputError
from transforms.testing.emulators import free_port

DEADLINE = 1.5


def _failure(location: str, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        read_image_bytes(location, **kwargs)
    assert SECRET_BODY not in str(caught.value) and SERVER_BODY not in str(caught.value)
    return caught.value


def test_local_files_and_file_uris_read_the_same_bytes(good_images):
    path = good_images["rgb.png"]
    assert read_image_bytes(str(path)) == read_image_bytes(f"file://{path}") == path.read_bytes()


@pytest.mark.parametrize("form", ["{}", "{}/", "file://{}"])
def test_a_folder_is_a_clear_reason(tmp_path, form):
    failure = _failure(form.format(tmp_path))
    assert failure.reason == reasons.IMAGE_UNREADABLE and failure.message.endswith("is a folder, not an image file")


@pytest.mark.parametrize(
    "make_path, text",
    [
        (lambda tmp: tmp / "missing.png", "does not exist"),
        (lambda tmp: f"file://{tmp}/missing.png", "does not exist"),
        (lambda tmp: tmp / "file.png" / "inside.png", "does not exist (a folder in it is a file)"),
    ],
)
def test_missing_files_are_not_found(tmp_path, make_path, text):
    (tmp_path / "file.png").write_bytes(b"x")
    failure = _failure(str(make_path(tmp_path)))
    assert failure.reason == reasons.IMAGE_NOT_FOUND and failure.message.endswith(text)


def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert _failure(str(fifo)).reason == reasons.IMAGE_UNREADABLE
    assert "not a regular file" in _failure("/dev/zero").message
    assert time.monotonic() - started < 5


def test_symlinks_are_followed_when_nothing_is_confined(tmp_path, good_images):
    (tmp_path / "link.png").symlink_to(good_images["rgb.png"])
    assert read_image_bytes(str(tmp_path / "link.png")) == good_images["rgb.png"].read_bytes()


def test_an_allowed_folder_confines_reads_without_telling_what_exists(tmp_path, good_images):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "inside.png").write_bytes(good_images["rgb.png"].read_bytes())
    (allowed / "escape.png").symlink_to(good_images["rgb.png"])
    prefixes = AllowedPrefixes(str(allowed))
    assert read_image_bytes(str(allowed / "inside.png"), allowed=prefixes) == good_images["rgb.png"].read_bytes()
    assert read_image_bytes(f"file://{allowed}/inside.png", allowed=prefixes) == good_images["rgb.png"].read_bytes()
    outside = [
        str(allowed / "escape.png"),
        f"{allowed}/../allowed/../{good_images['rgb.png'].relative_to('/')}",
        str(good_images["rgb.png"]),
        f"file://{good_images['rgb.png']}",
        "/no/such/file.png",
        "gs://bucket/x.png",
        "https://example.com/x.png",
    ]
    for location in outside:
        assert _failure(location, allowed=prefixes).reason == reasons.IMAGE_NOT_ALLOWED, location


def test_a_scheme_no_file_system_reads_says_so():
    failure = _failure("nosuchscheme://bucket/x.png")
    assert failure.reason == reasons.IMAGE_UNREADABLE and "no Beam FileSystem reads this scheme" in failure.message


def test_transient_file_system_errors_are_retried(tmp_path, good_images):
    path = good_images["rgb.png"]
    for kind, failures in (("reset", 1), ("503", 2)):
        uri = f"flaky://{failures}/{kind}{path}"
        assert read_image_bytes(uri, timeout_secs=10) == path.read_bytes()
        assert FlakyFileSystem.opens[uri] == failures + 1


def test_file_system_errors_that_last_name_the_attempts_and_never_quote_the_server(good_images):
    path = good_images["rgb.png"]
    unavailable = _failure(f"flaky://99/503{path}", timeout_secs=60)
    assert unavailable.reason == reasons.IMAGE_UNAVAILABLE
    assert f"ServiceUnavailable (HTTP 503), which may pass ({retries.MAX_ATTEMPTS} attempts in " in unavailable.message
    forbidden_uri = f"flaky://1/403{path}"
    forbidden = _failure(forbidden_uri, timeout_secs=10)
    assert forbidden.reason == reasons.IMAGE_UNREADABLE and "Forbidden (HTTP 403)" in forbidden.message
    assert FlakyFileSystem.opens[forbidden_uri] == 1, "a permanent error is not retried"


def test_a_file_system_read_that_hangs_ends_at_the_deadline(good_images):
    started = time.monotonic()
    failure = _failure(f"flaky://1/stall{good_images['rgb.png']}", timeout_secs=DEADLINE)
    assert failure.reason == reasons.IMAGE_TIMEOUT
    assert DEADLINE <= time.monotonic() - started < DEADLINE + 1


@pytest.mark.parametrize("path", ["/stall-headers", "/trickle/rgb.png", "/hang"])
def test_one_deadline_covers_connect_headers_and_body(image_server, path):
    started = time.monotonic()
    failure = _failure(image_server.url + path, timeout_secs=DEADLINE)
    waited = time.monotonic() - started
    assert failure.reason == reasons.IMAGE_TIMEOUT
    assert failure.message.endswith(f"not read within the {DEADLINE:g} s deadline (1 attempt in {DEADLINE:.1f} s)")
    assert DEADLINE <= waited < DEADLINE + 1


def test_a_server_that_never_answers_ends_at_the_deadline(silent_server):
    started = time.monotonic()
    assert _failure(silent_server.url + "/a.png", timeout_secs=DEADLINE).reason == reasons.IMAGE_TIMEOUT
    assert time.monotonic() - started < DEADLINE + 1


@pytest.mark.parametrize("kind", ["500", "502", "503", "504", "429", "408", "reset"])
def test_transient_http_failures_are_retried(image_server, good_images, kind):
    path = f"/once/{kind}/{uuid.uuid4().hex}/rgb.png"
    assert read_image_bytes(image_server.url + path, timeout_secs=10) == good_images["rgb.png"].read_bytes()
    assert image_server.count(path) == 2


@pytest.mark.parametrize("status", [503, 429])
def test_lasting_http_failures_are_unavailable_with_the_attempt_count(image_server, status):
    path = f"/status/{status}?k={uuid.uuid4().hex}"
    failure = _failure(image_server.url + path, timeout_secs=30)
    assert failure.reason == reasons.IMAGE_UNAVAILABLE
    assert f"HTTP {status} ({retries.MAX_ATTEMPTS} attempts in " in failure.message
    assert image_server.count(path) == retries.MAX_ATTEMPTS


def test_retries_stop_at_the_deadline(image_server):
    path = f"/status/503?k={uuid.uuid4().hex}"
    started = time.monotonic()
    failure = _failure(image_server.url + path, timeout_secs=0.6)
    assert time.monotonic() - started < 1.5
    assert failure.reason in (reasons.IMAGE_UNAVAILABLE, reasons.IMAGE_TIMEOUT)
    assert 1 <= image_server.count(path) < retries.MAX_ATTEMPTS


def test_refused_connections_are_retried_then_unavailable():
    failure = _failure(f"http://127.0.0.1:{free_port()}/a.png", timeout_secs=30)
    assert failure.reason == reasons.IMAGE_UNAVAILABLE
    assert f"connection refused ({retries.MAX_ATTEMPTS} attempts in " in failure.message


def test_a_local_file_over_the_limit_is_refused_without_reading_it(tmp_path):
    """Its size was learnt by reading max_bytes + 1 of it: 64 MiB a file, per thread, to refuse it (the report's
    thumbnails of 24 large files peaked at +420 MB)."""
    import tracemalloc

    from transforms import InputError

    path = tmp_path / "big.png"
    path.write_bytes(os.urandom(3 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as refused:
            read_image_bytes(str(path), max_bytes=2 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.reason == reasons.IMAGE_TOO_LARGE and f"over the {2 << 20}-byte limit" in str(refused.value)
    assert peak < 256 << 10, peak
    assert read_image_bytes(str(path), max_bytes=3 << 20) == path.read_bytes()  # at the limit: read
