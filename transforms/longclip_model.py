"""Building a LongCLIP model from its checkpoint, and scoring prepared image/text batches.

No Beam here. The checkpoint is a plain OpenAI-CLIP-style ViT state dict; LongCLIP adds a second
text positional table. The architecture is read off the tensor shapes, so LongCLIP-B/L/L-336px,
plain OpenAI CLIP ViTs (77 positions) and tiny test checkpoints all load the same way.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import open_clip
import torch

from transforms.checkpoint_formats import (
    ACCEPTED_FORMATS,
    RESIDUAL_TABLE,
    Checkpoint,
    CheckpointFormatError,
    read_checkpoint,
)

# LongCLIP keeps these many leading rows of the original CLIP positional table frozen.
KEPT_POSITIONS = 20
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_LOGGER = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class LongCLIPArchitecture:
    """Sizes of a CLIP ViT, inferred from state-dict shapes as LongCLIP's `build_model` does.

    Heads default to width // 64 and the MLP to 4x width (OpenAI's rules); a Hugging Face config
    states its heads instead.
    """

    embed_dim: int
    image_resolution: int
    vision_width: int
    vision_layers: int
    vision_patch_size: int
    vision_heads: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp_ratio: float
    vision_mlp_ratio: float
    quick_gelu: bool

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> "LongCLIPArchitecture":
        state_dict = checkpoint.state_dict
        required = (
            "visual.proj",
            "visual.conv1.weight",
            "visual.positional_embedding",
            "positional_embedding",
            "token_embedding.weight",
            "ln_final.weight",
            "text_projection",
            "transformer.resblocks.0.mlp.c_fc.weight",
            "visual.transformer.resblocks.0.mlp.c_fc.weight",
        )
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise CheckpointFormatError(
                f"{checkpoint.source} is not a LongCLIP/OpenAI-CLIP ViT state dict: missing {', '.join(missing)} "
                f"(found e.g. {', '.join(list(state_dict)[:5])}). Accepted: {ACCEPTED_FORMATS}"
            )
        conv = state_dict["visual.conv1.weight"]
        patch = conv.shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_blocks = {m.group(1) for key in state_dict if (m := re.match(r"transformer\.resblocks\.(\d+)\.", key))}
        text_width = state_dict["ln_final.weight"].shape[0]
        return cls(
            embed_dim=state_dict["text_projection"].shape[1],
            image_resolution=patch * grid,
            vision_width=conv.shape[0],
            vision_layers=sum(1 for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")),
            vision_patch_size=patch,
            vision_heads=checkpoint.vision_heads or conv.shape[0] // 64,
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            text_width=text_width,
            text_layers=len(text_blocks),
            text_heads=checkpoint.text_heads or text_width // 64,
            text_mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
            vision_mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / conv.shape[0],
            quick_gelu=checkpoint.quick_gelu,
        )


def read_architecture(path: Union[str, Path]) -> LongCLIPArchitecture:
    """The architecture of the checkpoint at `path`, reading shapes only (not the weights)."""
    return LongCLIPArchitecture.from_checkpoint(read_checkpoint(path, shapes_only=True))


def merge_positional_tables(state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Folds LongCLIP's two text positional tables into one, as its `encode_text` masks do.

    Rows 0-19 come from `positional_embedding`, rows 20+ from `positional_embedding_res`; the
    result is bit-identical to `pe * mask1 + pe_res * mask2`. A plain CLIP state dict is returned as is.
    """
    merged = {key: value for key, value in state_dict.items() if key not in _METADATA_KEYS}
    residual = merged.pop(RESIDUAL_TABLE, None)
    if residual is not None:
        base = merged["positional_embedding"]
        if residual.shape != base.shape:
            raise CheckpointFormatError(
                f"positional_embedding {tuple(base.shape)} and {RESIDUAL_TABLE} {tuple(residual.shape)} differ in shape"
            )
        merged["positional_embedding"] = torch.cat([base[:KEPT_POSITIONS], residual[KEPT_POSITIONS:]], dim=0)
    return merged


def build_model(checkpoint: Checkpoint, *, stored_weights: bool = False) -> open_clip.CLIP:
    """An fp32 open_clip CLIP holding the checkpoint's weights, in eval mode.

    Unless `stored_weights`, the weights get what the format's own loader does to them: LongCLIP's and
    OpenAI's loaders round most of them to fp16 (see `round_weights_like_longclip`), and every score
    they give comes from those rounded values, on the CPU too.
    """
    arch = LongCLIPArchitecture.from_checkpoint(checkpoint)
    if arch.vision_width % arch.vision_heads or arch.text_width % arch.text_heads:
        raise CheckpointFormatError(f"widths must be multiples of the head counts, got {arch}")
    model = open_clip.CLIP(
        embed_dim=arch.embed_dim,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=arch.vision_layers,
            width=arch.vision_width,
            head_width=arch.vision_width // arch.vision_heads,
            mlp_ratio=arch.vision_mlp_ratio,
            patch_size=arch.vision_patch_size,
            image_size=arch.image_resolution,
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=arch.context_length,
            vocab_size=arch.vocab_size,
            width=arch.text_width,
            heads=arch.text_heads,
            layers=arch.text_layers,
            mlp_ratio=arch.text_mlp_ratio,
        ),
        quick_gelu=arch.quick_gelu,
    )
    state_dict = merge_positional_tables(checkpoint.state_dict)
    state_dict.setdefault("logit_scale", model.logit_scale.detach().clone())  # unused for scoring
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointFormatError(f"{checkpoint.source} does not match a CLIP ViT of {arch}: {exc}") from exc
    model = model.float().eval().requires_grad_(False)
    if checkpoint.rounded_by_original_loader and not stored_weights:
        round_weights_like_longclip(model)
    return model


def round_weights_like_longclip(model: torch.nn.Module) -> None:
    """Rounds to fp16 and back, in place, exactly the parameters LongCLIP's `convert_weights` makes fp16.

    Those are the weights and biases of every Conv1d/Conv2d/Linear (attention `out_proj` included),
    the input projections and biases of every MultiheadAttention, and the `proj`/`text_projection`
    parameters. LayerNorms, embeddings, positional tables and `logit_scale` keep their values.
    LongCLIP's `load` then calls `.float()` on the CPU: the dtype comes back, the rounding stays.
    """

    def to_fp16_and_back(tensor: Optional[torch.Tensor]) -> None:
        if tensor is not None:
            tensor.data = tensor.data.half().float()

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            to_fp16_and_back(module.weight)
            to_fp16_and_back(module.bias)
        if isinstance(module, torch.nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"):
                to_fp16_and_back(getattr(module, name))
            to_fp16_and_back(module.bias_k)
            to_fp16_and_back(module.bias_v)
        for name in ("text_projection", "proj"):
            to_fp16_and_back(getattr(module, name, None))


def pick_device(device: Optional[str]) -> torch.device:
    """`None` means CUDA when available, else CPU; an explicit CUDA device that is missing is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise RuntimeError(f"{device!r} is not a torch device; pass cpu, cuda or cuda:N ({exc})") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was requested but CUDA is not available here; pass --device cpu")
    return chosen


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_precision(precision: str) -> torch.dtype:
    """The torch dtype for `fp32`, `bf16` or `fp16`; anything else is an error that lists them."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None


class LongCLIPScorer:
    """A LongCLIP model on one device that turns prepared batches into alignment scores.

    Its one public method takes and returns plain CPU data, so it also works behind Beam's
    cross-process model proxy (`share_model_across_processes`).

    Exact shortcuts (fp32 scores unchanged): each text runs only up to its EOT position (in a few
    groups of similar length), identical token sequences are encoded once, and an image shared by
    several pairs is encoded once, also across recent batches when the caller names it by a key.
    `precision` other than fp32 casts the weights (meant for GPUs; scores then deviate slightly).
    """

    def __init__(self, model: open_clip.CLIP, device: torch.device, precision: str = "fp32"):
        if model.text_pool_type != "argmax" or not model.transformer.batch_first:
            raise ValueError("expected open_clip's batch-first text tower with EOT (argmax) pooling, as built here")
        self.dtype = parse_precision(precision)
        self.model = model.to(device=device, dtype=self.dtype)
        self.device = device
        self.context_length: int = model.context_length
        self.image_resolution: int = model.visual.image_size[0]
        self._mean = torch.tensor(OPENAI_CLIP_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(OPENAI_CLIP_STD, device=device).view(1, 3, 1, 1)
        self.text_groups = 4
        self._recent_size = 1024  # image features of E floats each: a few MB
        self._recent_images: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        path: Union[str, Path],
        device: Optional[str] = None,
        precision: str = "fp32",
        *,
        stored_weights: bool = False,
    ) -> "LongCLIPScorer":
        """Loads any accepted checkpoint format (see `checkpoint_formats`) onto `device`."""
        chosen = pick_device(device)
        model = build_model(read_checkpoint(path), stored_weights=stored_weights)
        _LOGGER.info("Loaded LongCLIP checkpoint %s on %s in %s", path, chosen, precision)
        return cls(model, chosen, precision)

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
        if image_index is None:
            image_index = range(len(token_ids))
        with torch.inference_mode():
            image_features = self._image_features(images, image_keys)
            unique_texts, text_index = _unique(token_ids)
            text_features = _unit(self.encode_texts(unique_texts))
            pick_image = torch.as_tensor(image_index, dtype=torch.long, device=self.device)
            pick_text = torch.as_tensor(text_index, dtype=torch.long, device=self.device)
            cosine = (image_features[pick_image] * text_features[pick_text]).sum(dim=-1)
            return ((cosine + 1) / 2).clamp_(0, 1).tolist()

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
        return self.model.encode_image(pixels.to(self.dtype)).float()

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
            features[rows.to(self.device)] = self._encode_prefix(tokens[rows, :length], eot[rows])
            start = end
        return features

    def _encode_prefix(self, tokens: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        model = self.model
        length = tokens.shape[1]
        tokens, eot = tokens.to(self.device, non_blocking=True), eot.to(self.device, non_blocking=True)
        mask = model.attn_mask[:length, :length]
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        *blocks, last = model.transformer.resblocks
        for block in blocks:
            x = block(x, attn_mask=mask)
        x = model.ln_final(_last_block_at_eot(last, x, eot, mask))
        return (x @ model.text_projection).float()


def _last_block_at_eot(block: torch.nn.Module, x: torch.Tensor, eot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last residual block's output at each row's EOT position only, [N, W] from x [N, L, W].

    Only the pooled token is used, so the last block's attention query, output projection and MLP
    run for that one position (keys and values still cover the prefix): the same numbers as the
    full block, for a fraction of its work.
    """
    rows = torch.arange(x.shape[0], device=x.device)
    normed = block.ln_1(x)
    query = normed[rows, eot].unsqueeze(1)
    heads = block.attn.num_heads
    query_mask = mask[eot].unsqueeze(1).repeat_interleave(heads, dim=0).to(query.dtype)  # [N*heads, 1, L]
    attended = block.attn(query, normed, normed, need_weights=False, attn_mask=query_mask)[0]
    y = x[rows, eot].unsqueeze(1) + block.ls_1(attended)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y[:, 0]


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
