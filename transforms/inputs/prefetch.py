"""Running per-record work on a bounded thread pool while results go on, in input order.

No Beam here. Fetching, decoding and resizing images is I/O and C code that releases the GIL, so
threads overlap it with whatever consumes the results (batched inference, in `ScoreLongCLIP`).
At most `max_pending` items are in flight, so memory stays bounded however long the input.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, Iterator, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
Tag = TypeVar("Tag")


class OrderedPrefetcher(Generic[Item, Result, Tag]):
    """Applies `work` to items on `threads` threads; hands back `(tag, result)` in submission order.

    Exceptions from `work` come out of the `submit`/`drain` call that reaches that item.
    """

    def __init__(self, work: Callable[[Item], Result], *, threads: int, max_pending: int):
        if threads < 1 or max_pending < 1:
            raise ValueError(f"need threads >= 1 and max_pending >= 1, got {threads} and {max_pending}")
        self._work = work
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prefetch")
        self._pending: deque[tuple[Tag, Future]] = deque()

    def submit(self, item: Item, tag: Tag) -> Iterator[tuple[Tag, Result]]:
        """Starts `item`; yields every finished head result, waiting only while too many are in flight."""
        self._pending.append((tag, self._pool.submit(self._work, item)))
        while self._pending and (len(self._pending) > self._max_pending or self._pending[0][1].done()):
            yield self._pop()

    def drain(self) -> Iterator[tuple[Tag, Result]]:
        """Yields all remaining results, waiting for each."""
        while self._pending:
            yield self._pop()

    def discard(self) -> None:
        """Forgets unfinished items, e.g. those of a bundle that failed and will be retried."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)

    def _pop(self) -> tuple[Tag, Result]:
        tag, future = self._pending.popleft()
        return tag, future.result()
