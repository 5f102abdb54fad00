"""``unifl train-reward``: decoupled aspect reward models (and the global one) from preference pairs.

Pairs are a JSONL file, one pair per line, image paths relative to the file (``docs/preference-pairs.md``)::

    {"prompt": "a cat on a sofa", "image_a": "img/0001a.png", "image_b": "img/0001b.png", "preferred": "a", "aspect": "color"}

``preferred`` is ``"a"``, ``"b"`` or ``"tie"`` (a tie teaches a model what its aspect is *not* about).
One model per aspect is trained with the Bradley–Terry loss (:mod:`unifl.core.reward_training`), its
held-out pair accuracy reported, and its hinge threshold α_d derived by the paper's rule (mean reward of
the preferred images of held-out pairs, or a lower quantile: ``--alpha-quantile detail=0.25``) and stored
in the file's metadata, which the trainer reads when a config gives no threshold. ``--global`` adds one
model trained on every aspect's pairs, for the paper's decoupled-vs-global ablation.

Backbones: ``pocket`` (the pocket world's small CNN, for 64 px images) and ``clip:FOLDER`` (a local
Hugging Face CLIP model, frozen, with a trainable head on image, text and their product).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data import DataError
from .registry import register_reward_model
from .reward_training import PreferencePairs, derive_alpha, load_reward_file, pair_accuracy, save_reward_model, train_reward_model

REQUIRED_KEYS = ("prompt", "image_a", "image_b", "preferred", "aspect")
GLOBAL = "global"


def read_pairs(path: str | Path, resolution: int) -> dict[str, PreferencePairs]:
    """Pairs by aspect, images resized to ``resolution``²; every bad row is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pair file {path} does not exist")
    rows, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: not JSON ({err.msg})")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            problems.append(f"line {number}: missing {', '.join(missing)}")
            continue
        if row["preferred"] not in ("a", "b", "tie"):
            problems.append(f"line {number}: preferred = {row['preferred']!r}, use 'a', 'b' or 'tie'")
            continue
        for key in ("image_a", "image_b"):
            if not (path.parent / row[key]).is_file():
                problems.append(f"line {number}: {key} {path.parent / row[key]} does not exist")
        rows.append(row)
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(f"{path}: {len(problems)} bad row(s):\n  {shown}")
    if not rows:
        raise DataError(f"{path} holds no pairs")
    by_aspect: dict[str, list[dict]] = {}
    for row in rows:
        by_aspect.setdefault(row["aspect"], []).append(row)
    return {aspect: _to_pairs(path.parent, group, resolution) for aspect, group in by_aspect.items()}


def _load_image(path: Path, resolution: int) -> torch.Tensor:
    try:
        image = Image.open(path).convert("RGB").resize((resolution, resolution), Image.BICUBIC)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def _to_pairs(root: Path, rows: list[dict], resolution: int) -> PreferencePairs:
    # "better" is the preferred image; for a tie the order is arbitrary and the preference ½.
    better = [row["image_b"] if row["preferred"] == "b" else row["image_a"] for row in rows]
    worse = [row["image_a"] if row["preferred"] == "b" else row["image_b"] for row in rows]
    stack = lambda names: torch.stack([_load_image(root / n, resolution) for n in names]).to(torch.float16) / 255  # noqa: E731
    preference = torch.tensor([0.5 if row["preferred"] == "tie" else 1.0 for row in rows])
    return PreferencePairs([row["prompt"] for row in rows], stack(better), stack(worse), preference)


def split(pairs: PreferencePairs, fraction: float, seed: int) -> tuple[PreferencePairs, PreferencePairs]:
    """A seeded train/validation split; at least one pair on each side."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    held = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    if len(pairs) < 2:
        raise DataError(f"{len(pairs)} pair(s) cannot be split into training and validation; add pairs or pass --val")
    return pairs.select(order[held:]), pairs.select(order[:held])


class ClipAspectReward(nn.Module):
    """A frozen local CLIP with a trainable head on ``[image, text, image ⊙ text]`` embeddings.

    Only the head (a few hundred K parameters) is trained and saved (the file holds ``head`` alone); the
    CLIP folder it sits on is recorded in the file, so the reward loads from the two together.
    """

    def __init__(self, clip_folder: str, hidden: int = 256):
        super().__init__()
        from .rewards.clip_models import ClipSimilarity, load_clip, load_clip_tokenizer

        self.config = {"clip_folder": str(Path(clip_folder).resolve()), "hidden": hidden}
        self.alpha: float | None = None
        clip = load_clip(clip_folder).requires_grad_(False)
        folder = Path(clip_folder)
        tokenizer = load_clip_tokenizer(folder if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file() else None)
        self.backbone = ClipSimilarity(clip, tokenizer, source=str(folder))
        width = clip.config.projection_dim
        self.head = nn.Sequential(nn.Linear(3 * width, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        from .rewards.clip_preprocess import clip_preprocess

        clip, b = self.backbone.clip, self.backbone
        pixels = clip_preprocess(images, b.image_size, fit=b.fit)
        image = F.normalize(clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output).float(), dim=-1)
        tokens = b.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=b.max_length, return_tensors="pt").to(pixels.device)
        text = F.normalize(clip.text_projection(clip.text_model(**tokens).pooler_output).float(), dim=-1)
        return self.head(torch.cat([image, text, image * text], dim=-1)).squeeze(-1)


@register_reward_model("clip-reward")
def load_clip_reward(path: str) -> nn.Module:
    """A ``train-reward --backbone clip:…`` file; its CLIP folder is read from the file (or ``file=…;clip=…``)."""
    from .weight_files import parse_parts

    parts = parse_parts(path, ("file", "clip")) or {"file": path}
    state, meta = load_reward_file(parts["file"])
    config = json.loads(meta["unifl.config"])
    if "clip" in parts:
        config["clip_folder"] = parts["clip"]
    model = ClipAspectReward(**config)
    model.head.load_state_dict(state)
    model.alpha = float(meta["unifl.alpha"])
    return model


def native_resolution(backbone: str) -> int:
    """The image size a backbone is built for, read without loading its weights."""
    if backbone.startswith("clip:"):
        config = json.loads((Path(backbone.removeprefix("clip:")) / "config.json").read_text(encoding="utf-8"))
        return int(config["vision_config"].get("image_size", 224))
    return 64


def build_model(backbone: str) -> tuple[nn.Module, str, int]:
    """``(model, registry kind, native resolution)`` for ``pocket`` or ``clip:FOLDER``."""
    if backbone == "pocket":
        from .pocket.rewards import AspectReward

        return AspectReward(), "pocket-reward", 64
    if backbone.startswith("clip:"):
        model = ClipAspectReward(backbone.removeprefix("clip:"))
        return model, "clip-reward", model.backbone.image_size
    raise ValueError(f"unknown backbone {backbone!r}: use 'pocket' or 'clip:FOLDER'")


@dataclass
class AspectResult:
    aspect: str
    path: Path
    pairs: int
    val_pairs: int
    val_accuracy: float
    alpha: float


def train_aspect_models(
    pairs_file: str | Path, out_dir: str | Path, *, backbone: str = "pocket", steps: int = 500, lr: float = 2e-3, batch_size: int = 32,
    val_fraction: float = 0.1, val_file: str | Path | None = None, alpha_quantiles: dict[str, float] | None = None,
    include_global: bool = False, resolution: int | None = None, seed: int = 0, overwrite: bool = False,
) -> list[AspectResult]:
    """One reward model per aspect of ``pairs_file`` (plus ``global.safetensors`` if asked), in ``out_dir``."""
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
    taken = [str(p) for p in targets.values() if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"reward model file(s) already exist: {', '.join(taken)}; pass --overwrite or another --out")

    results = []
    for aspect, train in jobs.items():
        model, kind, _ = build_model(backbone)
        model.requires_grad_(False)
        for p in (model.head.parameters() if kind == "clip-reward" else model.parameters()):
            p.requires_grad_(True)
        train_reward_model(model, train, steps=steps, lr=lr, batch_size=min(batch_size, len(train)), seed=seed, progress=f"reward {aspect}")
        accuracy = pair_accuracy(model, val_sets[aspect])
        quantile = (alpha_quantiles or {}).get(aspect)
        alpha = derive_alpha(model, val_sets[aspect], quantile=quantile)
        saved = model.head if kind == "clip-reward" else model  # a CLIP head is saved without its (local) CLIP
        save_reward_model(saved, targets[aspect], kind=kind, alpha=alpha, aspect=aspect, config=model.config,
                          metadata={"val_accuracy": accuracy, "train_pairs": len(train), "val_pairs": len(val_sets[aspect]), "alpha_rule": f"quantile {quantile}" if quantile is not None else "mean preferred reward"})
        results.append(AspectResult(aspect, targets[aspect], len(train), len(val_sets[aspect]), accuracy, alpha))
    return results


def _parse_quantiles(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        aspect, _, value = item.partition("=")
        try:
            out[aspect] = float(value)
        except ValueError:
            raise ValueError(f"--alpha-quantile {item!r}: use ASPECT=Q with Q in (0, 1), e.g. detail=0.25") from None
    return out


def _run(args) -> int:
    results = train_aspect_models(
        args.pairs, args.out, backbone=args.backbone, steps=args.steps, lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction,
        val_file=args.val, alpha_quantiles=_parse_quantiles(args.alpha_quantile), include_global=args.global_model, resolution=args.resolution,
        seed=args.seed, overwrite=args.overwrite,
    )
    print(f"{'aspect':<12} {'train':>6} {'val':>5} {'val acc':>8} {'alpha':>9}  file")
    for r in results:
        print(f"{r.aspect:<12} {r.pairs:>6} {r.val_pairs:>5} {r.val_accuracy:>8.3f} {r.alpha:>9.4f}  {r.path}")
    return 0


def add_train_reward_command(subparsers) -> None:
    p = subparsers.add_parser("train-reward", help="train decoupled aspect reward models from preference pairs (JSONL)", description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", help="JSONL file of pairs (docs/preference-pairs.md)")
    p.add_argument("--out", required=True, help="output folder: one <aspect>.safetensors per aspect")
    p.add_argument("--backbone", default="pocket", help="'pocket' or 'clip:FOLDER' (a local Hugging Face CLIP model)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps per model")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val", help="a separate JSONL of held-out pairs (default: --val-fraction of each aspect's pairs)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--alpha-quantile", action="append", default=[], metavar="ASPECT=Q", help="derive α of ASPECT as this quantile of preferred rewards (paper: lower for detail)")
    p.add_argument("--global", dest="global_model", action="store_true", help="also train one global model on all aspects' pairs (ablation)")
    p.add_argument("--resolution", type=int, help="image size fed to the model (default: the backbone's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing model files")
    p.set_defaults(func=_run)
