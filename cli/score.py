"""``unifl score``: score images with reward models and write a table, CSV and JSON."""

from __future__ import annotations

import argparse
import sys

from ..core.feedback.scoring import ScoreError, caption_prompts, collect_images, format_table, parse_reward_spec, score_images, score_paths, write_scores
from ..core.files import check_new_output
from .arguments import torch_device, whole


def add_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score",
        help="score images with reward models and write a table, CSV and JSON",
        description="Score images with reward models (LAION aesthetic, PickScore, CLIP score, HPSv2, ImageReward, the weight-free statistics …) from local files.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of images")
    parser.add_argument(
        "--reward",
        action="append",
        required=True,
        metavar="NAME=KIND:PATH",
        help="a reward column: its name, registered kind and local path, e.g. aesthetic=laion-aesthetic:/models/laion (repeatable; NAME=KIND for kinds without files)",
    )
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="the prompt of every image")
    prompts.add_argument("--prompts-from", choices=["captions"], help="captions: each image's prompt is the .txt file beside it")
    parser.add_argument("--out", default="out/scores", help="writes OUT.csv and OUT.json (default: out/scores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.csv and OUT.json")
    parser.add_argument("--batch-size", type=whole(1), default=8, help="images per forward pass")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    check_new_output(*score_paths(args.out), overwrite=args.overwrite)  # before any image is scored
    device = torch_device(args.device)
    images = collect_images(args.images)
    if args.prompts_from == "captions":
        prompts = caption_prompts(images)
    else:
        prompts = [args.prompt or ""] * len(images)
    rewards: dict[str, tuple[str, str]] = {}
    for spec in args.reward:
        name, kind, path = parse_reward_spec(spec)
        if name in rewards:
            raise ScoreError(f"--reward {spec!r}: the name {name!r} is given twice; give each reward its own name")
        rewards[name] = (kind, path)
    rows = score_images(images, rewards, prompts, batch_size=args.batch_size, device=device)
    print(format_table(rows, list(rewards)))
    csv_path, json_path = write_scores(rows, rewards, args.out)
    print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
    return 0
