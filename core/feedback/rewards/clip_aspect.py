"""``clip-reward``: an aspect reward model made of a frozen local CLIP and a trained head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...weight_files import parse_parts
from ..registry import register_reward_model
from .clip_models import ClipSimilarity, load_clip, load_clip_tokenizer
from .clip_preprocess import clip_preprocess
from .files import load_reward_file


class ClipAspectReward(nn.Module):
    """A frozen local CLIP with a trainable head on ``[image, text, image ⊙ text]`` embeddings.

    Only the head (a few hundred K parameters) is trained and saved (the file holds ``head`` alone); the
    CLIP folder it sits on is recorded in the file, so the reward loads from the two together.
    """

    def __init__(self, clip_folder: str, hidden: int = 256):
        super().__init__()
        self.config = {"clip_folder": str(Path(clip_folder).resolve()), "hidden": hidden}
        self.alpha: float | None = None
        clip = load_clip(clip_folder).requires_grad_(False)
        folder = Path(clip_folder)
        tokenizer = load_clip_tokenizer(folder if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file() else None)
        self.backbone = ClipSimilarity(clip, tokenizer, source=str(folder))
        width = clip.config.projection_dim
        self.head = nn.Sequential(nn.Linear(3 * width, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        clip, b = self.backbone.clip, self.backbone
        pixels = clip_preprocess(images, b.image_size, fit=b.fit)
        image = F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output).float(), dim=-1)
        tokens = b.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=b.max_length, return_tensors="pt").to(pixels.device)
        text = F.normalize(clip.text_projection(clip.text_model(**tokens).pooler_output).float(), dim=-1)
        return self.head(torch.cat([image, text, image * text], dim=-1)).squeeze(-1)


@register_reward_model("clip-reward")
def load_clip_reward(path: str) -> nn.Module:
    """A ``train-reward --backbone clip:…`` file; its CLIP folder is read from the file (or ``file=…;clip=…``)."""
    parts = parse_parts(path, ("file", "clip")) or {"file": path}
    state, meta = load_reward_file(parts["file"])
    config = json.loads(meta["unifl.config"])
    if "clip" in parts:
        config["clip_folder"] = parts["clip"]
    model = ClipAspectReward(**config)
    model.head.load_state_dict(state)
    model.alpha = float(meta["unifl.alpha"])
    return model
