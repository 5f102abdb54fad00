"""``unifl demo``: UniFL's claims in miniature on the embedded pocket world."""

from __future__ import annotations

from .arguments import whole


def run(args) -> int:
    from dataclasses import replace

    from ..pocket.demo.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    run_demo(out_dir=args.out, settings=replace(settings, workers=args.workers, threads=args.threads))
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train stage 1 and stage 2 on the embedded default model, offline, on a CPU")
    p.add_argument("--quick", action="store_true", help="the same path in a few minutes' fraction (for tests)")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--workers", type=whole(1), default=2, help="processes training and sampling side by side (default 2, one per core of a small machine)")
    p.add_argument(
        "--threads",
        type=whole(1),
        default=1,
        help="torch CPU threads per worker (default 1: the demo's models are tiny, and on a 2-core machine two threads "
        "stalled whenever another process held a core: 90 s vs 1.1 s per stage-1 step, measured)",
    )
    p.set_defaults(func=run)
