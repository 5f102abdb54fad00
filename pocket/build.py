"""``unifl pocket build``: rebuild every pocket-world model from scratch, reproducibly, in dependency order.

Each part is its own module with its own ``--quick`` smoke mode and ``BUILD.md`` (what was run, on what
machine, how long, how good). The pocket model is pretrained on dataset seed 0, the perception models
and rewards on seed 1, the held-out evaluators on seed 101, the arena's prompt judge on 301; the ControlNet and the motion adapter are
trained beside the pocket model's UNet, so they come after it (``PARTS`` is in build order) and must be
rebuilt whenever it is.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from . import WEIGHTS_DIR

#: part → (module with a ``main(argv)``, its ``--out`` relative to the weights folder)
PARTS = {
    "ldm": ("unifl.pocket.ldm", "ldm"),
    "perception": ("unifl.pocket.build_perception", "."),
    "rewards": ("unifl.pocket.rewards", "."),
    "controlnet": ("unifl.pocket.controlnet", "controlnet"),
    "motion": ("unifl.pocket.motion", "motion_adapter"),
    "judges": ("unifl.pocket.build_judges", "judges"),
}


def build(only: list[str] | None = None, quick: bool = False, out: Path = WEIGHTS_DIR) -> dict[str, float]:
    """Run the builds of ``only`` (default: all parts); returns the wall seconds of each."""
    unknown = sorted(set(only or []) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown pocket part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    seconds = {}
    for name in only or PARTS:
        module, target = PARTS[name]
        started = time.time()
        importlib.import_module(module).main(["--out", str(out / target), *(["--quick"] if quick else [])])
        seconds[name] = round(time.time() - started, 1)
        print(f"pocket build: {name} done in {seconds[name]:.0f} s")
    return seconds


def _run(args) -> int:
    build(args.only.split(",") if args.only else None, quick=args.quick, out=Path(args.out))
    return 0


def add_pocket_command(subparsers) -> None:
    p = subparsers.add_parser("pocket", help="the embedded pocket world")
    sub = p.add_subparsers(dest="pocket_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="rebuild the pocket model, perception models, rewards and evaluators from scratch")
    b.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    b.add_argument("--quick", action="store_true", help="tiny smoke builds (checks the pipeline, not usable models)")
    b.add_argument("--out", default=str(WEIGHTS_DIR), help="weights folder (default: the shipped one)")
    b.set_defaults(func=_run)
