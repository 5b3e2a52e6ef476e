"""`LongCLIPModelHandler`: Beam RunInference glue around `LongCLIPScorer`."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.inputs.prepare import PreparedPair
from transforms.model.device import check_device
from transforms.model.locate import resolve_checkpoint
from transforms.model.scorer import LongCLIPScorer
from transforms.settings import DEFAULT_MODEL, BatchSettings, ModelSettings


class ScoreWithEmbeddings(NamedTuple):
    """One pair's inference when embeddings are asked for: the score, and the L2-normalised float32 image and
    text features it is `clamp((dot + 1) / 2, 0, 1)` of."""

    score: float
    image_embedding: list[float]
    text_embedding: list[float]


class LongCLIPModelHandler(ModelHandler[PreparedPair, PredictionResult, LongCLIPScorer]):
    """Loads LongCLIP once per worker process (or once per machine) and scores batches of `PreparedPair`.

    Args:
      model: a checkpoint (Hub id, local file or folder, `gs://` URI), or `ModelSettings` for the
        device, precision, weights and model sharing as well.
      batching: how Beam's BatchElements groups pairs (`BatchSettings`).

    Each `PredictionResult` carries the pair, its score and the checkpoint as `model_id`; with
    `RunInference(..., inference_args={"embeddings": True})` the inference is a `ScoreWithEmbeddings`
    instead, the score with the pair's L2-normalised image and text features. Beam's model
    refresh (`RunInference(model_metadata_pcoll=...)`) swaps the checkpoint through `update_model_path`;
    the new one must take the same image resolution and context length.
    """

    def __init__(
        self,
        model: Union[str, ModelSettings] = DEFAULT_MODEL,
        batching: BatchSettings = BatchSettings(),
    ):
        settings = model if isinstance(model, ModelSettings) else ModelSettings(model=model)
        check_device(settings.device)  # a typo fails at pipeline construction, not on the workers
        super().__init__(
            min_batch_size=batching.min_batch_size,
            max_batch_size=batching.max_batch_size,
            max_batch_duration_secs=batching.max_batch_duration_secs,
            large_model=settings.share_model_across_processes,
            model_copies=settings.model_copies,
        )
        self.settings = settings
        self.batching = batching

    def load_model(self) -> LongCLIPScorer:
        settings = self.settings
        return LongCLIPScorer.from_checkpoint(
            resolve_checkpoint(settings.model),
            settings.device,
            settings.precision,
            stored_weights=settings.stored_weights,
        )

    def update_model_path(self, model_path: Optional[str] = None) -> None:
        if model_path:
            self.settings = dataclasses.replace(self.settings, model=model_path)

    def run_inference(
        self,
        batch: Sequence[PreparedPair],
        model: LongCLIPScorer,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        # Page-locked batches copy to the GPU asynchronously. A shared model is a proxy to another
        # process, where the batch arrives unpickled (and unpinned) anyway.
        pin_memory = not self.settings.share_model_across_processes and model.device.type == "cuda"
        images, image_index, digests = _unique_images(batch, pin_memory)
        token_ids = [pair.token_ids for pair in batch]
        model_id = self.settings.model
        if not (inference_args or {}).get("embeddings"):
            scores = model.score(images, token_ids, image_index, digests)
            return [PredictionResult(pair, score, model_id) for pair, score in zip(batch, scores, strict=True)]
        scored = model.score_and_embed(images, token_ids, image_index, digests)
        inferences = zip(scored.scores, scored.image_features.tolist(), scored.text_features.tolist(), strict=True)
        return [
            PredictionResult(pair, ScoreWithEmbeddings(*inference), model_id)
            for pair, inference in zip(batch, inferences, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[PreparedPair]) -> int:
        return sum(pair.image.nbytes + 8 * len(pair.token_ids) for pair in batch)

    def get_metrics_namespace(self) -> str:
        return "BeamML_LongCLIP"

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        unknown = set(inference_args or {}) - {"embeddings"}
        if unknown:
            raise ValueError(f"LongCLIPModelHandler takes only the inference_arg 'embeddings', got {sorted(unknown)}")


def _unique_images(
    batch: Sequence[PreparedPair], pin_memory: bool
) -> tuple[torch.Tensor, list[int], Optional[list[str]]]:
    """One stacked row per distinct image (by `image_digest`), the row of each pair, and each row's digest
    when every pair has one (the scorer then reuses features of images seen in recent batches)."""
    rows: dict[object, int] = {}
    unique: list[torch.Tensor] = []
    image_index = []
    for position, pair in enumerate(batch):
        identity = pair.image_digest if pair.image_digest is not None else ("pair", position)
        row = rows.setdefault(identity, len(rows))
        if row == len(unique):
            unique.append(pair.image)
        image_index.append(row)
    shape = (len(unique), *unique[0].shape)
    stacked = torch.empty(shape, dtype=unique[0].dtype, pin_memory=pin_memory)
    digests = list(rows) if all(pair.image_digest is not None for pair in batch) else None
    return torch.stack(unique, out=stacked), image_index, digests
