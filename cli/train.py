"""``unifl train``: a UniFL stage as a LoRA, from a TOML config (``--explain`` documents every field)."""

from __future__ import annotations

import logging
import sys


def run(args) -> int:
    from ..core.config import explain, load_config
    from ..core.training.outputs import RUN_LOG
    from ..core.training.preflight import check_before_training
    from ..core.training.trainer import UniFLTrainer

    if args.explain:
        for key, default, text in explain():
            print(f"{key} = {default}\n    {text}")
        return 0
    if args.config is None and args.preset is None:
        print("unifl train: give a CONFIG file or --preset NAME (see --explain for every field)", file=sys.stderr)
        return 2
    config = load_config(args.config, args.set, preset=args.preset)
    report = check_before_training(config)  # before the model loads: a wrong path costs a second, not a model load
    if report.memory is not None:
        print(report.memory.render())
    shown = logging.StreamHandler(sys.stdout)  # the run description, as it starts
    RUN_LOG.addHandler(shown)
    RUN_LOG.setLevel(logging.INFO)
    try:
        result = UniFLTrainer(config).train(resume=args.resume, overwrite=args.overwrite)
    finally:
        RUN_LOG.removeHandler(shown)
    print(f"{'stopped' if result.stopped_early else 'finished'} after {result.steps} steps; LoRA: {result.lora_path}")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a UniFL stage as a LoRA", description="Train stage 1 (quality) or stage 2 (acceleration). Multi-GPU: accelerate launch -m unifl train CONFIG.")
    p.add_argument("config", nargs="?", help="TOML config file (may start with preset = 'sd15' | 'sdxl' | 'pocket' | 'tiny')")
    p.add_argument("--preset", help="start from a named preset (the file's own preset key wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. --set optim.max_steps=200 (repeatable)")
    p.add_argument("--resume", metavar="latest|CHECKPOINT", help="continue from the newest checkpoint of the run folder, or from a checkpoint folder")
    p.add_argument("--overwrite", action="store_true", help="allow starting a fresh run in a folder that already holds checkpoints")
    p.add_argument("--explain", action="store_true", help="print every config field with its default and meaning, then exit")
    p.set_defaults(func=run)
