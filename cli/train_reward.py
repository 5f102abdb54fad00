"""``unifl train-reward``: decoupled aspect reward models from preference pairs (JSONL, ``docs/preference-pairs.md``).

One model per aspect, its held-out pair accuracy and hinge threshold α_d (the mean reward of the preferred
images of held-out pairs, or a lower quantile: ``--alpha-quantile detail=0.25``) stored in its file.
``--global`` adds one model trained on every aspect's pairs, for the decoupled-vs-global ablation.
"""

from __future__ import annotations

import argparse

from ..core.training.aspect_rewards import train_aspect_models
from .arguments import number, whole


def _parse_quantiles(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        aspect, _, value = item.partition("=")
        try:
            out[aspect] = number(0.0, 1.0, above=True, below=True)(value)
        except argparse.ArgumentTypeError:
            raise ValueError(f"--alpha-quantile {item!r}: use ASPECT=Q with Q in (0, 1), e.g. detail=0.25") from None
        if not aspect:
            raise ValueError(f"--alpha-quantile {item!r}: name the aspect, e.g. detail=0.25")
    return out


def run(args) -> int:
    results = train_aspect_models(
        args.pairs, args.out, backbone=args.backbone, steps=args.steps, lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction,
        val_file=args.val, alpha_quantiles=_parse_quantiles(args.alpha_quantile), include_global=args.global_model, resolution=args.resolution,
        seed=args.seed, overwrite=args.overwrite,
    )
    print(f"{'aspect':<12} {'train':>6} {'val':>5} {'val acc':>8} {'alpha':>9}  file")
    for r in results:
        print(f"{r.aspect:<12} {r.pairs:>6} {r.val_pairs:>5} {r.val_accuracy:>8.3f} {r.alpha:>9.4f}  {r.path}")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("train-reward", help="train decoupled aspect reward models from preference pairs (JSONL)", description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", help="JSONL file of pairs (docs/preference-pairs.md)")
    p.add_argument("--out", required=True, help="output folder: one <aspect>.safetensors per aspect")
    p.add_argument("--backbone", default="pocket", help="'pocket' or 'clip:FOLDER' (a local Hugging Face CLIP model)")
    p.add_argument("--steps", type=whole(1), default=500, help="optimizer steps per model")
    p.add_argument("--lr", type=number(0.0, above=True), default=2e-3)
    p.add_argument("--batch-size", type=whole(1), default=32)
    p.add_argument("--val", help="a separate JSONL of held-out pairs (default: --val-fraction of each aspect's pairs)")
    p.add_argument("--val-fraction", type=number(0.0, 1.0, above=True, below=True), default=0.1)
    p.add_argument("--alpha-quantile", action="append", default=[], metavar="ASPECT=Q", help="derive α of ASPECT as this quantile of preferred rewards (paper: lower for detail)")
    p.add_argument("--global", dest="global_model", action="store_true", help="also train one global model on all aspects' pairs (ablation)")
    p.add_argument("--resolution", type=whole(8), help="image size fed to the model (default: the backbone's)")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing model files")
    p.set_defaults(func=run)
