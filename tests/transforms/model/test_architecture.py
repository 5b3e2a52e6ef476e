"""Building open_clip models from LongCLIP/OpenAI checkpoints: architecture from shapes, tables merged."""

import pytest
import torch

from transforms.model.architecture import LongCLIPArchitecture, build_model, merge_positional_tables, read_architecture
from transforms.model.formats import Checkpoint, CheckpointFormatError, read_checkpoint


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


def test_a_state_dict_of_another_model_is_a_clear_error(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointFormatError, match="missing visual.proj.*Accepted: "):
        build_model(read_checkpoint(tmp_path / "other.pt"))
