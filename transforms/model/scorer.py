"""Scoring prepared image/text batches with a built LongCLIP model.

No Beam here. Inputs are uint8 images and unpadded token ids; outputs are plain floats, so the
scorer also works behind Beam's cross-process model proxy.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Union

import torch

from transforms.model import towers
from transforms.model.architecture import build_model
from transforms.model.device import describe_gpu, parse_precision, pick_device, resolve_precision
from transforms.model.formats import read_checkpoint

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:  # open_clip imports torchvision and more: loaded where a model is built
    import open_clip


class ScoresAndFeatures(NamedTuple):
    """Scores of a batch of pairs and, when asked for, the features they come from ([N, E] fp32, CPU); with
    extra texts (`score_extra_texts`), their scores and text features too."""

    scores: list[float]
    image_features: Optional[torch.Tensor]
    text_features: Optional[torch.Tensor]
    extra_scores: Optional[list[float]] = None
    extra_text_features: Optional[torch.Tensor] = None


class LongCLIPScorer:
    """A LongCLIP model on one device that turns prepared batches into alignment scores.

    Its public methods (`score`, `score_and_embed`) take and return plain CPU data, so they also work
    behind Beam's cross-process model proxy (`share_model_across_processes`).

    Exact shortcuts (fp32 scores unchanged): both towers run on fused attention (`towers`), each
    text only up to its EOT position (in a few groups of similar length), identical token sequences
    are encoded once, and an image shared by several pairs is encoded once, also across recent
    batches when the caller names it by a key. `precision` bf16/fp16 computes the block matrices in
    that precision (LayerNorms, residuals and projections stay fp32); scores then deviate slightly.
    At most `max_concurrent_batches` calls of `score` run their forward passes at once; the others wait.
    Worker threads, and with a shared model every SDK process of the machine, call one scorer, so this
    bounds the GPU memory that batches in flight take.
    """

    def __init__(
        self, model: open_clip.CLIP, device: torch.device, precision: str = "fp32", *, max_concurrent_batches: int = 1
    ):
        if model.text_pool_type != "argmax" or not model.transformer.batch_first:
            raise ValueError("expected open_clip's batch-first text tower with EOT (argmax) pooling, as built here")
        self.dtype = parse_precision(precision)
        self.model = model.to(device=device)
        if self.dtype != torch.float32:
            towers.low_precision_weights(self.model, self.dtype)
        self.device = device
        self.context_length: int = model.context_length
        self.image_resolution: int = model.visual.image_size[0]
        self._mean = torch.tensor(OPENAI_CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(OPENAI_CLIP_STD, device=device).view(1, 3, 1, 1)
        self.text_groups = 4
        self._recent_size = 1024  # image features of E floats each: a few MB
        self._recent_images: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.max_concurrent_batches = max_concurrent_batches
        self._forward_slots = threading.BoundedSemaphore(max_concurrent_batches)

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, Path],
        device: Optional[str] = None,
        precision: str = "fp32",
        *,
        stored_weights: bool = False,
        max_concurrent_batches: int = 1,
    ) -> "LongCLIPScorer":
        """Loads any accepted checkpoint format (see `formats`) onto `device`; `precision` may be
        `auto` (see `resolve_precision`). The log line names the GPU, torch's CUDA and the NVIDIA driver."""
        chosen = pick_device(device)
        precision, why = resolve_precision(precision, chosen)
        model = build_model(read_checkpoint(path), stored_weights=stored_weights)
        hardware = describe_gpu(chosen) if chosen.type == "cuda" else "CPU"
        _LOGGER.info(
            "Loaded LongCLIP checkpoint %s on %s: %s; %s (%s); at most %d batch(es) scored at once",
            path,
            chosen,
            hardware,
            precision,
            why,
            max_concurrent_batches,
        )
        return cls(model, chosen, precision, max_concurrent_batches=max_concurrent_batches)

    def score(
        self,
        images: torch.Tensor,
        token_ids: Sequence[Sequence[int]],
        image_index: Optional[Sequence[int]] = None,
        image_keys: Optional[Sequence[str]] = None,
    ) -> list[float]:
        """Scores pairs: clamp((cos+1)/2, 0, 1) of each text against its image.

        `images` are uint8 [N,3,R,R]; `token_ids` are unpadded, one per pair; pair i uses image row
        `image_index[i]` (default: row i), so callers pass an image shared by several pairs once.
        With `image_keys` (one per row, equal keys meaning equal pixels), the features of the most
        recent images are kept, so an image whose captions span several batches is encoded once.
        """
        return self._score(images, token_ids, image_index, image_keys, with_features=False).scores

    def score_and_embed(
        self,
        images: torch.Tensor,
        token_ids: Sequence[Sequence[int]],
        image_index: Optional[Sequence[int]] = None,
        image_keys: Optional[Sequence[str]] = None,
    ) -> "ScoresAndFeatures":
        """`score`, plus each pair's L2-normalised image and text features: the very vectors whose cosine
        the score is, fp32 on the CPU, one row per pair (no second forward pass)."""
        return self._score(images, token_ids, image_index, image_keys, with_features=True)

    def score_extra_texts(
        self,
        images: torch.Tensor,
        token_ids: Sequence[Sequence[int]],
        image_index: Sequence[int],
        extra_token_ids: Sequence[Sequence[int]],
        extra_image_index: Sequence[int],
        image_keys: Optional[Sequence[str]] = None,
        with_features: bool = False,
    ) -> "ScoresAndFeatures":
        """`score` (or `score_and_embed`) of the pairs, and scores of extra texts against the same images
        (chunks or sentences of their captions: extra text j against image row `extra_image_index[j]`).

        Each image is encoded once. The pairs' own texts are encoded in one pass, as `score` would encode them,
        so their scores are the very ones `score` gives for the same batch; the extra texts in a second pass,
        except those whose ids equal a pair's text, which take its features.
        """
        return self._score(
            images, token_ids, image_index, image_keys, with_features, extra_token_ids, extra_image_index
        )

    def _score(
        self,
        images: torch.Tensor,
        token_ids: Sequence[Sequence[int]],
        image_index: Optional[Sequence[int]],
        image_keys: Optional[Sequence[str]],
        with_features: bool,
        extra_token_ids: Sequence[Sequence[int]] = (),
        extra_image_index: Sequence[int] = (),
    ) -> "ScoresAndFeatures":
        if image_index is None:
            image_index = range(len(token_ids))
        with self._forward_slots, torch.inference_mode():
            image_features = self._image_features(images, image_keys)
            unique_texts, text_index = _unique(token_ids)
            text_features = _unit(self.encode_texts(unique_texts))
            scores, pair_images, pair_texts = self._cosines(image_features, image_index, text_features, text_index)
            if not extra_token_ids:
                if not with_features:
                    return ScoresAndFeatures(scores, None, None)
                return ScoresAndFeatures(scores, pair_images.float().cpu(), pair_texts.float().cpu())
            known = {ids: row for row, ids in enumerate(unique_texts)}
            extra_unique, extra_index = _unique([ids for ids in extra_token_ids if tuple(ids) not in known])
            extra_features = _unit(self.encode_texts(extra_unique)) if extra_unique else text_features[:0]
            features = torch.cat([text_features, extra_features])
            fresh = iter(extra_index)
            rows = [
                known[ids] if ids in known else len(unique_texts) + next(fresh) for ids in map(tuple, extra_token_ids)
            ]
            extra_scores, _, extra_texts = self._cosines(image_features, extra_image_index, features, rows)
            if not with_features:
                return ScoresAndFeatures(scores, None, None, extra_scores, None)
            cpu = [tensor.float().cpu() for tensor in (pair_images, pair_texts, extra_texts)]
            return ScoresAndFeatures(scores, cpu[0], cpu[1], extra_scores, cpu[2])

    def _cosines(
        self, image_features: torch.Tensor, image_index: Sequence[int], text_features: torch.Tensor, text_index
    ) -> tuple[list[float], torch.Tensor, torch.Tensor]:
        """clamp((cos + 1) / 2, 0, 1) of each (image row, text row) pair, and the rows themselves."""
        pick_image = torch.as_tensor(image_index, dtype=torch.long, device=self.device)
        pick_text = torch.as_tensor(text_index, dtype=torch.long, device=self.device)
        pair_images, pair_texts = image_features[pick_image], text_features[pick_text]
        cosine = (pair_images * pair_texts).sum(dim=-1)
        return ((cosine + 1) / 2).clamp_(0, 1).tolist(), pair_images, pair_texts

    def _image_features(self, images: torch.Tensor, keys: Optional[Sequence[str]]) -> torch.Tensor:
        if keys is None:
            return _unit(self.encode_images(images))
        with self._lock:  # worker threads of one process share the scorer
            found = {key: self._recent_images.get(key) for key in keys}
        missing = [row for row, key in enumerate(keys) if found[key] is None]
        if missing:
            fresh = _unit(self.encode_images(images[missing] if len(missing) < len(keys) else images))
            # Clones, so that a kept row does not hold on to its whole batch.
            found.update((keys[row], features.clone()) for row, features in zip(missing, fresh, strict=True))
        with self._lock:
            for key in keys:
                self._recent_images[key] = found[key]
                self._recent_images.move_to_end(key)
            while len(self._recent_images) > self._recent_size:
                self._recent_images.popitem(last=False)
        return torch.stack([found[key] for key in keys])

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image features [N,E] in fp32 of uint8 images [N,3,R,R]; scaling as torchvision's ToTensor+Normalize."""
        pixels = images.to(self.device, non_blocking=True).float().div_(255)
        pixels = pixels.sub_(self._mean).div_(self._std)
        return towers.encode_image(self.model, pixels, self.dtype)

    def encode_texts(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Text features [N,E] in fp32, each text run only up to its EOT position.

        LongCLIP pools the token at argmax(ids) (the first EOT) and its attention is causal, so no
        position after it can change the result. Texts are sorted by EOT position and run in a few
        groups, each on its longest prefix, with the positional table and causal mask cut to that
        length, instead of all on 248 positions.
        """
        tokens = pad_tokens(token_ids, self.context_length)
        eot = tokens.argmax(dim=-1)
        order = torch.argsort(eot, stable=True)
        features = torch.empty(len(token_ids), self.model.text_projection.shape[1], device=self.device)
        start = 0
        for end in _length_groups(eot[order].tolist(), self.text_groups):
            rows = order[start:end]
            length = int(eot[rows].max()) + 1
            prefix = tokens[rows, :length].to(self.device, non_blocking=True)
            position = eot[rows].to(self.device, non_blocking=True)
            features[rows.to(self.device)] = towers.encode_text_prefix(self.model, prefix, position, self.dtype)
            start = end
        return features


def _length_groups(sorted_lengths: Sequence[int], groups: int) -> list[int]:
    """End indices that cut ascending lengths into at most `groups` runs with the least padded work.

    The work of a run is its size times its longest length (dynamic programming, O(groups * n^2)).
    """
    n = len(sorted_lengths)
    best = [[float("inf")] * (n + 1) for _ in range(groups + 1)]
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    best[0][0] = 0
    for used in range(1, groups + 1):
        for end in range(1, n + 1):
            for start in range(end):
                cost = best[used - 1][start] + (end - start) * sorted_lengths[end - 1]
                if cost < best[used][end]:
                    best[used][end], cut[used][end] = cost, start
    used = min(range(1, groups + 1), key=lambda g: best[g][n]) if n else 0
    ends, end = [], n
    while used:
        ends.append(end)
        end, used = cut[used][end], used - 1
    return ends[::-1]


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True)


def _unique(token_ids: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct sequences in first-seen order, and for each input the index of its sequence."""
    first_seen: dict[tuple[int, ...], int] = {}
    index = [first_seen.setdefault(tuple(ids), len(first_seen)) for ids in token_ids]
    return list(first_seen), index


def pad_tokens(token_ids: Sequence[Sequence[int]], context_length: int) -> torch.Tensor:
    """Zero-pads unpadded id sequences into the [B, context_length] int64 tensor the model takes."""
    batch = torch.zeros(len(token_ids), context_length, dtype=torch.long)
    for row, ids in enumerate(token_ids):
        if len(ids) > context_length:
            raise ValueError(f"{len(ids)} token ids do not fit the model's {context_length}-token context")
        batch[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return batch
