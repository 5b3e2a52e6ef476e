"""One deadline per read: retries with backoff and jitter inside it, and no waiting past it."""

import socket
import threading
import time

import pytest

from transforms import reasons
from transforms.inputs import retries
from transforms.inputs.retries import ReadAttempts, TransientError, backoff_secs, run_before_deadline, with_retries
from transforms.reasons import InputError


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    first = [backoff_secs(1) for _ in range(200)]
    third = [backoff_secs(3) for _ in range(200)]
    ceiling = retries.FIRST_BACKOFF_SECS
    assert all(ceiling / 2 <= delay <= ceiling for delay in first)
    assert all(4 * ceiling / 2 <= delay <= 4 * ceiling for delay in third)
    assert len({round(delay, 6) for delay in first}) > 100, "jitter: delays must differ"
    assert max(backoff_secs(50) for _ in range(50)) <= retries.MAX_BACKOFF_SECS
    assert backoff_secs(1, retry_after=3) == 3


def test_transient_failures_are_retried_until_one_succeeds():
    calls = []

    def attempt():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise TransientError("HTTP 503")
        return b"image"

    attempts = ReadAttempts(10)
    assert with_retries(attempt, attempts, "GET x") == b"image"
    assert attempts.count == 3
    assert calls[1] - calls[0] >= retries.FIRST_BACKOFF_SECS / 2, "a backoff comes between attempts"


def test_attempts_run_out_with_the_count_in_the_message():
    attempts = ReadAttempts(60)
    with pytest.raises(InputError) as caught:
        with_retries(lambda: (_ for _ in ()).throw(TransientError("HTTP 500")), attempts, "GET x")
    assert caught.value.reason == reasons.IMAGE_UNAVAILABLE
    assert caught.value.message.startswith(f"GET x: HTTP 500 ({retries.MAX_ATTEMPTS} attempts in ")


def test_no_backoff_sleeps_past_the_deadline():
    attempts = ReadAttempts(0.5)
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        with_retries(lambda: (_ for _ in ()).throw(TransientError("x", retry_after=5)), attempts, "GET x")
    assert time.monotonic() - started < 0.5, "a Retry-After past the deadline ends the read at once"
    assert caught.value.reason == reasons.IMAGE_UNAVAILABLE and "(1 attempt in " in caught.value.message


def test_a_timed_out_last_attempt_is_a_timeout():
    with pytest.raises(InputError) as caught:
        with_retries(
            lambda: (_ for _ in ()).throw(TransientError("no answer", timed_out=True)), ReadAttempts(0.01), "x"
        )
    assert caught.value.reason == reasons.IMAGE_TIMEOUT


def test_permanent_failures_are_not_retried():
    attempts = ReadAttempts(10)
    with pytest.raises(InputError):
        with_retries(lambda: (_ for _ in ()).throw(InputError(reasons.IMAGE_NOT_FOUND, "404")), attempts, "x")
    assert attempts.count == 1


def test_the_caller_gets_a_timeout_at_the_deadline_while_the_read_is_still_blocked():
    """A read blocked in a real socket (a server that never answers) is unblocked by closing it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    ended = threading.Event()
    attempts = ReadAttempts(0.5)

    def blocked_read():
        client = socket.create_connection(server.getsockname())
        attempts.close_on_cancel(lambda: client.shutdown(socket.SHUT_RDWR))
        try:
            return client.recv(1)  # the server never sends
        finally:
            ended.set()

    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        run_before_deadline(blocked_read, attempts, "GET x")
    waited = time.monotonic() - started
    assert caught.value.reason == reasons.IMAGE_TIMEOUT
    assert caught.value.message == "GET x: not read within the 0.5 s deadline (1 attempt in 0.5 s)"
    assert 0.5 <= waited < 1.5
    assert ended.wait(2), "cancelling must unblock the reading thread"
    server.close()


def test_a_read_that_cannot_be_interrupted_is_abandoned_not_waited_for():
    release = threading.Event()
    attempts = ReadAttempts(0.3)
    started = time.monotonic()
    with pytest.raises(InputError):
        run_before_deadline(lambda: release.wait(30), attempts, "gs://b/x")
    assert time.monotonic() - started < 1.5
    assert attempts.cancelled.is_set()
    release.set()


def test_results_and_errors_come_back_from_the_reading_thread():
    assert run_before_deadline(lambda: b"bytes", ReadAttempts(5), "x") == b"bytes"
    with pytest.raises(InputError, match="image_not_found"):
        run_before_deadline(
            lambda: (_ for _ in ()).throw(InputError(reasons.IMAGE_NOT_FOUND, "gone")), ReadAttempts(5), "x"
        )
