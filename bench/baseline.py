"""The row-at-a-time evaluator ScoreLongCLIP replaces (DataFlow's ImageLongCLIPEvaluator), for comparison.

Per pair: open the image, `convert("RGB")`, LongCLIP's torchvision preprocessing in float, tokenize,
pad the text to all 248 positions, `encode_image` and `encode_text` at batch size 1, cosine.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.model.scorer import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LongCLIPScorer, pad_tokens


class RowAtATimeEvaluator:
    """Same weights, device and precision as the `scorer` it wraps, none of its shortcuts: open_clip's own
    forward (in bf16/fp16 on a copy cast whole, as casting a model usually goes)."""

    def __init__(self, scorer: LongCLIPScorer):
        self.model = scorer.model if scorer.dtype == torch.float32 else copy.deepcopy(scorer.model).to(scorer.dtype)
        self.device = scorer.device
        self.dtype = scorer.dtype
        self.context_length = scorer.context_length
        self.tokenizer = LongCLIPTokenizer(scorer.context_length)
        resolution = scorer.image_resolution
        self.preprocess = Compose(
            [
                Resize(resolution, interpolation=InterpolationMode.BICUBIC),
                CenterCrop(resolution),
                ToTensor(),
                Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
            ]
        )

    def score(self, image_path: str, text: str) -> float:
        with torch.no_grad():
            pixels = self.preprocess(Image.open(image_path).convert("RGB")).unsqueeze(0)
            tokens = pad_tokens([self.tokenizer(text).ids], self.context_length)
            image = self.model.encode_image(pixels.to(self.device, self.dtype)).float()
            text_features = self.model.encode_text(tokens.to(self.device)).float()
            image = image / image.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            cosine = (image * text_features).sum().item()
        return min(max((cosine + 1) / 2, 0.0), 1.0)

    def score_all(self, records: Sequence[dict]) -> list[float]:
        return [self.score(record["image_path"], record["text"]) for record in records]
