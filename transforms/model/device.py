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


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision to run in, and why: `requested` itself, or for "auto" the fastest one that `device`
    computes well. CPUs with bf16 instructions (AVX512-BF16, or AMX as on Google Cloud's C3) run the bf16
    matrix products about three times faster than fp32; GPUs from Ampere on (A100, L4, H100) have fast
    bf16, older ones (T4, V100) fast fp16 only."""
    if requested != "auto":
        parse_precision(requested)
        return requested, "as requested"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return "bf16", f"auto: {name} (compute capability {major}.{minor}) has fast bf16"
        if major >= 7:
            return "fp16", f"auto: {name} (compute capability {major}.{minor}) has fast fp16 but not bf16"
        return "fp32", f"auto: {name} (compute capability {major}.{minor}) has no fast half precision"
    if device.type == "cpu":
        instructions = [name for name, has in _cpu_bf16_instructions().items() if has]
        if instructions:
            return "bf16", f"auto: this CPU has bf16 instructions ({', '.join(instructions)})"
        return "fp32", "auto: this CPU has no bf16 instructions (AVX512-BF16 or AMX)"
    return "fp32", f"auto: nothing known about fast half precision on {device.type}"


def _cpu_bf16_instructions() -> dict[str, bool]:
    return {"AMX": torch.cpu._is_amx_tile_supported(), "AVX512-BF16": torch.cpu._is_avx512_bf16_supported()}


def parse_precision(precision: str) -> torch.dtype:
    """The torch dtype for `fp32`, `bf16` or `fp16`; anything else is an error that lists them."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise InvalidSetting("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None
