"""``unifl arena``: UniFL, its ablations and the peers side by side, judged against the pocket world's truth."""

from __future__ import annotations

import argparse

TUNING_OUT = "out/arena-tune"
"""Where ``make arena-tune`` sweeps."""
COMMITTED_TUNING = "pocket/arena/tuned"
"""Where ``make arena`` takes the sweeps' choices from: the tuning run's, exported and committed
(``pocket/arena/plan.py``'s ``COMMITTED_TUNING``, named here so the CLI starts without importing torch)."""
VARIANT_SET_NAMES = ("lora", "stage1", "stage2")
"""``pocket/arena/plan.py``'s ``VARIANT_SETS`` (named here so the CLI starts without importing torch)."""


def run(args) -> int:
    from ..pocket.arena.plan import ArenaSettings
    from ..pocket.arena.run import run_arena

    if args.quick:
        settings = ArenaSettings.smoke()
    elif args.tune:
        settings = ArenaSettings.tuning(tuning_from=args.tuning_from or "")
    elif args.choices:
        settings = ArenaSettings.choices(args.choices, tuning_from=COMMITTED_TUNING if args.tuning_from is None else args.tuning_from)
    elif args.split == "test":
        settings = ArenaSettings.standard(tuning_from=COMMITTED_TUNING if args.tuning_from is None else args.tuning_from)
        if not settings.tuning_from:  # sweeping in this run: both LoRA variants are trained and reported
            settings = settings.with_(lora_variants=("unifl", "own"))
    else:
        settings = ArenaSettings(split=args.split, tuning_from=args.tuning_from or "")
    changes = {"workers": args.workers, "threads": args.threads}
    if args.ablations is not None:
        changes["ablations"] = args.ablations
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.num_prompts:
        changes["num_prompts"] = args.num_prompts
    if args.peers is not None:
        changes["peers"] = tuple(p for p in args.peers.split(",") if p)
    if args.unifl_set:
        changes["unifl_overrides"] = tuple(args.unifl_set)
    if args.stage2_set:
        changes["stage2_overrides"] = tuple(args.stage2_set)
    if args.lora_variants:
        changes["lora_variants"] = tuple(v for v in args.lora_variants.split(",") if v)
    default_out = TUNING_OUT if args.tune else f"out/arena-choices-{args.choices}" if args.choices else "out/arena"
    run_arena(out_dir=args.out or default_out, settings=settings.with_(**changes))
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("arena", help="UniFL, its ablations and LCM-LoRA/PCM/AlignProp on the pocket world, five seeds, judged by the world's truth")
    p.add_argument("--quick", action="store_true", help="smoke run: one seed, a few steps and images, validation split only")
    p.add_argument("--tune", action="store_true", help="the tuning run (`make arena-tune`): every sweep, both LoRA variants of each peer, first seed, validation split")
    p.add_argument("--choices", choices=sorted(VARIANT_SET_NAMES), default=None,
                   help="a choices run (`make arena-choices`): one set of candidate defaults beside today's UniFL, validation split, five seeds")
    p.add_argument("--split", choices=("validation", "test"), default="test",
                   help="test (default): the standard run, five seeds with the tuning run's choices; validation: a whole arena on the validation split")
    p.add_argument("--tuning-from", default=None, metavar="FOLDER",
                   help=f"take the sweeps' choices from this arena (default for the test split and --choices: the committed {COMMITTED_TUNING}; '' sweeps in this run; "
                        "with --tune: sweep only what this folder lacks)")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                   help="also train UniFL's ablations (`make arena-ablations`; default: off in the standard and tuning runs, on otherwise)")
    p.add_argument("--out", default=None, help=f"output folder (default out/arena, {TUNING_OUT} with --tune); a rerun skips every job whose outputs are there")
    p.add_argument("--seeds", default="", help="comma-separated training seeds (default 0,1,2,3,4)")
    p.add_argument("--peers", default=None, help="comma-separated peers to run: lcm_lora,pcm,pcm_adv,alignprop (default all present; '' for none)")
    p.add_argument("--lora-variants", default="", help="each peer's LoRA: unifl,own (two trainings each) or best (the better of the two in the tuning run: the standard run's default)")
    p.add_argument("--num-prompts", type=int, default=0, help="prompts per model and seed, 4 images each (default 52: 208 images, 1040 over the five seeds, which realism is measured on pooled)")
    p.add_argument("--unifl-set", action="append", default=[], metavar="KEY=VALUE", help="a config change for every UniFL training (repeatable): the validation runs that choose a default")
    p.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE", help="a config change for UniFL's stage-2 trainings only (repeatable), e.g. adversarial.schedule=step-counts")
    p.add_argument("--workers", type=int, default=2, help="processes running jobs side by side (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.set_defaults(func=run)
