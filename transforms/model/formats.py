"""Reading a checkpoint, whatever it was saved as, into one OpenAI-CLIP-format state dict.

Accepted formats:
- a PyTorch state dict (`.pt`, `.bin`, `.ckpt`), as LongCLIP's training and OpenAI CLIP save it;
- the same state dict saved with safetensors (`.safetensors`), read without pickle;
- a Hugging Face `CLIPModel` folder (`config.json` and `model.safetensors` or `pytorch_model.bin`,
  possibly sharded), as `save_pretrained` writes it, e.g. LongCLIP conversions with 248 positions.

Each is mapped onto OpenAI's key names, which open_clip's CLIP uses too. What the original loader of
each format does to the values is recorded, so that the model can be built to score like it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from transforms.reasons import first_line

STATE_DICT_SUFFIXES = (".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
HF_CONFIG = "config.json"
# What `save_pretrained` writes, in the order transformers itself looks for them.
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ACCEPTED_FORMATS = (
    "a LongCLIP/OpenAI-CLIP state dict saved with torch.save (.pt, .bin, .ckpt) or with safetensors "
    "(.safetensors), or a Hugging Face CLIPModel folder (config.json with model.safetensors or pytorch_model.bin)"
)
# LongCLIP adds this second text positional table to OpenAI's keys.
RESIDUAL_TABLE = "positional_embedding_res"


class CheckpointFormatError(ValueError):
    """The file or folder is not a LongCLIP / CLIP ViT checkpoint in a format this package reads."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's tensors under OpenAI-CLIP key names, plus what the state dict cannot say.

    `text_heads`/`vision_heads`/`quick_gelu` are None where they follow OpenAI's rules (heads =
    width // 64, QuickGELU). `rounded_by_original_loader` says whether the format's own loader
    (LongCLIP's `load`, OpenAI's `clip.load`) rounds the weights to fp16 before scoring.
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    rounded_by_original_loader: bool
    text_heads: Optional[int] = None
    vision_heads: Optional[int] = None
    quick_gelu: bool = True


def read_checkpoint(path: Union[str, Path], *, shapes_only: bool = False) -> Checkpoint:
    """Reads the checkpoint at `path` (a file, or a Hugging Face folder).

    With `shapes_only`, tensors may be memory-mapped or on the meta device: enough to read the
    architecture without reading the weights.
    """
    path = Path(path)
    if path.is_dir():
        return _read_huggingface_folder(path, shapes_only)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        tensors = _read_safetensors(path, shapes_only)
        if any(key.startswith("text_model.") for key in tensors):
            if not (path.parent / HF_CONFIG).is_file():
                raise CheckpointFormatError(
                    f"{path} holds Hugging Face CLIPModel weights but no {HF_CONFIG} lies beside it; "
                    "pass the folder save_pretrained wrote (config.json + model.safetensors)"
                )
            return _read_huggingface_folder(path.parent, shapes_only, weights=path)
        return Checkpoint(unwrap_state_dict(tensors, path), str(path), rounded_by_original_loader=True)
    return Checkpoint(
        unwrap_state_dict(_torch_load(path, shapes_only), path), str(path), rounded_by_original_loader=True
    )


def _torch_load(path: Path, shapes_only: bool) -> object:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=shapes_only)
        except RuntimeError:
            if not shapes_only:
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped
    except Exception as exc:
        raise CheckpointFormatError(
            f"cannot load {path} as a PyTorch state dict with weights_only=True ({type(exc).__name__}: "
            f"{first_line(exc)}). Accepted: {ACCEPTED_FORMATS}; not TorchScript archives or pickled modules."
        ) from exc


def _read_safetensors(path: Path, shapes_only: bool) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if not shapes_only:
            return load_file(path, device="cpu")
        with safe_open(path, framework="pt") as handle:
            return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {path} as safetensors ({exc}). Accepted: {ACCEPTED_FORMATS}") from exc


def unwrap_state_dict(loaded: object, path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """The state dict inside common containers (`{"state_dict": ...}`, DDP's `module.` prefix)."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CheckpointFormatError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return {key.removeprefix("module."): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}


def _read_huggingface_folder(folder: Path, shapes_only: bool, weights: Optional[Path] = None) -> Checkpoint:
    config_path = folder / HF_CONFIG
    if not config_path.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:20]) or "nothing"
        raise CheckpointFormatError(
            f"folder {folder} has no {HF_CONFIG} (it holds: {present}). Accepted: {ACCEPTED_FORMATS}"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {config_path}: {exc}") from exc
    model_type = config.get("model_type")
    if model_type != "clip" and "CLIPModel" not in (config.get("architectures") or []):
        raise CheckpointFormatError(
            f"{config_path} describes a {model_type!r} model, not a CLIPModel. Accepted: {ACCEPTED_FORMATS}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for file in [weights] if weights else _weight_files(folder):
        if file.suffix == SAFETENSORS_SUFFIX:
            tensors.update(_read_safetensors(file, shapes_only))
        else:
            tensors.update(unwrap_state_dict(_torch_load(file, shapes_only), file))
    text_config = config.get("text_config") or config.get("text_config_dict") or {}
    vision_config = config.get("vision_config") or config.get("vision_config_dict") or {}
    # transformers' own defaults for CLIPTextConfig / CLIPVisionConfig, where a config leaves them out.
    activations = {text_config.get("hidden_act", "quick_gelu"), vision_config.get("hidden_act", "quick_gelu")}
    if activations not in ({"quick_gelu"}, {"gelu"}):
        raise CheckpointFormatError(f"{config_path}: activations {sorted(activations)} are not supported")
    for part in (text_config, vision_config):
        if part.get("layer_norm_eps", 1e-5) != 1e-5:
            raise CheckpointFormatError(f"{config_path}: layer_norm_eps {part['layer_norm_eps']} is not supported")
    return Checkpoint(
        _openai_keys_from_huggingface(tensors, str(folder)),
        str(folder),
        # transformers uses the stored values as they are.
        rounded_by_original_loader=False,
        text_heads=int(text_config.get("num_attention_heads", 8)),
        vision_heads=int(vision_config.get("num_attention_heads", 12)),
        quick_gelu=activations == {"quick_gelu"},
    )


def _weight_files(folder: Path) -> list[Path]:
    for name in HF_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / shard for shard in sorted(set(weight_map.values()))]
    raise CheckpointFormatError(f"folder {folder} has {HF_CONFIG} but none of {', '.join(HF_WEIGHTS)}")


_HF_BLOCK = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _openai_keys_from_huggingface(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Renames transformers' CLIPModel weights to OpenAI's keys: q/k/v joined into `in_proj`, projections
    transposed (HF keeps them as Linear weights). Values are not changed."""
    try:
        out = {
            "token_embedding.weight": tensors["text_model.embeddings.token_embedding.weight"],
            "positional_embedding": tensors["text_model.embeddings.position_embedding.weight"],
            "ln_final.weight": tensors["text_model.final_layer_norm.weight"],
            "ln_final.bias": tensors["text_model.final_layer_norm.bias"],
            "text_projection": tensors["text_projection.weight"].T,
            "visual.class_embedding": tensors["vision_model.embeddings.class_embedding"],
            "visual.conv1.weight": tensors["vision_model.embeddings.patch_embedding.weight"],
            "visual.positional_embedding": tensors["vision_model.embeddings.position_embedding.weight"],
            "visual.ln_pre.weight": tensors["vision_model.pre_layrnorm.weight"],
            "visual.ln_pre.bias": tensors["vision_model.pre_layrnorm.bias"],
            "visual.ln_post.weight": tensors["vision_model.post_layernorm.weight"],
            "visual.ln_post.bias": tensors["vision_model.post_layernorm.bias"],
            "visual.proj": tensors["visual_projection.weight"].T,
        }
        if "logit_scale" in tensors:
            out["logit_scale"] = tensors["logit_scale"]
        for hf_prefix, prefix in (("text_model", "transformer"), ("vision_model", "visual.transformer")):
            layers = {int(key.split(".")[3]) for key in tensors if key.startswith(f"{hf_prefix}.encoder.layers.")}
            for i in sorted(layers):
                hf, ours = f"{hf_prefix}.encoder.layers.{i}", f"{prefix}.resblocks.{i}"
                for kind in ("weight", "bias"):
                    out[f"{ours}.attn.in_proj_{kind}"] = torch.cat(
                        [tensors[f"{hf}.self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
                    )
                    for hf_name, name in _HF_BLOCK.items():
                        out[f"{ours}.{name}.{kind}"] = tensors[f"{hf}.{hf_name}.{kind}"]
    except KeyError as exc:
        raise CheckpointFormatError(f"{source}: Hugging Face CLIPModel weights without {exc.args[0]}") from None
    return out
