"""Choosing the device and the weight precision the scorer runs in."""

from __future__ import annotations

from typing import Optional

import torch

from transforms.settings import PRECISIONS, InvalidSetting

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def check_device(device: Optional[str]) -> None:
    """Refuses what is not a torch device name (`cpu`, `cuda`, `cuda:N`), wherever this runs."""
    if device is None:
        return
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise InvalidSetting("device", f"{device!r} is not a torch device; pass cpu, cuda or cuda:N ({exc})") from None


def pick_device(device: Optional[str]) -> torch.device:
    """`None` means CUDA when available, else CPU; an explicit CUDA device that is missing is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSetting("device", f"{device!r} was requested but CUDA is not available here; use 'cpu'")
    return chosen


def parse_precision(precision: str) -> torch.dtype:
    """The torch dtype for `fp32`, `bf16` or `fp16`; anything else is an error that lists them."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise InvalidSetting("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None
