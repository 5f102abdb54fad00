"""``unifl pocket build``: rebuild every pocket-world model from scratch, reproducibly, in dependency order.

Each part is its own module with its own ``--quick`` smoke mode and ``BUILD.md`` (what was run, on what
machine, how long, how good). The pocket model is pretrained on dataset seed 0, the perception models
and rewards on seed 1, the held-out evaluators on seed 101, the arena's prompt judge on 301; the ControlNet and the motion adapter are
trained beside the pocket model's UNet, so they come after it (``PARTS`` is in build order) and must be
rebuilt whenever it is.

Long parts run in pieces of at most ``--part-hours`` (the LDM; see :mod:`.resumable`): when one stops, the
build stops, and ``unifl pocket build --resume`` continues it, skipping the parts already finished (listed in
``.pocket-build.json`` in the weights folder until the whole build is done).
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

from ..core.files import atomic_write_text
from . import WEIGHTS_DIR

#: Parts whose builds take ``--resume`` and ``--part-hours`` (their ``main`` returns ``None`` when a part stops early).
RESUMABLE = {"ldm"}
PROGRESS_FILE = ".pocket-build.json"

#: part → (module with a ``main(argv)``, its ``--out`` relative to the weights folder)
PARTS = {
    "ldm": ("unifl.pocket.models.ldm", "ldm"),
    "perception": ("unifl.pocket.models.build_perception", "."),
    "rewards": ("unifl.pocket.models.rewards", "."),
    "controlnet": ("unifl.pocket.models.controlnet", "controlnet"),
    "motion": ("unifl.pocket.models.motion", "motion_adapter"),
    "judges": ("unifl.pocket.judges.build_judges", "judges"),
}


def build(only: list[str] | None = None, quick: bool = False, out: Path = WEIGHTS_DIR, resume: bool = False, part_hours: float = 2.0) -> dict[str, float] | None:
    """Run the builds of ``only`` (default: all parts); the wall seconds of each, or ``None`` when a resumable
    part stopped at its time limit (then ``resume=True`` continues where it stopped)."""
    unknown = sorted(set(only or []) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown pocket part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    wanted = list(only or PARTS)
    progress_path = Path(out) / PROGRESS_FILE
    if progress_path.is_file() and not resume:
        raise ValueError(f"{progress_path}: an unfinished pocket build is recorded there; add --resume to continue it, or delete the file to start over")
    progress = json.loads(progress_path.read_text()) if resume and progress_path.is_file() else {"parts": wanted, "done": []}
    if progress["parts"] != wanted:
        raise ValueError(f"{progress_path}: the unfinished build was of {', '.join(progress['parts'])}; resume it with the same --only")
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(progress_path, json.dumps(progress))
    seconds = {}
    for name in wanted:
        if name in progress["done"]:
            print(f"pocket build: {name} finished in an earlier run, skipped")
            continue
        module, target = PARTS[name]
        started = time.time()
        argv = ["--out", str(Path(out) / target), *(["--quick"] if quick else [])]
        if name in RESUMABLE:
            argv += ["--part-hours", str(part_hours), *(["--resume"] if resume else [])]
        if importlib.import_module(module).main(argv) is None and name in RESUMABLE:
            print(f"pocket build: {name} stopped after its part; run `unifl pocket build --resume` (same options) to continue")
            return None
        seconds[name] = round(time.time() - started, 1)
        progress["done"].append(name)
        atomic_write_text(progress_path, json.dumps(progress))
        print(f"pocket build: {name} done in {seconds[name]:.0f} s")
    progress_path.unlink()
    return seconds


def _run(args) -> int:
    build(args.only.split(",") if args.only else None, quick=args.quick, out=Path(args.out), resume=args.resume, part_hours=args.part_hours)
    return 0


def add_pocket_command(subparsers) -> None:
    p = subparsers.add_parser("pocket", help="the embedded pocket world")
    sub = p.add_subparsers(dest="pocket_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="rebuild the pocket model, perception models, rewards and evaluators from scratch")
    b.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    b.add_argument("--quick", action="store_true", help="tiny smoke builds (checks the pipeline, not usable models)")
    b.add_argument("--out", default=str(WEIGHTS_DIR), help="weights folder (default: the shipped one)")
    b.add_argument("--resume", action="store_true", help="continue an unfinished build: finished parts are skipped, a paused one continues")
    b.add_argument("--part-hours", type=float, default=2.0, help="a long part stops and saves after this many hours (default 2); --resume continues")
    b.set_defaults(func=_run)
