"""FaultIsolator: a failing batch is retried in halves; only records that fail alone are given up."""

import pytest
import torch

from transforms.model.faults import FaultIsolator, InferenceFailure, describe, is_out_of_memory


class _Model:
    """Doubles numbers; raises on `bad` ones, and like a CUDA out-of-memory on batches over `fits`."""

    def __init__(self, bad=(), fits=None):
        self.bad = set(bad)
        self.fits = fits
        self.calls = []

    def __call__(self, batch):
        self.calls.append(list(batch))
        if self.fits is not None and len(batch) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.bad & set(batch):
            raise ValueError(f"cannot take {sorted(self.bad & set(batch))}\ndetails")
        return [2 * item for item in batch]


def test_a_healthy_batch_runs_once():
    model = _Model()
    assert FaultIsolator(8).run(list(range(8)), model) == [2 * i for i in range(8)]
    assert model.calls == [list(range(8))]


def test_one_bad_record_fails_alone_and_the_rest_is_scored():
    model = _Model(bad={5})
    results = FaultIsolator(16).run(list(range(16)), model)
    assert results[:5] + results[6:] == [2 * i for i in range(16) if i != 5]
    assert results[5] == InferenceFailure("ValueError: cannot take [5]")
    # 16 -> 8 + 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: the bad half is split again, the good halves run once.
    assert len(model.calls) == 1 + 2 * 4
    assert max(model.calls[1:], key=len) == list(range(8))


def test_every_record_failing_still_gives_one_result_each():
    model = _Model(bad=set(range(5)))
    results = FaultIsolator(8).run(list(range(5)), model)
    assert results == [InferenceFailure(f"ValueError: cannot take [{i}]") for i in range(5)]
    assert len(model.calls) == 2 * 5 - 1


def test_out_of_memory_lowers_the_batch_size_for_later_batches():
    model = _Model(fits=3)
    isolator = FaultIsolator(16)
    assert isolator.run(list(range(16)), model) == [2 * i for i in range(16)]
    assert isolator.batch_size == 2  # 16 -> 8 -> 4 ran out; half of 4
    model.calls.clear()
    assert isolator.run(list(range(6)), model) == [2 * i for i in range(6)]
    assert [len(call) for call in model.calls] == [2, 2, 2], "later batches run in chunks that fit"


def test_a_record_too_large_even_alone_fails_with_the_out_of_memory_message():
    model = _Model(fits=0)
    isolator = FaultIsolator(4)
    (result,) = isolator.run([7], model)
    assert result.message.startswith("OutOfMemoryError: CUDA out of memory")
    assert isolator.batch_size == 1


@pytest.mark.parametrize(
    "exc, expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: device-side assert triggered"), False),
        (ValueError("bad shape"), False),
    ],
)
def test_out_of_memory_is_recognised(exc, expected):
    assert is_out_of_memory(exc) is expected


def test_messages_are_one_short_line():
    assert describe(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert describe(KeyError()) == "KeyError"
    long = describe(RuntimeError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        FaultIsolator(0)
