"""One deadline per remote read, transient failures retried inside it, and a caller that never waits past it.

The prepare step hands records on in input order, so a read that hangs would hold back every record
behind it. Sockets can be closed under a stuck read, but a storage client's own retries or a DNS lookup
cannot be interrupted from outside: `run_before_deadline` therefore reads on a thread of its own and
stops waiting at the deadline, closing what the read registered; a read that still runs is left to
end by itself and its result is dropped. Standard library only.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Optional, TypeVar

from transforms import reasons
from transforms.reasons import InputError

Result = TypeVar("Result")

MAX_ATTEMPTS = 5
FIRST_BACKOFF_SECS = 0.2
MAX_BACKOFF_SECS = 5.0


class TransientError(Exception):
    """An attempt failed in a way that may pass (HTTP 429/5xx, a reset, a timeout): worth another one.

    `what` is for the message; `retry_after` is the server's Retry-After in seconds, if it gave one.
    """

    def __init__(self, what: str, *, retry_after: Optional[float] = None, timed_out: bool = False):
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after
        self.timed_out = timed_out


class Cancelled(Exception):
    """The deadline passed and the waiting side gave up; the reading side should just stop."""


class ReadAttempts:
    """One read's deadline and attempt count, shared by the thread that reads and the one that waits."""

    def __init__(self, timeout_secs: float, clock: Callable[[], float] = time.monotonic):
        self.timeout_secs = timeout_secs
        self._clock = clock
        self.started = clock()
        self.deadline = self.started + timeout_secs
        self.count = 0
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []

    def remaining(self) -> float:
        return self.deadline - self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.started

    def close_on_cancel(self, close: Callable[[], None]) -> None:
        """Registers what unblocks the read (e.g. shutting its socket); runs it now if already cancelled."""
        with self._lock:
            if not self.cancelled.is_set():
                self._closers.append(close)
                return
        close()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            closers, self._closers = self._closers, []
        for close in closers:
            try:
                close()
            except OSError:
                pass

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def summary(self) -> str:
        """E.g. "2 attempts in 1.3 s", for messages."""
        count = max(self.count, 1)
        return f"{count} attempt{'s' if count > 1 else ''} in {self.elapsed():.1f} s"


def backoff_secs(attempt: int, retry_after: Optional[float] = None) -> float:
    """Exponential backoff with jitter (half fixed, half random) after `attempt` failed; at least Retry-After."""
    ceiling = min(MAX_BACKOFF_SECS, FIRST_BACKOFF_SECS * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after) if retry_after is not None else delay


def with_retries(attempt: Callable[[], Result], attempts: ReadAttempts, what: str) -> Result:
    """Calls `attempt` until it succeeds, raises something other than `TransientError`, or the attempts or
    the deadline run out; then the last transient failure becomes `image_timeout` or `image_unavailable`."""
    while True:
        attempts.count += 1
        try:
            return attempt()
        except TransientError as failure:
            attempts.raise_if_cancelled()
            delay = backoff_secs(attempts.count, failure.retry_after)
            if attempts.count >= MAX_ATTEMPTS or delay >= attempts.remaining():
                code = reasons.IMAGE_TIMEOUT if failure.timed_out else reasons.IMAGE_UNAVAILABLE
                raise InputError(code, f"{what}: {failure.what} ({attempts.summary()})") from None
        if attempts.cancelled.wait(delay):
            raise Cancelled()


def run_before_deadline(read: Callable[[], Result], attempts: ReadAttempts, what: str) -> Result:
    """`read()`, on a thread of its own; raises `image_timeout` at the deadline whether or not it has returned."""
    outcome: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = read()
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="image-read", daemon=True).start()
    if not done.wait(max(attempts.remaining(), 0)):
        attempts.cancel()
        raise InputError(
            reasons.IMAGE_TIMEOUT,
            f"{what}: not read within the {attempts.timeout_secs:g} s deadline ({attempts.summary()})",
        )
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome.pop("result")
