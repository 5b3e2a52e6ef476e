"""Input sizes from a checkpoint's header: the machine building the pipeline never reads the weights."""

import io
import logging
import os
import shutil
import subprocess
import sys

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from tests.support.paths import REPO_ROOT
from transforms import CheckpointFormatError
from transforms.model.header import (
    InputSizes,
    _CountingReader,
    read_input_sizes,
    sizes_from_huggingface_config,
    sizes_from_stream,
)


def _read_counted(path) -> tuple[InputSizes, int]:
    with open(path, "rb") as raw:
        stream = _CountingReader(raw)
        return sizes_from_stream(stream, str(path)), stream.consumed


def test_local_checkpoints(longclip_checkpoint, openai_checkpoint):
    assert read_input_sizes(str(longclip_checkpoint)) == InputSizes(32, 248)
    assert read_input_sizes(str(openai_checkpoint)) == InputSizes(32, 77)


def test_torch_save_file_is_read_by_its_zip_directory_and_pickle_only(longclip_checkpoint):
    sizes, consumed = _read_counted(longclip_checkpoint)
    assert sizes == InputSizes(32, 248)
    assert consumed < longclip_checkpoint.stat().st_size / 100, consumed


def test_safetensors_file_is_read_by_its_header_only(tmp_path, longclip_state_dict):
    path = tmp_path / "longclip.safetensors"
    save_file({key: value.contiguous() for key, value in longclip_state_dict.items()}, path)
    sizes, consumed = _read_counted(path)
    assert sizes == InputSizes(32, 248)
    assert consumed < path.stat().st_size / 100, consumed


def test_a_module_state_dict_in_a_training_checkpoint(tmp_path):
    """`torch.save(model.state_dict())` pickles an OrderedDict with `_metadata`; trainers wrap it with more."""
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=48),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "step": 1200}, buffer)
    buffer.seek(0)
    assert sizes_from_stream(buffer, "epoch3.ckpt") == InputSizes(48, 77)


def test_what_cannot_be_read_from_a_header_is_refused_with_a_way_out():
    pickled_module = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), pickled_module)
    pickled_module.seek(0)
    with pytest.raises(CheckpointFormatError, match="torch.nn.modules.linear.Linear is not part of a plain state"):
        sizes_from_stream(pickled_module, "module.pt")
    legacy = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    legacy.seek(0)
    with pytest.raises(CheckpointFormatError, match="not a zip-format torch.save file"):
        sizes_from_stream(legacy, "legacy.pt")


def test_gs_checkpoint_is_not_copied_to_build_the_pipeline(
    gcs_bucket, longclip_checkpoint, tmp_path, caplog, monkeypatch
):
    gcs_bucket.blob("header/longclip-tiny.pt").upload_from_filename(longclip_checkpoint)
    uri = f"gs://{gcs_bucket.name}/header/longclip-tiny.pt"
    monkeypatch.setenv("LONGCLIP_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="transforms.model.header"):
        assert read_input_sizes(uri) == InputSizes(32, 248)
    assert not (tmp_path / "cache").exists(), "the launching machine must not copy the checkpoint"
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Read the input sizes")]
    read, total = [int(word) for word in message.split() if word.isdigit()][:2]
    assert total == longclip_checkpoint.stat().st_size and read < total / 100, message


def test_missing_gs_checkpoint_says_how_to_go_on_without_it(gcs_bucket):
    with pytest.raises(Exception, match="give image_resolution and context_length"):
        read_input_sizes(f"gs://{gcs_bucket.name}/no/such/model.pt")


def test_huggingface_config_sizes():
    config = {"vision_config": {"image_size": 336}, "text_config": {"max_position_embeddings": 248}}
    assert sizes_from_huggingface_config(config) == InputSizes(336, 248)
    assert sizes_from_huggingface_config({}) == InputSizes(224, 77)  # transformers' CLIP defaults


def test_hub_id_is_read_from_the_hub_cache_offline(tmp_path, longclip_checkpoint):
    repo = tmp_path / "hf" / "hub" / "models--BeichenZhang--LongCLIP-B"
    snapshot = repo / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    shutil.copy(longclip_checkpoint, snapshot / "longclip-B.pt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    code = "from transforms.model.header import read_input_sizes; print(read_input_sizes('BeichenZhang/LongCLIP-B'))"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "InputSizes(image_resolution=32, context_length=248)"


def test_hub_repo_whose_config_alone_is_cached(tmp_path):
    """Reading a CLIPModel repo's sizes downloads only config.json; the next build must not mistake that partial
    snapshot for the checkpoint."""
    repo = tmp_path / "hf" / "hub" / "models--zer0int--LongCLIP-L-Diffusers"
    snapshot = repo / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(
        '{"model_type": "clip", "vision_config": {"image_size": 224}, "text_config": {"max_position_embeddings": 248}}'
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    code = (
        "from transforms.model.header import read_input_sizes; print(read_input_sizes('zer0int/LongCLIP-L-Diffusers'))"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "InputSizes(image_resolution=224, context_length=248)"
