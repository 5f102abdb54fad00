"""Decoupled aspect reward models (and the global one) from preference pairs: the library behind
``unifl train-reward`` and the ComfyUI node.

One model per aspect is trained with the Bradley–Terry loss (:mod:`.reward_models`), its held-out pair
accuracy reported, and its hinge threshold α_d derived by the paper's rule (mean reward of the preferred
images of held-out pairs, or a lower quantile) and stored in the file's metadata, which the trainer reads
when a config gives no threshold. ``include_global`` adds one model trained on every aspect's pairs, for
the paper's decoupled-vs-global ablation.

Backbones are named: ``clip:FOLDER`` (a local Hugging Face CLIP model, frozen, with a trainable head on
image, text and their product) and those other packages register (the pocket world's ``pocket``, a
small CNN for 64 px images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..data import DataError
from ..feedback.rewards.clip_aspect import ClipAspectReward
from ..feedback.rewards.files import save_reward_model
from ..files import check_new_output
from .preference_data import read_pairs, split
from .reward_models import PreferencePairs, derive_alpha, pair_accuracy, train_reward_model

GLOBAL = "global"


@dataclass(frozen=True)
class RewardBackbone:
    """A trainable reward model family: ``build()`` makes a fresh model whose every parameter trains."""

    build: Callable[[], nn.Module]
    kind: str  # the registry kind that loads the saved file
    resolution: int  # the image size it is built for


#: Backbone name → how to build it (``clip:FOLDER`` is built in; the pocket world registers ``pocket``).
REWARD_BACKBONES: dict[str, RewardBackbone] = {}


def register_reward_backbone(name: str, build: Callable[[], nn.Module], kind: str, resolution: int) -> None:
    REWARD_BACKBONES[name] = RewardBackbone(build, kind, resolution)


def native_resolution(backbone: str) -> int:
    """The image size a backbone is built for, read without loading its weights."""
    if backbone.startswith("clip:"):
        file = Path(backbone.removeprefix("clip:")) / "config.json"
        try:
            return int(json.loads(file.read_text(encoding="utf-8"))["vision_config"].get("image_size", 224))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"--backbone {backbone}: {file} is not a CLIP model config ({type(err).__name__}: {err}); give a Hugging Face CLIP model folder") from None
    return _backbone(backbone).resolution


def build_model(backbone: str) -> tuple[nn.Module, str, int]:
    """``(model, registry kind, native resolution)`` for ``clip:FOLDER`` or a registered backbone."""
    if backbone.startswith("clip:"):
        model = ClipAspectReward(backbone.removeprefix("clip:"))
        return model, "clip-reward", model.backbone.image_size
    registered = _backbone(backbone)
    return registered.build(), registered.kind, registered.resolution


def _backbone(name: str) -> RewardBackbone:
    if name not in REWARD_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: use 'clip:FOLDER' or one of {', '.join(sorted(REWARD_BACKBONES)) or '(none registered)'}")
    return REWARD_BACKBONES[name]


@dataclass
class AspectResult:
    aspect: str
    path: Path
    pairs: int
    val_pairs: int
    val_accuracy: float
    alpha: float


def train_aspect_models(
    pairs_file: str | Path, out_dir: str | Path, *, backbone: str, steps: int = 500, lr: float = 2e-3, batch_size: int = 32,
    val_fraction: float = 0.1, val_file: str | Path | None = None, alpha_quantiles: dict[str, float] | None = None,
    include_global: bool = False, resolution: int | None = None, seed: int = 0, overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> list[AspectResult]:
    """One reward model per aspect of ``pairs_file`` (plus ``global.safetensors`` if asked), in ``out_dir``.

    ``should_stop`` (a host's cancel button) is asked before every training step: when it answers True,
    the aspect in training is dropped unsaved (a half-trained model with a threshold would look finished)
    and the aspects finished before it are returned.
    """
    out_dir = Path(out_dir)
    resolution = resolution or native_resolution(backbone)
    train_sets = read_pairs(pairs_file, resolution)
    if val_file is not None:
        val_sets = read_pairs(val_file, resolution)
        missing = sorted(set(train_sets) - set(val_sets))
        if missing:
            raise DataError(f"{val_file} has no pairs for aspect(s) {', '.join(missing)}")
    else:
        val_sets = {}
        for aspect in list(train_sets):
            train_sets[aspect], val_sets[aspect] = split(train_sets[aspect], val_fraction, seed)
    jobs = dict(train_sets)
    if include_global:
        jobs[GLOBAL] = PreferencePairs.concat(list(train_sets.values()))
        val_sets[GLOBAL] = PreferencePairs.concat([val_sets[a] for a in train_sets])
    targets = {aspect: out_dir / f"{aspect}.safetensors" for aspect in jobs}
    check_new_output(*targets.values(), overwrite=overwrite)

    results = []
    for aspect, train in jobs.items():
        model, kind, _ = build_model(backbone)
        model.requires_grad_(False)
        for p in (model.head.parameters() if kind == "clip-reward" else model.parameters()):
            p.requires_grad_(True)
        log = train_reward_model(model, train, steps=steps, lr=lr, batch_size=min(batch_size, len(train)), seed=seed, progress=f"reward {aspect}", should_stop=should_stop)
        if log.stopped:
            break
        accuracy = pair_accuracy(model, val_sets[aspect])
        quantile = (alpha_quantiles or {}).get(aspect)
        alpha = derive_alpha(model, val_sets[aspect], quantile=quantile)
        saved = model.head if kind == "clip-reward" else model  # a CLIP head is saved without its (local) CLIP
        save_reward_model(saved, targets[aspect], kind=kind, alpha=alpha, aspect=aspect, config=model.config,
                          metadata={"val_accuracy": accuracy, "train_pairs": len(train), "val_pairs": len(val_sets[aspect]), "alpha_rule": f"quantile {quantile}" if quantile is not None else "mean preferred reward"})
        results.append(AspectResult(aspect, targets[aspect], len(train), len(val_sets[aspect]), accuracy, alpha))
    return results
