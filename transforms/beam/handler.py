"""`LongCLIPModelHandler`: Beam RunInference glue around `LongCLIPScorer`."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.inputs.prepare import PreparedPair
from transforms.model.device import check_device
from transforms.model.faults import FaultIsolator
from transforms.model.formats import CheckpointFormatError
from transforms.model.header import InputSizes, read_input_sizes
from transforms.model.locate import BEAM_WORKER_DIR_ENV, resolve_checkpoint
from transforms.model.scorer import LongCLIPScorer
from transforms.settings import DEFAULT_MODEL, BatchSettings, ModelSettings

_LOGGER = logging.getLogger(__name__)


class ScoreWithEmbeddings(NamedTuple):
    """One pair's inference when embeddings are asked for: the score, and the L2-normalised float32 image and
    text features it is `clamp((dot + 1) / 2, 0, 1)` of."""

    score: float
    image_embedding: list[float]
    text_embedding: list[float]


class CaptionScores(NamedTuple):
    """One pair's inference when its caption is scored in parts (`PreparedPair.chunk_token_ids` or
    `sentence_token_ids`). `score`: the mean of the chunk scores, or the caption's own when it was not cut into
    chunks; `chunk_scores` and `sentence_scores`: in the pair's order (empty when not asked for). With
    embeddings, the image's and the text's (the L2-normalised mean of the chunks' when in chunks)."""

    score: float
    chunk_scores: list[float]
    sentence_scores: list[float]
    image_embedding: Optional[list[float]] = None
    text_embedding: Optional[list[float]] = None


class LongCLIPModelHandler(ModelHandler[PreparedPair, PredictionResult, LongCLIPScorer]):
    """Loads LongCLIP once per worker process (or once per machine) and scores batches of `PreparedPair`.

    Args:
      model: a checkpoint (Hub id, local file or folder, `gs://` URI), or `ModelSettings` for the
        device, precision, weights and model sharing as well.
      batching: how Beam's BatchElements groups pairs (`BatchSettings`).

    Each `PredictionResult` carries the pair, its score and the checkpoint as `model_id`; with
    `RunInference(..., inference_args={"embeddings": True})` the inference is a `ScoreWithEmbeddings`
    instead, the score with the pair's L2-normalised image and text features; a pair whose caption comes in
    chunks or sentences gets a `CaptionScores`. An exception
    inside the model does not fail the batch: it is retried in halves down to single records, and a
    record that fails on its own gets an `InferenceFailure` instead of a score (`ScoreLongCLIP` turns it
    into reason `inference_failed`); an out-of-memory error also lowers the batch size for later
    batches (`faults.FaultIsolator`). Beam's model refresh (`RunInference(model_metadata_pcoll=...)`)
    swaps the checkpoint through `update_model_path`; the new one must take the same image resolution and
    context length.

    Only `load_model` opens the checkpoint on workers: the input sizes that preparing records needs are read
    once, from the checkpoint's header, when the pipeline is built (`input_sizes`), or given in the settings.
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
        self._input_sizes: Optional[InputSizes] = None
        if settings.image_resolution is not None and settings.context_length is not None:
            self._input_sizes = InputSizes(settings.image_resolution, settings.context_length)
        self._isolator = FaultIsolator(batching.max_batch_size)

    def input_sizes(self) -> InputSizes:
        """The image resolution and context length records are prepared for: as the settings give them, else
        read from the checkpoint's header (not its weights) on first call, on the machine building the pipeline."""
        if self._input_sizes is None:
            self._input_sizes = read_input_sizes(self.settings.model)
        return self._input_sizes

    def load_model(self) -> LongCLIPScorer:
        """The model of this process: loaded on first call, then the same one for every DoFn instance that asks
        with the same checkpoint and settings (see `_ProcessModel`)."""
        scorer = _PROCESS_MODEL.get(self.settings)
        sizes = self._input_sizes
        if sizes is not None and sizes != InputSizes(scorer.image_resolution, scorer.context_length):
            raise CheckpointFormatError(
                f"checkpoint {self.settings.model} takes {scorer.image_resolution}-pixel images and "
                f"{scorer.context_length}-token captions, but the pipeline prepares records for "
                f"{sizes.image_resolution} and {sizes.context_length}: pass the matching image_resolution and "
                "context_length (or leave both out), and refresh only to checkpoints of the same sizes"
            )
        if (
            os.environ.get(BEAM_WORKER_DIR_ENV)
            and scorer.device.type == "cuda"
            and not self.share_model_across_processes()
        ):
            _LOGGER.warning(
                "Each SDK process of this worker loads its own LongCLIP on the GPU; with one process per vCPU that "
                "is several copies. Pass share_model_across_processes (--share_model_across_processes) for one."
            )
        return scorer

    def update_model_path(self, model_path: Optional[str] = None) -> None:
        if model_path:
            self.settings = dataclasses.replace(self.settings, model=model_path)

    def run_inference(
        self,
        batch: Sequence[PreparedPair],
        model: LongCLIPScorer,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        model_id = self.settings.model
        embeddings = bool((inference_args or {}).get("embeddings"))
        outcomes = self._isolator.run(batch, lambda pairs: self._score(pairs, model, embeddings))
        return [PredictionResult(pair, outcome, model_id) for pair, outcome in zip(batch, outcomes, strict=True)]

    def _score(
        self, batch: Sequence[PreparedPair], model: LongCLIPScorer, embeddings: bool
    ) -> Union[list[float], list[ScoreWithEmbeddings], list[CaptionScores]]:
        # Page-locked batches copy to the GPU asynchronously. A shared model is a proxy to another
        # process, where the batch arrives unpickled (and unpinned) anyway.
        pin_memory = not self.settings.share_model_across_processes and model.device.type == "cuda"
        images, image_index, digests = _unique_images(batch, pin_memory)
        token_ids = [pair.token_ids for pair in batch]
        if any(pair.chunk_token_ids or pair.sentence_token_ids for pair in batch):
            return _caption_scores(batch, model, images, image_index, digests, embeddings)
        if not embeddings:
            return model.score(images, token_ids, image_index, digests)
        scored = model.score_and_embed(images, token_ids, image_index, digests)
        inferences = zip(scored.scores, scored.image_features.tolist(), scored.text_features.tolist(), strict=True)
        return [ScoreWithEmbeddings(*inference) for inference in inferences]

    def get_num_bytes(self, batch: Sequence[PreparedPair]) -> int:
        texts = (
            len(ids) for pair in batch for ids in (pair.token_ids, *pair.chunk_token_ids, *pair.sentence_token_ids)
        )
        return sum(pair.image.nbytes for pair in batch) + 8 * sum(texts)

    def get_metrics_namespace(self) -> str:
        return "BeamML_LongCLIP"

    def validate_inference_args(self, inference_args: Optional[dict[str, Any]]) -> None:
        unknown = set(inference_args or {}) - {"embeddings"}
        if unknown:
            raise ValueError(f"LongCLIPModelHandler takes only the inference_arg 'embeddings', got {sorted(unknown)}")


def _caption_scores(
    batch: Sequence[PreparedPair],
    model: LongCLIPScorer,
    images: torch.Tensor,
    image_index: list[int],
    digests: Optional[list[str]],
    embeddings: bool,
) -> list[CaptionScores]:
    """Each pair's caption, chunks and sentences scored against its image, the image encoded once."""
    extra_ids, extra_image_index = [], []
    for pair, row in zip(batch, image_index, strict=True):
        parts = (*pair.chunk_token_ids, *pair.sentence_token_ids)
        extra_ids += parts
        extra_image_index += [row] * len(parts)
    scored = model.score_extra_texts(
        images, [pair.token_ids for pair in batch], image_index, extra_ids, extra_image_index, digests, embeddings
    )
    out, start = [], 0
    for row, pair in enumerate(batch):
        chunks, sentences = len(pair.chunk_token_ids), len(pair.sentence_token_ids)
        chunk_scores = scored.extra_scores[start : start + chunks]
        sentence_scores = scored.extra_scores[start + chunks : start + chunks + sentences]
        score = sum(chunk_scores) / chunks if chunks else scored.scores[row]
        image_embedding = text_embedding = None
        if embeddings:
            image_embedding = scored.image_features[row].tolist()
            text_embedding = scored.text_features[row].tolist()
            if chunks:
                mean = scored.extra_text_features[start : start + chunks].mean(0)
                text_embedding = (mean / mean.norm()).tolist()
        out.append(CaptionScores(score, chunk_scores, sentence_scores, image_embedding, text_embedding))
        start += chunks + sentences
    return out


class _ProcessModel:
    """The model loaded in this process, kept for as long as the settings it was loaded with are asked for.

    Beam's `RunInference` keeps a model through `shared.Shared`, which holds it only while a DoFn instance does
    (or until another `Shared` is acquired); Beam's local streaming runner makes a DoFn instance per bundle and
    tears it down after, so each bundle loaded the model again (a 1.7 GB LongCLIP-L each time). One model per
    process instead: loaded again only when the checkpoint (a model refresh, or the file changed) or the
    settings change, which the log says; the one before is let go first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held while loading: a second DoFn asking waits for the first one's model
        self._key: Optional[dict[str, object]] = None
        self._scorer: Optional[LongCLIPScorer] = None

    def get(self, settings: ModelSettings) -> LongCLIPScorer:
        path = resolve_checkpoint(settings.model)
        stat = path.stat()
        key = {
            "checkpoint": str(path),
            "checkpoint file": (stat.st_size, stat.st_mtime_ns),
            "device": settings.device,
            "precision": settings.precision,
            "stored_weights": settings.stored_weights,
            "max_concurrent_batches": settings.max_concurrent_batches,
        }
        with self._lock:
            if self._scorer is not None and key == self._key:
                return self._scorer
            if self._key is not None:
                _LOGGER.info("Loading LongCLIP again in this process: %s; the one before goes", _why(self._key, key))
            self._key, self._scorer = None, None  # memory for one model at a time
            self._scorer = LongCLIPScorer.from_checkpoint(
                path,
                settings.device,
                settings.precision,
                stored_weights=settings.stored_weights,
                max_concurrent_batches=settings.max_concurrent_batches,
            )
            self._key = key
            return self._scorer

    def release(self) -> None:
        with self._lock:
            self._key, self._scorer = None, None


_PROCESS_MODEL = _ProcessModel()


def release_model() -> None:
    """Lets go of the model this process keeps (the next batch loads it again): for a notebook that needs the
    memory back, or a benchmark whose runs must each start from a fresh model (with no image features kept)."""
    _PROCESS_MODEL.release()


def _why(before: dict[str, object], now: dict[str, object]) -> str:
    """What differs between two models' keys, in words."""
    if before["checkpoint"] == now["checkpoint"] and before["checkpoint file"] != now["checkpoint file"]:
        return f"{now['checkpoint']} changed on disk"
    changed = [name for name in now if name != "checkpoint file" and now[name] != before[name]]
    return ", ".join(f"{name} is now {now[name]} (was {before[name]})" for name in changed)


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
