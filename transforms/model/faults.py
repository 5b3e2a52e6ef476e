"""Keeping one bad record or one oversized batch from failing the whole batch (no Beam here).

Beam fails the bundle when `run_inference` raises: a batch job dies after its retries, and a stream
retries the same batch forever. `FaultIsolator` instead retries a failing batch in halves, down to
single records; only a record that fails on its own is given up, as an `InferenceFailure`, and the
rest are scored. An out-of-memory error also lowers the batch size used for later batches.
"""

from __future__ import annotations

import gc
import logging
from typing import Callable, Generic, NamedTuple, Sequence, TypeVar, Union

Item = TypeVar("Item")
Result = TypeVar("Result")

_LOGGER = logging.getLogger(__name__)
_MESSAGE_CHARS = 300  # of the exception's text, enough to tell faults apart


class InferenceFailure(NamedTuple):
    """The inference of one record that failed even when run alone; `message` says why."""

    message: str


class FaultIsolator(Generic[Item, Result]):
    """Runs `infer` on batches; isolates failures to the records that cause them.

    A batch larger than `batch_size` runs in chunks of `batch_size`. A chunk that raises is split in
    two and each half run again, down to single records, so that n records with one bad among them
    cost about 2*log2(n) extra calls. After an out-of-memory error, `batch_size` drops to half the
    chunk that ran out, for this and every later batch.
    """

    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size

    def run(
        self, batch: Sequence[Item], infer: Callable[[Sequence[Item]], Sequence[Result]]
    ) -> list[Union[Result, InferenceFailure]]:
        """One result per item, in order: `infer`'s, or an `InferenceFailure` for an item that fails alone."""
        return self._run(batch, infer, top=True)

    def _run(self, items, infer, top: bool = False) -> list:
        results: list = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self.batch_size]  # batch_size may drop on the way
            try:
                results += infer(chunk)
            except Exception as exc:  # noqa: BLE001 - any fault of the model becomes a per-record failure
                results += self._on_failure(chunk, infer, exc, top)
            start += len(chunk)
        return results

    def _on_failure(self, chunk, infer, exc: Exception, top: bool) -> list:
        if is_out_of_memory(exc):
            free_memory()
            lower = max(1, len(chunk) // 2)
            if lower < self.batch_size:
                _LOGGER.warning(
                    "Out of memory on a batch of %d; using batches of at most %d from now on", len(chunk), lower
                )
                self.batch_size = lower
        if len(chunk) == 1:
            return [InferenceFailure(describe(exc))]
        if top:
            _LOGGER.warning("Inference failed on a batch of %d (%s); retrying it in halves", len(chunk), describe(exc))
        middle = len(chunk) // 2
        return self._run(chunk[:middle], infer) + self._run(chunk[middle:], infer)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's and the CPU allocator's out-of-memory errors (PyTorch raises them as RuntimeError)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def free_memory() -> None:
    """What an out-of-memory leaves behind: unreachable tensors, and CUDA's cached blocks."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort, never a new fault
        _LOGGER.debug("Could not empty the CUDA cache", exc_info=True)


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short: what a failed record's error field says."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
