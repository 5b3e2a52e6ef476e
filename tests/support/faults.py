"""A real `LongCLIPModelHandler` whose model fails on purpose: on chosen captions, or on batches that are
too large (as a CUDA out-of-memory would), so tests can watch what the handler does about it.

The handler is pickled to the workers like any other, so what happened there is written to a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from transforms import BatchSettings, LongCLIPModelHandler, ModelSettings
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.model.scorer import LongCLIPScorer

POISON = "this caption makes the model fail"


class FaultInjectingScorer:
    """Wraps a real `LongCLIPScorer`: raises on a batch holding a poisoned caption or more than `oom_above`
    pairs; otherwise scores. Each call's batch size and outcome is appended to `calls_log` as a JSON line."""

    def __init__(self, scorer: LongCLIPScorer, poison: set, oom_above: Optional[int], calls_log: Optional[str]):
        self._scorer = scorer
        self.device = scorer.device
        self._poison = poison
        self._oom_above = oom_above
        self._calls_log = calls_log

    def score(self, images: torch.Tensor, token_ids: Sequence[Sequence[int]], *args, **kwargs) -> list[float]:
        if self._oom_above is not None and len(token_ids) > self._oom_above:
            self._log(len(token_ids), "oom")
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB for a batch of {len(token_ids)} (injected)"
            )
        if any(tuple(ids) in self._poison for ids in token_ids):
            self._log(len(token_ids), "fault")
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)\nsecond line")
        self._log(len(token_ids), "ok")
        return self._scorer.score(images, token_ids, *args, **kwargs)

    def _log(self, size: int, outcome: str) -> None:
        if self._calls_log:
            with open(self._calls_log, "a", encoding="utf-8") as log:
                log.write(json.dumps([size, outcome]) + "\n")


class FaultyHandler(LongCLIPModelHandler):
    """`LongCLIPModelHandler` as it is, over a `FaultInjectingScorer`."""

    def __init__(
        self,
        model: str,
        batching: Optional[BatchSettings] = None,
        *,
        poison_texts: Sequence[str] = (POISON,),
        oom_above: Optional[int] = None,
        calls_log: Optional[Path] = None,
    ):
        super().__init__(ModelSettings(model=model, device="cpu"), batching or BatchSettings())
        self._poison_texts = tuple(poison_texts)
        self._oom_above = oom_above
        self._calls_log = str(calls_log) if calls_log else None

    def load_model(self) -> FaultInjectingScorer:
        scorer = super().load_model()
        tokenizer = LongCLIPTokenizer(scorer.context_length)
        poison = {tokenizer(text).ids for text in self._poison_texts}
        return FaultInjectingScorer(scorer, poison, self._oom_above, self._calls_log)


def read_calls(calls_log: Path) -> list[tuple[int, str]]:
    """The `(batch size, outcome)` of every call the model got, in order."""
    if not calls_log.exists():
        return []
    return [tuple(json.loads(line)) for line in calls_log.read_text().splitlines()]
