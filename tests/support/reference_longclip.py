"""An independent LongCLIP forward pass, written from the LongCLIP paper/code formulas.

It reads the raw checkpoint state dict and shares no code with `transforms/`: its own attention,
its own positional masks (`pe * mask1 + pe_res * mask2`), open_clip's tokenizer (a separate
implementation of the same BPE) and LongCLIP's torchvision preprocessing on `Image.open().convert("RGB")`.

LongCLIP's `load` builds its model with fp16 Conv/Linear/attention weights and projections, loads the
fp32 checkpoint into it and then calls `.float()` on the CPU: `rounded_like_longclip` applies that
rule to the state dict by key name, and `reference_score` uses it unless told to keep stored values.
"""

from __future__ import annotations

import functools
import math

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

CONTEXT = 248
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# Key suffixes of the tensors LongCLIP's `convert_weights` makes fp16: Conv/Linear weights and biases
# (conv1, the MLP's c_fc/c_proj, attention out_proj), MultiheadAttention's in_proj, and the two projections.
_ROUNDED_SUFFIXES = (
    "conv1.weight",
    ".attn.in_proj_weight",
    ".attn.in_proj_bias",
    ".attn.out_proj.weight",
    ".attn.out_proj.bias",
    ".mlp.c_fc.weight",
    ".mlp.c_fc.bias",
    ".mlp.c_proj.weight",
    ".mlp.c_proj.bias",
)
_ROUNDED_KEYS = ("visual.proj", "text_projection")


def rounded_like_longclip(sd):
    """The state dict with the values LongCLIP's loader leaves: those tensors through fp16 and back."""
    return {
        key: value.half().float() if key.endswith(_ROUNDED_SUFFIXES) or key in _ROUNDED_KEYS else value
        for key, value in sd.items()
    }


def _layer_norm(x, sd, prefix):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-5)


def _block(x, sd, prefix, heads, mask):
    """One CLIP residual block on [L, N, D] (LongCLIP's layout): attention then QuickGELU MLP."""
    length, batch, width = x.shape
    h = _layer_norm(x, sd, f"{prefix}.ln_1")
    qkv = h @ sd[f"{prefix}.attn.in_proj_weight"].T + sd[f"{prefix}.attn.in_proj_bias"]
    q, k, v = qkv.chunk(3, dim=-1)

    def split(t):
        return t.reshape(length, batch * heads, width // heads).transpose(0, 1)

    q, k, v = split(q), split(k), split(v)
    weights = (q @ k.transpose(1, 2)) / math.sqrt(width // heads)
    if mask is not None:
        weights = weights + mask
    attended = (weights.softmax(dim=-1) @ v).transpose(0, 1).reshape(length, batch, width)
    x = x + attended @ sd[f"{prefix}.attn.out_proj.weight"].T + sd[f"{prefix}.attn.out_proj.bias"]
    h = _layer_norm(x, sd, f"{prefix}.ln_2")
    h = h @ sd[f"{prefix}.mlp.c_fc.weight"].T + sd[f"{prefix}.mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ sd[f"{prefix}.mlp.c_proj.weight"].T + sd[f"{prefix}.mlp.c_proj.bias"]


def _layers(sd, prefix):
    return sorted({int(k.split(".")[len(prefix.split("."))]) for k in sd if k.startswith(prefix + ".")})


def encode_image(sd, pixels):
    conv = sd["visual.conv1.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    x = F.conv2d(pixels, conv, stride=patch).reshape(pixels.shape[0], width, -1).permute(0, 2, 1)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = _layer_norm(x, sd, "visual.ln_pre").permute(1, 0, 2)
    for i in _layers(sd, "visual.transformer.resblocks"):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}", width // 64, None)
    x = _layer_norm(x.permute(1, 0, 2)[:, 0, :], sd, "visual.ln_post")
    return x @ sd["visual.proj"]


def encode_text(sd, tokens):
    length = sd["positional_embedding"].shape[0]
    x = sd["token_embedding.weight"][tokens]
    if "positional_embedding_res" in sd:
        mask1 = torch.zeros(length, 1)
        mask1[:20] = 1
        mask2 = torch.zeros(length, 1)
        mask2[20:] = 1
        x = x + sd["positional_embedding"] * mask1 + sd["positional_embedding_res"] * mask2
    else:
        x = x + sd["positional_embedding"]
    causal = torch.empty(length, length).fill_(float("-inf")).triu_(1)
    x = x.permute(1, 0, 2)
    width = x.shape[-1]
    for i in _layers(sd, "transformer.resblocks"):
        x = _block(x, sd, f"transformer.resblocks.{i}", width // 64, causal)
    x = _layer_norm(x.permute(1, 0, 2), sd, "ln_final")
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ sd["text_projection"]


def preprocess(path, resolution):
    transform = Compose(
        [
            Resize(resolution, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(resolution),
            ToTensor(),
            Normalize(MEAN, STD),
        ]
    )
    return transform(Image.open(path).convert("RGB"))


def tokenize(text, context_length=CONTEXT):
    return _tokenizer(context_length)([" ".join(text.split())])


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length):
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def reference_score(sd, image_path, text, *, stored_weights=False):
    """The score the original LongCLIP code gives, in fp32 on the CPU (with `stored_weights`: the score
    the same code would give from the checkpoint's values as stored)."""
    if not stored_weights:
        sd = rounded_like_longclip(sd)
    resolution = sd["visual.conv1.weight"].shape[-1] * round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    with torch.no_grad():
        image = encode_image(sd, preprocess(image_path, resolution).unsqueeze(0))
        text_features = encode_text(sd, tokenize(text, sd["positional_embedding"].shape[0]))
        image = image / image.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        cosine = (image * text_features).sum().item()
    return min(max((cosine + 1) / 2, 0.0), 1.0)


class ReferenceScorer:
    """`reference_score` for many texts against few images: each image encoded once."""

    def __init__(self, sd, *, stored_weights=False):
        self.sd = sd if stored_weights else rounded_like_longclip(sd)
        patch, grid = self.sd["visual.conv1.weight"].shape[-1], (self.sd["visual.positional_embedding"].shape[0] - 1)
        self.resolution = patch * round(grid**0.5)
        self._images = {}

    def score(self, image_path, text):
        with torch.no_grad():
            key = str(image_path)
            if key not in self._images:
                image = encode_image(self.sd, preprocess(image_path, self.resolution).unsqueeze(0))[0]
                self._images[key] = image / image.norm()
            cosine = (self._images[key] * self.text(text)).sum().item()
        return min(max((cosine + 1) / 2, 0.0), 1.0)

    def text(self, text):
        """The text's L2-normalised features."""
        with torch.no_grad():
            features = encode_text(self.sd, tokenize(text, self.sd["positional_embedding"].shape[0]))[0]
        return features / features.norm()
