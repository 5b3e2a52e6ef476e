"""Tiny random checkpoints in the exact on-disk format of LongCLIP (and of OpenAI CLIP).

A LongCLIP file is `torch.save(model.state_dict())` of LongCLIP's `CLIP`: OpenAI's ViT keys, a
248-row `positional_embedding` and the extra 248-row `positional_embedding_res`. The two tables
are made different, so a loader that ignores either one gives wrong scores.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import torch

VOCAB_SIZE = 49408


def make_state_dict(
    *,
    seed: int = 0,
    context_length: int = 248,
    with_residual_table: bool = True,
    embed_dim: int = 32,
    text_width: int = 64,
    text_layers: int = 2,
    vision_width: int = 64,
    vision_layers: int = 2,
    patch_size: int = 8,
    grid: int = 4,
) -> "OrderedDict[str, torch.Tensor]":
    """Random weights with the key names, shapes and dtypes (fp32) of a LongCLIP/OpenAI state dict."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def ln(prefix: str, width: int) -> dict:
        return {f"{prefix}.weight": 1 + randn(width, std=0.1), f"{prefix}.bias": randn(width, std=0.1)}

    def blocks(prefix: str, width: int, layers: int) -> dict:
        out: dict = {}
        for i in range(layers):
            p = f"{prefix}.resblocks.{i}"
            out[f"{p}.attn.in_proj_weight"] = randn(3 * width, width, std=width**-0.5)
            out[f"{p}.attn.in_proj_bias"] = randn(3 * width)
            out[f"{p}.attn.out_proj.weight"] = randn(width, width, std=width**-0.5)
            out[f"{p}.attn.out_proj.bias"] = randn(width)
            out.update(ln(f"{p}.ln_1", width))
            out[f"{p}.mlp.c_fc.weight"] = randn(4 * width, width, std=width**-0.5)
            out[f"{p}.mlp.c_fc.bias"] = randn(4 * width)
            out[f"{p}.mlp.c_proj.weight"] = randn(width, 4 * width, std=(4 * width) ** -0.5)
            out[f"{p}.mlp.c_proj.bias"] = randn(width)
            out.update(ln(f"{p}.ln_2", width))
        return out

    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    sd["positional_embedding"] = randn(context_length, text_width, std=0.5)
    if with_residual_table:
        sd["positional_embedding_res"] = randn(context_length, text_width, std=0.5)
    sd["text_projection"] = randn(text_width, embed_dim, std=text_width**-0.5)
    sd["logit_scale"] = torch.tensor(4.6052)
    sd["visual.class_embedding"] = randn(vision_width, std=0.5)
    sd["visual.positional_embedding"] = randn(grid * grid + 1, vision_width, std=0.5)
    sd["visual.proj"] = randn(vision_width, embed_dim, std=vision_width**-0.5)
    sd["visual.conv1.weight"] = randn(vision_width, 3, patch_size, patch_size, std=0.2)
    sd.update(ln("visual.ln_pre", vision_width))
    sd.update(blocks("visual.transformer", vision_width, vision_layers))
    sd.update(ln("visual.ln_post", vision_width))
    sd["token_embedding.weight"] = randn(VOCAB_SIZE, text_width, std=0.5)
    sd.update(blocks("transformer", text_width, text_layers))
    sd.update(ln("ln_final", text_width))
    return sd


def save_checkpoint(path: Path, **kwargs) -> Path:
    """Writes a tiny checkpoint the way LongCLIP's training script does (`torch.save(state_dict)`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_state_dict(**kwargs), path)
    return path


def save_huggingface_clip(folder: Path, *, seed: int = 0, context_length: int = 248) -> Path:
    """A tiny random transformers `CLIPModel` written by `save_pretrained` (config.json + model.safetensors),
    shaped like the LongCLIP conversions on the Hub (248 positions, QuickGELU), with 2 heads per tower
    where OpenAI's rule (width // 64) would give 1, so a loader must read the heads from the config."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tower = dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256)
    config = CLIPConfig(
        text_config=dict(tower, max_position_embeddings=context_length, hidden_act="quick_gelu"),
        vision_config=dict(tower, image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=32,
    )
    model = CLIPModel(config)
    with torch.no_grad():  # transformers initialises the positional tables and LayerNorms plainly; vary them
        for name, parameter in model.named_parameters():
            if "position_embedding" in name or "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(folder)
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m transforms.testing.checkpoints PATH`: a tiny random LongCLIP checkpoint, to try the job with
    no network. Its scores mean nothing; the real default is the Hub's LongCLIP-L-336px."""
    parser = argparse.ArgumentParser(
        prog="python -m transforms.testing.checkpoints",
        description="Writes a tiny random checkpoint in LongCLIP's exact format (scores are meaningless).",
    )
    parser.add_argument("path", type=Path, help="the .pt file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    save_checkpoint(args.path, seed=args.seed)
    sys.stderr.write(f"wrote {args.path}: random weights, for trying the job offline; its scores mean nothing\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
