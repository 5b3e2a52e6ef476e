"""Loading LongCLIP checkpoints into open_clip, and scoring exactly like the original code."""

import pytest
import torch
from reference_longclip import reference_score

from transforms.inputs.images import ImagePreprocessor, decode_image
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.model.architecture import LongCLIPArchitecture, build_model, merge_positional_tables, read_architecture
from transforms.model.device import pick_device
from transforms.model.formats import Checkpoint, CheckpointFormatError, read_checkpoint
from transforms.model.scorer import LongCLIPScorer

CAPTIONS = {
    "short": "a photo of a cat",
    "html_and_space": "  Two   dogs &amp; a\tball\non the grass ",
    "just_over_20_tokens": (
        "a small wooden boat with a white sail floats on a calm lake at dawn while birds fly above the trees"
    ),
    "around_77_tokens": " ".join(["a red kite flies high over the green hills near the old stone bridge"] * 5),
    "long_200_tokens": " ".join(f"detail number {i} is a bright blue square." for i in range(25)),
    "over_248_tokens": " ".join(
        f"sentence {i} describes yet another object in the busy market scene." for i in range(40)
    ),
    "unicode": "Ein Café in Zürich — 东京的夜景 🙂 naïve façade",
}


def _real_shapes(*, width_t, layers_t, width_v, layers_v, patch, grid, embed, context=248):
    """A shape-only (meta) state dict of a real-size checkpoint: architecture inference costs nothing."""
    sizes = {
        "positional_embedding": (context, width_t),
        "positional_embedding_res": (context, width_t),
        "text_projection": (width_t, embed),
        "visual.proj": (width_v, embed),
        "visual.conv1.weight": (width_v, 3, patch, patch),
        "visual.positional_embedding": (grid * grid + 1, width_v),
        "token_embedding.weight": (49408, width_t),
        "ln_final.weight": (width_t,),
        "transformer.resblocks.0.mlp.c_fc.weight": (4 * width_t, width_t),
        "visual.transformer.resblocks.0.mlp.c_fc.weight": (4 * width_v, width_v),
    }
    sizes.update({f"transformer.resblocks.{i}.attn.in_proj_weight": (3 * width_t, width_t) for i in range(layers_t)})
    sizes.update(
        {f"visual.transformer.resblocks.{i}.attn.in_proj_weight": (3 * width_v, width_v) for i in range(layers_v)}
    )
    return {key: torch.empty(shape, device="meta") for key, shape in sizes.items()}


@pytest.mark.parametrize(
    "shapes, expected",
    [
        (dict(width_t=768, layers_t=12, width_v=1024, layers_v=24, patch=14, grid=24, embed=768), (336, 768, 24, 248)),
        (dict(width_t=768, layers_t=12, width_v=1024, layers_v=24, patch=14, grid=16, embed=768), (224, 768, 24, 248)),
        (dict(width_t=512, layers_t=12, width_v=768, layers_v=12, patch=16, grid=14, embed=512), (224, 512, 12, 248)),
    ],
    ids=["LongCLIP-L-336px", "LongCLIP-L", "LongCLIP-B"],
)
def test_architecture_of_the_real_checkpoints(shapes, expected):
    checkpoint = Checkpoint(_real_shapes(**shapes), "meta", rounded_by_original_loader=True)
    arch = LongCLIPArchitecture.from_checkpoint(checkpoint)
    assert (arch.image_resolution, arch.embed_dim, arch.vision_layers, arch.context_length) == expected
    assert arch.text_layers == 12 and arch.vocab_size == 49408
    assert (arch.text_heads, arch.vision_heads) == (shapes["width_t"] // 64, shapes["width_v"] // 64)
    assert arch.text_mlp_ratio == arch.vision_mlp_ratio == 4 and arch.quick_gelu


def test_positional_tables_are_merged_at_row_20(longclip_state_dict):
    merged = merge_positional_tables(longclip_state_dict)
    assert "positional_embedding_res" not in merged
    table = merged["positional_embedding"]
    assert torch.equal(table[:20], longclip_state_dict["positional_embedding"][:20])
    assert torch.equal(table[20:], longclip_state_dict["positional_embedding_res"][20:])
    # The fixture's tables really differ, so a loader that used only one of them would be caught.
    assert not torch.equal(table[20:], longclip_state_dict["positional_embedding"][20:])


def test_model_matches_checkpoint_architecture(longclip_checkpoint):
    model = build_model(read_checkpoint(longclip_checkpoint))
    assert model.context_length == 248 and model.visual.image_size[0] == 32
    assert read_architecture(longclip_checkpoint).image_resolution == 32
    # QuickGELU, as OpenAI and LongCLIP weights need.
    assert type(model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


@pytest.mark.parametrize("caption", sorted(CAPTIONS))
def test_scores_equal_original_longclip(longclip_checkpoint, longclip_state_dict, good_images, caption):
    scorer = LongCLIPScorer.from_checkpoint(longclip_checkpoint, "cpu")
    preprocess = ImagePreprocessor(scorer.image_resolution)
    tokens = LongCLIPTokenizer(scorer.context_length)(CAPTIONS[caption])
    names = sorted(good_images)
    pixels = torch.stack([preprocess(decode_image(good_images[name].read_bytes())) for name in names])
    scores = scorer.score(pixels, [tokens.ids] * len(names))
    expected = [reference_score(longclip_state_dict, good_images[name], CAPTIONS[caption]) for name in names]
    for name, got, want in zip(names, scores, expected, strict=True):
        assert abs(got - want) < 1e-6, (name, got, want)
    assert len(set(round(s, 6) for s in scores)) > 1, "different images must score differently"


def test_openai_format_checkpoint_loads_at_context_77(openai_checkpoint, good_images):
    state_dict = torch.load(openai_checkpoint, weights_only=True)
    scorer = LongCLIPScorer.from_checkpoint(openai_checkpoint, "cpu")
    assert scorer.context_length == 77
    text = CAPTIONS["long_200_tokens"]
    tokens = LongCLIPTokenizer(77)(text)
    assert tokens.truncated
    pixels = ImagePreprocessor(scorer.image_resolution)(decode_image(good_images["rgb.png"].read_bytes()))
    got = scorer.score(pixels.unsqueeze(0), [tokens.ids])[0]
    assert abs(got - reference_score(state_dict, good_images["rgb.png"], text)) < 1e-6


def test_checkpoint_container_and_ddp_prefix_are_unwrapped(tmp_path, longclip_state_dict):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in longclip_state_dict.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.ckpt")
    assert set(read_checkpoint(tmp_path / "wrapped.ckpt").state_dict) == set(longclip_state_dict)


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointFormatError, match="weights_only=True.*Accepted: .*safetensors.*CLIPModel"):
        read_checkpoint(tmp_path / "garbage.pt")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointFormatError, match="missing visual.proj.*Accepted: "):
        build_model(read_checkpoint(tmp_path / "other.pt"))


def test_missing_cuda_is_an_error_not_a_silent_cpu_run():
    if torch.cuda.is_available():
        assert pick_device(None).type == "cuda"
    else:
        assert pick_device(None).type == "cpu"
        with pytest.raises(RuntimeError, match="--device cpu"):
            pick_device("cuda")
