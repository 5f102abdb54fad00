"""The LAION aesthetic predictor: CLIP ViT-L/14 image embedding → small head → an aesthetic score (about 1–10).

It is the aesthetic scorer behind LAION-Aesthetics and most Stable Diffusion fine-tunes. Two heads exist,
both taking the L2-normalised projected CLIP image embedding (768-d for ViT-L/14):

* ``sac+logos+ava1-l14-linearMSE.pth`` (christophschuhmann/improved-aesthetic-predictor, "v2"): an
  MLP saved as ``layers.0`` Linear(768, 1024), ``layers.1`` Dropout, ``layers.2`` Linear(1024, 128),
  ``layers.3`` Dropout, ``layers.4`` Linear(128, 64), ``layers.5`` Dropout, ``layers.6`` Linear(64, 16),
  ``layers.7`` Linear(16, 1). There is no activation between the layers (the original's ReLUs are
  commented out), so it is an affine map; it is kept layer by layer so the file loads as published.
* ``sa_0_4_vit_l_14_linear.pth`` (LAION-AI/aesthetic-predictor, "v1"): one Linear(768, 1), keys
  ``weight`` and ``bias``.

Either may also be a ``.safetensors`` with the same keys; its ``unifl.alpha`` metadata, if present,
becomes the model's hinge threshold ``alpha``. Widths are read from the file, not assumed.

``path`` (kind ``laion-aesthetic``) is either a folder::

    laion-aesthetic/
      clip/                              openai/clip-vit-large-patch14 as a Hugging Face folder
                                         (or clip.safetensors: CLIPModel or vision-with-projection weights)
      sac+logos+ava1-l14-linearMSE.pth   the head: the one other weights file in the folder

or names the two parts, which may live anywhere: ``"clip=/models/clip-vit-large-patch14;head=/models/sac+logos+ava1-l14-linearMSE.pth"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ...weight_files import WEIGHT_SUFFIXES, WeightFileError, existing_path, load_exactly, parse_parts, read_weights, shape_of
from ..registry import register_reward_model
from .clip_models import load_clip_vision
from .clip_preprocess import clip_preprocess

HEAD = "a LAION aesthetic head (improved-aesthetic-predictor MLP with keys layers.0 … layers.7, or the linear head with keys weight, bias)"
LAYOUT = "a folder holding clip/ (or clip.safetensors) and one head file, or 'clip=PATH;head=PATH'"
_MLP_LINEARS = (0, 2, 4, 6, 7)


class AestheticMLP(nn.Module):
    """improved-aesthetic-predictor's ``MLP`` with its layer indices (ImageReward's head has the same layout).

    ``widths`` = (input, hidden 1, hidden 2, hidden 3, hidden 4): (768, 1024, 128, 64, 16) as published.
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        w_in, w1, w2, w3, w4 = widths
        self.layers = nn.Sequential(
            nn.Linear(w_in, w1), nn.Dropout(0.2), nn.Linear(w1, w2), nn.Dropout(0.2), nn.Linear(w2, w3), nn.Dropout(0.1), nn.Linear(w3, w4), nn.Linear(w4, 1)
        )

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], path: str | Path, expected: str) -> "AestheticMLP":
        """The MLP holding ``state`` (keys ``layers.{0,2,4,6,7}.*``), widths read from it."""
        widths = [shape_of(state, "layers.0.weight", path, expected)[1]]
        widths += [shape_of(state, f"layers.{i}.weight", path, expected)[0] for i in _MLP_LINEARS[:-1]]
        mlp = cls(widths)
        load_exactly(mlp, state, path, expected)
        return mlp


class LaionAesthetic(nn.Module):
    """``images, prompts → aesthetic score [B]``: CLIP image embedding, L2-normalised, through the head."""

    def __init__(self, vision: nn.Module, head: nn.Module):
        super().__init__()
        self.vision = vision
        self.head = head
        self.image_size = vision.config.image_size

    def forward(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        weight = self.vision.visual_projection.weight
        pixels = clip_preprocess(images, self.image_size).to(weight.dtype)
        embeddings = self.vision(pixel_values=pixels).image_embeds.float()
        # The original divides by the norm, leaving an all-zero embedding as it is.
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.head(embeddings).squeeze(-1)


def load_head(path: str | Path) -> tuple[nn.Module, dict[str, str]]:
    """The head in either published layout, and the file's metadata."""
    state, metadata = read_weights(path, HEAD)
    if set(state) == {"weight", "bias"}:
        out_features, in_features = shape_of(state, "weight", path, HEAD)
        if out_features != 1:
            raise WeightFileError(f"{path}: its weight is {out_features}×{in_features}; expected {HEAD} giving one score.")
        head = nn.Linear(in_features, 1)
        load_exactly(head, state, path, HEAD)
        return head, metadata
    if not any(key.startswith("layers.") for key in state):
        raise WeightFileError(f"{path}: has keys like {', '.join(sorted(state)[:3])}; expected {HEAD}.")
    return AestheticMLP.from_state_dict(state, path, HEAD), metadata


@register_reward_model("laion-aesthetic")
def load_laion_aesthetic(path: str) -> LaionAesthetic:
    clip_path, head_path = _locate(path)
    vision = load_clip_vision(clip_path)
    head, metadata = load_head(head_path)
    in_features = head.in_features
    if in_features != vision.config.projection_dim:
        raise WeightFileError(
            f"{head_path}: the head takes {in_features}-d image embeddings but {clip_path} gives "
            f"{vision.config.projection_dim}-d ones. LAION's heads belong with CLIP ViT-L/14 (768-d): pass that CLIP model."
        )
    model = LaionAesthetic(vision, head)
    if "unifl.alpha" in metadata:
        model.alpha = float(metadata["unifl.alpha"])
    return model


def _locate(path: str) -> tuple[Path, Path]:
    parts = parse_parts(path, ("clip", "head"))
    if parts is not None:
        if set(parts) != {"clip", "head"}:
            raise WeightFileError(f"{path!r}: names {', '.join(parts)}; expected both parts, 'clip=PATH;head=PATH'.")
        return Path(parts["clip"]), Path(parts["head"])
    folder = existing_path(path, LAYOUT)
    if not folder.is_dir():
        raise WeightFileError(f"{folder}: is a file; expected {LAYOUT}.")
    clip = next((p for p in (folder / "clip", folder / "clip.safetensors") if p.exists()), None)
    if clip is None:
        raise WeightFileError(f"{folder}: has neither clip/ nor clip.safetensors; expected {LAYOUT}.")
    heads = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p != clip)
    if len(heads) != 1:
        found = ", ".join(p.name for p in heads) or "none"
        raise WeightFileError(f"{folder}: expected exactly one head file ({'/'.join(WEIGHT_SUFFIXES)}) beside the CLIP model, found {found}.")
    return clip, heads[0]
