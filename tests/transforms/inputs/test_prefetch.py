"""The prepare step's thread pool: input order kept, bounded in flight, errors surface at their item."""

import random
import threading
import time

import pytest

from transforms.inputs.prefetch import OrderedPrefetcher


class _Work:
    """Sleeps a random while (so threads finish out of order) and records how many run at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.rng = random.Random(0)

    def __call__(self, item: int) -> int:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            pause = self.rng.uniform(0, 0.004)
        time.sleep(pause)
        with self.lock:
            self.running -= 1
        if item == 13:
            raise KeyError(item)
        return item * item


def test_results_come_back_once_in_input_order_with_bounded_pending():
    work = _Work()
    prefetcher = OrderedPrefetcher(work, threads=4, max_pending=6)
    out = []
    for item in range(200):
        if item == 13:
            continue
        out.extend(prefetcher.submit(item, f"tag{item}"))
        assert len(prefetcher._pending) <= 6
    out.extend(prefetcher.drain())
    prefetcher.close()
    expected = [(f"tag{i}", i * i) for i in range(200) if i != 13]
    assert out == expected
    assert work.most_running == 4, "the work must really run on all threads at once"


def test_an_error_surfaces_at_its_item_and_discard_forgets_the_rest():
    prefetcher = OrderedPrefetcher(_Work(), threads=2, max_pending=100)
    out = [result for item in (11, 12, 13, 14) for result in prefetcher.submit(item, item)]
    with pytest.raises(KeyError):
        out.extend(prefetcher.drain())
    assert [tag for tag, _ in out] == [11, 12][: len(out)]
    prefetcher.discard()
    assert list(prefetcher.drain()) == []
    assert list(prefetcher.submit(3, "again")) + list(prefetcher.drain()) == [("again", 9)]
    prefetcher.close()
