"""Random-weight checkpoints of the real LongCLIP architectures, in the exact LongCLIP file format.

Timing only: the weights are random, the shapes (and so the cost) are those of the released models.
The generator is the one the tests use (tests/checkpoints.py), so the format cannot drift.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from transforms.testing.checkpoints import make_state_dict

ARCHITECTURES: dict[str, dict[str, int]] = {
    "B16": dict(
        embed_dim=512, text_width=512, text_layers=12, vision_width=768, vision_layers=12, patch_size=16, grid=14
    ),
    "L14-336": dict(
        embed_dim=768, text_width=768, text_layers=12, vision_width=1024, vision_layers=24, patch_size=14, grid=24
    ),
    # Small enough that Beam, not the model, dominates: for the memory run over many records.
    "tiny": dict(embed_dim=32, text_width=64, text_layers=2, vision_width=64, vision_layers=2, patch_size=8, grid=4),
}


def cache_dir() -> Path:
    """`$LONGCLIP_BENCH_CACHE`, else `~/.cache/longclip_beam/bench`: generated checkpoints and images."""
    default = Path.home() / ".cache" / "longclip_beam" / "bench"
    return Path(os.environ.get("LONGCLIP_BENCH_CACHE") or default)


def checkpoint(architecture: str) -> Path:
    """The cached random checkpoint of `architecture`, generated (torch.save of a state dict) on first use."""
    path = cache_dir() / f"longclip-{architecture}-random.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(make_state_dict(seed=0, **ARCHITECTURES[architecture]), partial)
        partial.replace(path)
    return path
