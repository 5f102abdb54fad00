"""PickScore and CLIP score: how well an image matches its prompt, by a CLIP model from a local folder.

* ``pickscore``: PickScore_v1 (Kirstain et al., 2023), CLIP ViT-H/14 fine-tuned on Pick-a-Pic human
  preferences. Its score is the one its README computes, ``logit_scale.exp() × cos(text, image)``
  (about 18–24 for ordinary images).
* ``clip-score``: any CLIP model, ``100 × cos(text, image)``, the scale torchmetrics reports CLIP score
  on, without its ``max(·, 0)``: the clamp would stop the gradient exactly for images that do not
  match their prompt, which is what a reward should improve.

``path`` is a Hugging Face folder (``config.json`` with ``model_type`` ``"clip"`` and its weights, e.g.
``yuvalkirstain/PickScore_v1`` or ``openai/clip-vit-large-patch14``). Tokenizer files in the folder are
used when present, otherwise CLIP's vocabulary shipped with UniFL (all CLIPs share it). A tokenizer kept
elsewhere: ``"model=/models/PickScore_v1;tokenizer=/models/CLIP-ViT-H-14-laion2B-s32B-b79K"``.
Images are prepared as CLIPProcessor does: short side to 224 (bicubic), centre crop, CLIP mean/std.
"""

from __future__ import annotations

from pathlib import Path

from ...weight_files import WeightFileError, parse_parts
from ..registry import register_reward_model
from .clip_models import ClipSimilarity, has_tokenizer_files, load_clip, load_clip_tokenizer

CLIP_SCORE_SCALE = 100.0


@register_reward_model("pickscore")
def load_pickscore(path: str) -> ClipSimilarity:
    return load_clip_similarity(path, scale=None)


@register_reward_model("clip-score")
def load_clip_score(path: str) -> ClipSimilarity:
    return load_clip_similarity(path, scale=CLIP_SCORE_SCALE)


def load_clip_similarity(path: str, scale: float | None) -> ClipSimilarity:
    """A :class:`ClipSimilarity` from a CLIP folder (or ``model=…;tokenizer=…``); ``scale=None`` = the model's logit scale."""
    parts = parse_parts(path, ("model", "tokenizer")) or {"model": path}
    if "model" not in parts:
        raise WeightFileError(f"{path!r}: names no model; expected 'model=FOLDER' optionally followed by ';tokenizer=FOLDER'.")
    clip = load_clip(parts["model"])
    tokenizer_folder = parts.get("tokenizer")
    if tokenizer_folder is None and has_tokenizer_files(Path(parts["model"])):
        tokenizer_folder = parts["model"]
    return ClipSimilarity(clip, load_clip_tokenizer(tokenizer_folder), scale=scale, source=tokenizer_folder or parts["model"])
