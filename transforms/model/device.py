"""Choosing the device and the weight precision the scorer runs in, and saying what the GPU is."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from transforms.reasons import first_line
from transforms.settings import PRECISIONS, InvalidSetting

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True))
_NVIDIA_DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def check_device(device: Optional[str]) -> None:
    """Refuses what is not a torch device name (`cpu`, `cuda`, `cuda:N`), wherever this runs."""
    if device is None:
        return
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise InvalidSetting("device", f"{device!r} is not a torch device; pass cpu, cuda or cuda:N ({exc})") from None


def pick_device(device: Optional[str]) -> torch.device:
    """`None` means CUDA when available, else CPU; an explicit CUDA device that is missing is an error that says
    why CUDA cannot start (CPU-only torch build, no driver, a driver too old for this torch)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSetting(
            "device", f"{device!r} was requested but CUDA is not available here: {cuda_problem()}; use 'cpu'"
        )
    return chosen


def cuda_problem() -> str:
    """Why torch cannot use a GPU here, in one line."""
    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    try:
        torch.cuda.init()
    except Exception as exc:  # no driver, a driver older than this torch's CUDA, no device
        return f"{first_line(exc)} (torch {torch.__version__} is built for CUDA {torch.version.cuda})"
    return "no CUDA device is visible"


def describe_gpu(device: torch.device) -> str:
    """GPU name, compute capability and memory, the CUDA version torch was built for, and the NVIDIA driver:
    what decides whether a torch build runs on a worker, for its log."""
    properties = torch.cuda.get_device_properties(device)
    return (
        f"{properties.name} (compute capability {properties.major}.{properties.minor}, "
        f"{properties.total_memory / 2**30:.1f} GiB), torch {torch.__version__} built for CUDA {torch.version.cuda}, "
        f"NVIDIA driver {nvidia_driver_version() or 'unknown'}"
    )


def nvidia_driver_version() -> Optional[str]:
    """The loaded NVIDIA kernel driver's version (e.g. 550.90.07), from /proc; None where there is none."""
    try:
        text = _NVIDIA_DRIVER_VERSION_FILE.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(part.isdigit() for part in parts):
            return word
    return None


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision to run in, and why: `requested` itself, or for "auto" the fastest one that `device`
    computes well. CPUs with bf16 instructions (AVX512-BF16, or AMX as on Google Cloud's C3) run the bf16
    matrix products about three times faster than fp32; for GPUs see `gpu_precision`."""
    if requested != "auto":
        parse_precision(requested)
        return requested, "as requested"
    if device.type == "cuda":
        return gpu_precision(torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device))
    if device.type == "cpu":
        instructions = [name for name, has in _cpu_bf16_instructions().items() if has]
        if instructions:
            return "bf16", f"auto: this CPU has bf16 instructions ({', '.join(instructions)})"
        return "fp32", "auto: this CPU has no bf16 instructions (AVX512-BF16 or AMX)"
    return "fp32", f"auto: nothing known about fast half precision on {device.type}"


def _cpu_bf16_instructions() -> dict[str, bool]:
    return {"AMX": torch.cpu._is_amx_tile_supported(), "AVX512-BF16": torch.cpu._is_avx512_bf16_supported()}


def gpu_precision(name: str, capability: tuple[int, int]) -> tuple[str, str]:
    """`auto` on a GPU: bf16 from Ampere on (A100, L4, H100), fp16 on Volta/Turing (V100, T4: fp16 tensor cores,
    no fast bf16), fp32 on older GPUs."""
    described = f"auto: {name}, compute capability {capability[0]}.{capability[1]}"
    if capability >= (8, 0):
        return "bf16", f"{described}: Ampere or newer, fast bf16"
    if capability >= (7, 0):
        return "fp16", f"{described}: fp16 tensor cores but no fast bf16"
    return "fp32", f"{described}: no fast half precision"


def parse_precision(precision: str) -> torch.dtype:
    """The torch dtype for `fp32`, `bf16` or `fp16` (`auto` is resolved first); anything else is an error."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise InvalidSetting("precision", f"must be one of {', '.join(DTYPES)}, got {precision!r}") from None
