"""`LongCLIPModelHandler`: Beam RunInference glue around `LongCLIPScorer`."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.inputs.prepare import PreparedPair
from transforms.model.device import parse_precision
from transforms.model.locate import DEFAULT_MODEL, resolve_checkpoint
from transforms.model.scorer import LongCLIPScorer


class LongCLIPModelHandler(ModelHandler[PreparedPair, PredictionResult, LongCLIPScorer]):
    """Loads LongCLIP once per worker process (or once per machine) and scores batches of `PreparedPair`.

    Args:
      model: Hugging Face Hub id, local file or folder, or a Beam FileSystems URI (`gs://...`).
      device: `"cpu"`, `"cuda"`, `"cuda:N"`, or None for CUDA when available.
      min_batch_size, max_batch_size, max_batch_duration_secs: passed to Beam's BatchElements;
        `max_batch_duration_secs` bounds how long a record waits for a batch in streaming.
      share_model_across_processes: load one model per machine and let all SDK processes use it
        (Beam's `large_model`); what you want with one GPU and many worker processes.
      model_copies: with sharing, how many copies per machine (e.g. one per GPU).
      precision: `"fp32"` (exact), or `"bf16"`/`"fp16"` weights for faster GPU runs.
      stored_weights: use a LongCLIP/OpenAI checkpoint's weights as stored, instead of rounded to fp16
        as LongCLIP's own loader does (the default, which gives the original evaluator's scores).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: Optional[str] = None,
        min_batch_size: int = 1,
        max_batch_size: int = 32,
        max_batch_duration_secs: Optional[float] = None,
        share_model_across_processes: bool = False,
        model_copies: Optional[int] = None,
        precision: str = "fp32",
        stored_weights: bool = False,
    ):
        if min_batch_size < 1 or max_batch_size < min_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, got {min_batch_size} and {max_batch_size}")
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=share_model_across_processes,
            model_copies=model_copies,
        )
        parse_precision(precision)  # a typo fails at pipeline construction, not on the workers
        self._model = model
        self._device = device
        self._precision = precision
        self._share = share_model_across_processes
        self._stored_weights = stored_weights

    def load_model(self) -> LongCLIPScorer:
        return LongCLIPScorer.from_checkpoint(
            resolve_checkpoint(self._model), self._device, self._precision, stored_weights=self._stored_weights
        )

    def run_inference(
        self,
        batch: Sequence[PreparedPair],
        model: LongCLIPScorer,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        # Page-locked batches copy to the GPU asynchronously. A shared model is a proxy to another
        # process, where the batch arrives unpickled (and unpinned) anyway.
        pin_memory = not self._share and model.device.type == "cuda"
        images, image_index, keys = _unique_images(batch, pin_memory)
        scores = model.score(images, [pair.token_ids for pair in batch], image_index, keys)
        return [PredictionResult(pair, score, self._model) for pair, score in zip(batch, scores, strict=True)]

    def get_num_bytes(self, batch: Sequence[PreparedPair]) -> int:
        return sum(pair.image.nbytes + 8 * len(pair.token_ids) for pair in batch)

    def get_metrics_namespace(self) -> str:
        return "BeamML_LongCLIP"

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        if inference_args:
            raise ValueError(f"LongCLIPModelHandler takes no inference_args, got {sorted(inference_args)}")


def _unique_images(
    batch: Sequence[PreparedPair], pin_memory: bool
) -> tuple[torch.Tensor, list[int], Optional[list[str]]]:
    """One stacked row per distinct image (by `image_key`), the row of each pair, and each row's key when
    every pair has one (the scorer then reuses features of images seen in recent batches)."""
    rows: dict[object, int] = {}
    unique: list[torch.Tensor] = []
    image_index = []
    for position, pair in enumerate(batch):
        identity = pair.image_key if pair.image_key is not None else ("pair", position)
        row = rows.setdefault(identity, len(rows))
        if row == len(unique):
            unique.append(pair.image)
        image_index.append(row)
    shape = (len(unique), *unique[0].shape)
    stacked = torch.empty(shape, dtype=unique[0].dtype, pin_memory=pin_memory)
    keys = list(rows) if all(pair.image_key is not None for pair in batch) else None
    return torch.stack(unique, out=stacked), image_index, keys
