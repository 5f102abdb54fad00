"""``unifl check``: before hours of training, every file present and loadable, the dtypes, and the peak memory of one step."""

from __future__ import annotations

import sys


def run(args) -> int:
    from ..core.config import load_config
    from ..core.training.preflight import preflight

    if args.config is None and args.preset is None:
        print("unifl check: give a CONFIG file or --preset NAME", file=sys.stderr)
        return 2
    config = load_config(args.config, args.set, preset=args.preset)
    report = preflight(config, device=args.device, load_models=not args.no_load)
    print(report.render())
    return 0 if report.ok else 1


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="check a training config before running it: files, dtypes, predicted peak memory",
        description="Checks what `unifl train CONFIG` would need: the base model and every reward/perception model present and "
        "loadable (loaded on the CPU, one at a time), the data and its masks, the dtypes, and the predicted peak memory of "
        "one training step on the device. Exit status 1 when the run could not start or would not fit.",
    )
    p.add_argument("config", nargs="?", help="TOML config file, as for `unifl train`")
    p.add_argument("--preset", help="start from a named preset (the file's own preset key wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    p.add_argument("--device", help="the device training will use, e.g. cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--no-load", action="store_true", help="do not load the reward and perception models (faster; their memory is then not counted)")
    p.set_defaults(func=run)
