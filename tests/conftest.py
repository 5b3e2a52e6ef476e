"""Shared fixtures: tiny checkpoints in the real LongCLIP/OpenAI format, and real image files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import save_checkpoint  # noqa: E402
from corpus import write_bad_images, write_good_images  # noqa: E402


@pytest.fixture(scope="session")
def longclip_checkpoint(tmp_path_factory) -> Path:
    """A tiny LongCLIP-format checkpoint (248-row tables, both present and different)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt", seed=1)


@pytest.fixture(scope="session")
def longclip_state_dict(longclip_checkpoint) -> dict:
    return torch.load(longclip_checkpoint, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory) -> Path:
    """A tiny plain OpenAI-CLIP ViT checkpoint: 77-row table, no positional_embedding_res."""
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "clip-tiny.pt", seed=2, context_length=77, with_residual_table=False
    )


@pytest.fixture(scope="session")
def good_images(tmp_path_factory) -> dict[str, Path]:
    return write_good_images(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="session")
def bad_images(tmp_path_factory) -> dict[str, Path]:
    return write_bad_images(tmp_path_factory.mktemp("bad"))
