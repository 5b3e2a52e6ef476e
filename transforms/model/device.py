"""Choosing the device and the weight precision the scorer runs in."""

from __future__ import annotations

from typing import Optional

import torch


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
