"""Every accepted checkpoint format loads exactly, and fp32 scores equal each format's original loader."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.cli import run_job
from tests.support.reference_longclip import reference_score
from transforms.inputs.images import ImagePreprocessor, decode_image
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.model.architecture import read_architecture
from transforms.model.formats import CheckpointFormatError, read_checkpoint
from transforms.model.locate import resolve_checkpoint
from transforms.model.scorer import LongCLIPScorer, pad_tokens
from transforms.testing.captions import CAPTIONS
from transforms.testing.checkpoints import save_checkpoint, save_huggingface_clip


def _pairs(scorer, good_images):
    """Every image kind against every caption length."""
    preprocess = ImagePreprocessor(scorer.image_resolution)
    tokenizer = LongCLIPTokenizer(scorer.context_length)
    names = sorted(good_images)
    pixels = torch.stack([preprocess(decode_image(good_images[name].read_bytes())) for name in names])
    captions = [CAPTIONS[key] for key in sorted(CAPTIONS)]
    pairs = [(i, c) for i in range(len(names)) for c in range(len(captions))]
    ids = [tokenizer(captions[c]).ids for _, c in pairs]
    return names, pixels, captions, pairs, ids


def test_fixture_weights_are_not_fp16_representable(longclip_state_dict):
    # Otherwise rounding would change nothing and the tests below could not tell the modes apart.
    weight = longclip_state_dict["transformer.resblocks.0.mlp.c_fc.weight"]
    assert not torch.equal(weight, weight.half().float())


@pytest.mark.slow
def test_default_rounds_like_longclip_and_stored_weights_keep_the_file(
    longclip_checkpoint, longclip_state_dict, good_images
):
    """Default: the original evaluator's scores (fp16-rounded weights) within 1e-6 over every image
    kind and caption length; `stored_weights`: the same formulas on the stored values; and the two differ."""
    default = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")
    stored = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu", stored_weights=True)
    names, pixels, captions, pairs, ids = _pairs(default, good_images)
    index = [i for i, _ in pairs]
    got_default = default.score(pixels, ids, index)
    got_stored = stored.score(pixels, ids, index)
    worst_default = worst_stored = 0.0
    for (i, c), d, s in zip(pairs, got_default, got_stored, strict=True):
        path, text = good_images[names[i]], captions[c]
        worst_default = max(worst_default, abs(d - reference_score(longclip_state_dict, path, text)))
        worst_stored = max(worst_stored, abs(s - reference_score(longclip_state_dict, path, text, stored_weights=True)))
    assert worst_default < 1e-6 and worst_stored < 1e-6, (worst_default, worst_stored)
    apart = max(abs(d - s) for d, s in zip(got_default, got_stored, strict=True))
    assert apart > 1e-6, "rounding must change the scores of a checkpoint that is not fp16-representable"


def test_safetensors_file_scores_like_the_pt_file(tmp_path, longclip_checkpoint, longclip_state_dict, good_images):
    path = tmp_path / "longclip-tiny.safetensors"
    save_file({key: value.contiguous() for key, value in longclip_state_dict.items()}, path)
    assert resolve_checkpoint(str(path)) == path
    assert read_architecture(path) == read_architecture(longclip_checkpoint)
    from_pt = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")
    from_safetensors = LongCLIPScorer.from_checkpoint(path, "cpu")
    _, pixels, _, pairs, ids = _pairs(from_pt, good_images)
    index = [i for i, _ in pairs]
    assert from_safetensors.score(pixels, ids, index) == from_pt.score(pixels, ids, index)


@pytest.fixture(scope="module")
def huggingface_folder(tmp_path_factory):
    return save_huggingface_clip(tmp_path_factory.mktemp("hf") / "LongCLIP-tiny-HF", seed=3)


def test_huggingface_clipmodel_folder_matches_transformers(huggingface_folder, good_images):
    """Parity reference: transformers' own CLIPModel on the same pixels and token ids, weights unrounded."""
    from transformers import CLIPModel

    assert set(os.listdir(huggingface_folder)) == {"config.json", "model.safetensors"}
    assert resolve_checkpoint(str(huggingface_folder)) == huggingface_folder
    scorer = LongCLIPScorer.from_checkpoint(huggingface_folder, "cpu")
    assert scorer.context_length == 248 and scorer.image_resolution == 32
    assert scorer.model.transformer.resblocks[0].attn.num_heads == 2  # from config.json, not width // 64
    names, pixels, captions, pairs, ids = _pairs(scorer, good_images)
    hf = CLIPModel.from_pretrained(huggingface_folder).eval()
    normalised = (pixels.float() / 255 - scorer._mean) / scorer._std
    with torch.inference_mode():
        image = hf.get_image_features(pixel_values=normalised).pooler_output
        text = hf.get_text_features(input_ids=pad_tokens(ids, 248)).pooler_output
        ours_image, ours_text = scorer.encode_images(pixels), scorer.encode_texts(ids)
    assert (ours_image - image).abs().max() < 1e-5 and (ours_text - text).abs().max() < 1e-5
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    want = [((image[i] @ text[n] + 1) / 2).clamp(0, 1).item() for n, (i, _) in enumerate(pairs)]
    got = scorer.score(pixels, ids, [i for i, _ in pairs])
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5
    # transformers does not round, so neither do we, whatever stored_weights says.
    assert (
        LongCLIPScorer.from_checkpoint(huggingface_folder, "cpu", stored_weights=True).score(
            pixels, ids, [i for i, _ in pairs]
        )
        == got
    )


def test_folder_with_huggingface_layout_wins_over_loose_files(tmp_path, huggingface_folder):
    folder = tmp_path / "repo"
    shutil.copytree(huggingface_folder, folder)
    (folder / "longclip-other-finetune.pt").write_bytes(b"x")
    assert resolve_checkpoint(str(folder)) == folder


def test_huggingface_weights_file_alone_needs_its_config(tmp_path, huggingface_folder):
    shutil.copy(huggingface_folder / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointFormatError, match="no config.json lies beside it"):
        read_checkpoint(tmp_path / "model.safetensors")
    assert read_checkpoint(huggingface_folder / "model.safetensors").source == str(huggingface_folder)


def test_unknown_formats_name_the_accepted_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match=r"'siglip' model, not a CLIPModel.*Accepted: .*\.pt.*safetensors"):
        read_checkpoint(tmp_path)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointFormatError, match=r"cannot read .* as safetensors.*Accepted: "):
        read_checkpoint(tmp_path / "broken.safetensors")


@pytest.mark.slow
def test_hub_repo_with_huggingface_layout_is_served_from_the_hub_cache(tmp_path, huggingface_folder, good_images):
    """A Hub id whose repo holds a CLIPModel picks config.json + weights, as a folder does: run as a user
    would (`python -m pipeline --model org/name`), offline, from the cache `hf download` leaves behind."""
    repo = tmp_path / "hf" / "hub" / "models--someone--LongCLIP-tiny-HF"
    snapshot = repo / "snapshots" / ("ab" * 20)
    shutil.copytree(huggingface_folder, snapshot)
    save_checkpoint(snapshot / "longclip-extra.pt", seed=9)  # a loose .pt beside it must not be picked
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    lines = [
        {"image_path": str(good_images[name]), "text": CAPTIONS["long_200_tokens"]} for name in ("rgb.jpg", "la.png")
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored")]
    done = run_job(
        *args,
        *["--model", "someone/LongCLIP-tiny-HF"],
        timeout=300,
        env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = [json.loads(line) for f in (tmp_path / "out").glob("scored-*.jsonl") for line in f.open()]
    scorer = LongCLIPScorer.from_checkpoint(huggingface_folder, "cpu")
    tokenizer = LongCLIPTokenizer(248)
    preprocess = ImagePreprocessor(32)
    for record in scored:
        pixels = preprocess(decode_image(Path(record["image_path"]).read_bytes())).unsqueeze(0)
        want = scorer.score(pixels, [tokenizer(record["text"]).ids])[0]
        assert abs(record["longclip_score"] - want) < 1e-6 and record["longclip_score_error"] is None
    assert len(scored) == 2


def test_checkpoint_container_and_ddp_prefix_are_unwrapped(tmp_path, longclip_state_dict):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in longclip_state_dict.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.ckpt")
    assert set(read_checkpoint(tmp_path / "wrapped.ckpt").state_dict) == set(longclip_state_dict)


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointFormatError, match="weights_only=True.*Accepted: .*safetensors.*CLIPModel"):
        read_checkpoint(tmp_path / "garbage.pt")
