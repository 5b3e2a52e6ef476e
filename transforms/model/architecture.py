"""Building an open_clip CLIP from a LongCLIP (or OpenAI / Hugging Face CLIP) checkpoint.

No Beam here. The architecture is read off the tensor shapes, as LongCLIP's `build_model` does, so
LongCLIP-B/L/L-336px, plain OpenAI CLIP ViTs (77 positions) and tiny test checkpoints all load the
same way; LongCLIP's second text positional table is folded into one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Union

import torch

from transforms.model.formats import (
    ACCEPTED_FORMATS,
    RESIDUAL_TABLE,
    Checkpoint,
    CheckpointFormatError,
    read_checkpoint,
)

# LongCLIP keeps these many leading rows of the original CLIP positional table frozen.
KEPT_POSITIONS = 20
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

StateDict = Mapping[str, torch.Tensor]

if TYPE_CHECKING:  # open_clip imports torchvision and more: loaded where a model is built
    import open_clip


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
    import open_clip

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
