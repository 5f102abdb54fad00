"""HPSv2 / HPSv2.1 (Wu et al., 2023): OpenCLIP ViT-H/14 fine-tuned on human preferences, on transformers' CLIP.

The published checkpoints (``HPS_v2_compressed.pt``, ``HPS_v2.1_compressed.pt``) are ``{"state_dict":
…}`` pickles of an OpenCLIP ``CLIP`` (tensors only, so ``torch.load(weights_only=True)`` reads them).
OpenCLIP's ViT is the same network as transformers' ``CLIPModel``, so the keys map one to one
(:func:`openclip_to_transformers`), with three changes of form:

* ``attn.in_proj_weight`` / ``in_proj_bias`` (q, k and v stacked, as ``nn.MultiheadAttention`` keeps
  them) are split into ``q_proj``, ``k_proj`` and ``v_proj``;
* ``visual.proj`` and ``text_projection`` are matrices applied as ``x @ P``; ``nn.Linear`` stores ``Pᵀ``;
* ``attn_mask`` (the causal mask, a buffer in older OpenCLIP files) is dropped: ``CLIPTextModel`` builds it.

The architecture is read from the tensor shapes; ViT-H/14 uses exact GELU (``force_quick_gelu=False``
in HPSv2's scorer) and 16 heads in both towers. Text pooling agrees too: OpenCLIP takes the
end-of-text token by ``argmax`` of the ids, transformers by the first end-of-text id.

Score, as ``hpsv2.score``: the cosine of the normalised image and prompt embeddings (about 0.2–0.35),
without a logit scale. Images are prepared as HPSv2's ``preprocess_val``: the long side resized to 224
(bicubic), padded to a square with black, CLIP mean/std. The tokenizer is CLIP's BPE vocabulary, which
UniFL ships (OpenCLIP's ``ftfy`` text repair is not applied).

``path`` (kind ``hpsv2``) is the checkpoint file, or ``"checkpoint=FILE;tokenizer=FOLDER"`` for another
CLIP tokenizer folder.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ...weight_files import WeightFileError, parse_parts, read_weights
from ..registry import register_reward_model
from .clip_models import ClipSimilarity, build_clip, load_clip_tokenizer

CHECKPOINT = "an OpenCLIP ViT checkpoint such as HPS_v2_compressed.pt or HPS_v2.1_compressed.pt"

_RENAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.", "transformer.resblocks.": "text_model.encoder.layers."}
_BLOCK_RENAMES = {
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "attn.out_proj.": "self_attn.out_proj.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
_DROPPED = ("attn_mask",)
_REQUIRED = ("visual.conv1.weight", "visual.proj", "token_embedding.weight", "text_projection")


def openclip_to_transformers(state: Mapping[str, torch.Tensor], path: str = "") -> dict[str, torch.Tensor]:
    """An OpenCLIP ``CLIP`` state dict (ViT image tower) in transformers' ``CLIPModel`` key layout."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key in _RENAMES:
            converted[_RENAMES[key]] = value
        elif key in _TRANSPOSED:
            converted[_TRANSPOSED[key]] = value.t().contiguous()
        else:
            block = _convert_block_key(key, value)
            if block is None:
                unknown.append(key)
            else:
                converted.update(block)
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise WeightFileError(f"{path}: has no {', '.join(missing)}; expected {CHECKPOINT}, with both the image and the text tower.")
    if unknown:
        raise WeightFileError(f"{path}: has keys an OpenCLIP ViT does not ({', '.join(sorted(unknown)[:4])}); expected {CHECKPOINT}.")
    return converted


def _convert_block_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    tower = next((prefix for prefix in _TOWERS if key.startswith(prefix)), None)
    if tower is None:
        return None
    index, _, rest = key[len(tower):].partition(".")
    target = f"{_TOWERS[tower]}{index}.self_attn."
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        suffix = "weight" if rest.endswith("weight") else "bias"
        q, k, v = value.chunk(3, dim=0)
        return {f"{target}q_proj.{suffix}": q, f"{target}k_proj.{suffix}": k, f"{target}v_proj.{suffix}": v}
    old = next((name for name in _BLOCK_RENAMES if rest.startswith(name)), None)
    if old is None:
        return None
    return {f"{_TOWERS[tower]}{index}.{_BLOCK_RENAMES[old]}{rest[len(old):]}": value}


@register_reward_model("hpsv2")
def load_hpsv2(path: str) -> ClipSimilarity:
    parts = parse_parts(path, ("checkpoint", "tokenizer")) or {"checkpoint": path}
    if "checkpoint" not in parts:
        raise WeightFileError(f"{path!r}: names no checkpoint; expected 'checkpoint=FILE' optionally followed by ';tokenizer=FOLDER'.")
    state, metadata = read_weights(parts["checkpoint"], CHECKPOINT)
    tokenizer = load_clip_tokenizer(parts.get("tokenizer"))
    clip = build_clip(openclip_to_transformers(state, parts["checkpoint"]), parts["checkpoint"], tokenizer, hidden_act="gelu", expected=CHECKPOINT)
    model = ClipSimilarity(clip, tokenizer, scale=1.0, fit="pad", source=parts.get("tokenizer") or parts["checkpoint"])
    if "unifl.alpha" in metadata:
        model.alpha = float(metadata["unifl.alpha"])
    return model
