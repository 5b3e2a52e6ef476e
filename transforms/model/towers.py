"""LongCLIP's two towers run block by block on fused scaled-dot-product attention, in any precision.

No Beam here. open_clip's own forward passes a float mask to `nn.MultiheadAttention` in the text
tower, which keeps PyTorch off its fused attention kernels, and in bf16 that path is several times
slower than fp32 on CPUs. These functions run the same modules' weights with
`scaled_dot_product_attention` (a causal flag for text, no mask for images) instead.

`compute_dtype` is the precision of the matrix products: the residual stream, LayerNorms,
embeddings and the final projections stay in fp32, so bf16/fp16 lose little accuracy. See
`low_precision_weights` for which weights are cast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

# The weights whose products dominate the cost; everything else stays fp32.
_BLOCK_LINEARS = ("attn.out_proj", "mlp.c_fc", "mlp.c_proj")

if TYPE_CHECKING:  # open_clip imports torchvision and more: loaded where a model is built
    import open_clip


def low_precision_weights(model: open_clip.CLIP, dtype: torch.dtype) -> None:
    """Casts, in place, the block matrices of both towers and the patch embedding to `dtype`."""
    for tower in (model.transformer, model.visual.transformer):
        for block in tower.resblocks:
            block.attn.in_proj_weight.data = block.attn.in_proj_weight.data.to(dtype)
            block.attn.in_proj_bias.data = block.attn.in_proj_bias.data.to(dtype)
            for name in _BLOCK_LINEARS:
                block.get_submodule(name).to(dtype)
    model.visual.conv1.to(dtype)


def residual_block(block: torch.nn.Module, x: torch.Tensor, *, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """One pre-LayerNorm CLIP block on x [N, L, W] (fp32), products in `dtype`."""
    attended = _attention(block, block.ln_1(x).to(dtype), causal=causal)
    x = x + block.ls_1(attended).float()
    return x + block.ls_2(block.mlp(block.ln_2(x).to(dtype))).float()


def last_block_at(
    block: torch.nn.Module, x: torch.Tensor, position: torch.Tensor, *, causal: bool, dtype: torch.dtype
) -> torch.Tensor:
    """The block's output [N, W] at one position per row: the pooled token (keys and values still cover
    every position it sees, up to it when `causal`).

    Only the pooled token is used, so the query, output projection and MLP run for that position
    alone: the same numbers as the whole block, for a fraction of its work.
    """
    rows = torch.arange(x.shape[0], device=x.device)
    normed = block.ln_1(x).to(dtype)
    visible = None
    if causal:
        visible = (torch.arange(x.shape[1], device=x.device) <= position.unsqueeze(1))[:, None, None, :]
    attended = _attention(block, normed, query_rows=(rows, position), key_mask=visible)
    y = x[rows, position] + block.ls_1(attended[:, 0]).float()
    return y + block.ls_2(block.mlp(block.ln_2(y).to(dtype))).float()


def _attention(block, normed, *, causal=False, query_rows=None, key_mask=None):
    attn = block.attn
    batch, length, width = normed.shape
    heads = attn.num_heads
    q, k, v = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    if query_rows is not None:
        q = q[query_rows].unsqueeze(1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, t.shape[1], heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=key_mask, is_causal=causal)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, -1, width))


def encode_text_prefix(
    model: open_clip.CLIP, tokens: torch.Tensor, eot: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Text features [N, E] (fp32) of token prefixes [N, L], pooled at each row's EOT position."""
    length = tokens.shape[1]
    x = model.token_embedding(tokens).float() + model.positional_embedding[:length].float()
    *blocks, last = model.transformer.resblocks
    for block in blocks:
        x = residual_block(block, x, causal=True, dtype=dtype)
    return model.ln_final(last_block_at(last, x, eot, causal=True, dtype=dtype)) @ model.text_projection.float()


def encode_image(model: open_clip.CLIP, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Image features [N, E] (fp32) of normalised pixels [N, 3, R, R] (fp32)."""
    visual = model.visual
    x = visual.conv1(pixels.to(dtype)).flatten(2).transpose(1, 2).float()
    cls = visual.class_embedding.float().expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding.float())
    *blocks, last = visual.transformer.resblocks
    for block in blocks:
        x = residual_block(block, x, causal=False, dtype=dtype)
    first = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    pooled = last_block_at(last, x, first, causal=False, dtype=dtype)  # the class token, as open_clip pools
    return visual.ln_post(pooled) @ visual.proj.float()
