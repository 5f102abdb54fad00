"""``unifl arena``: UniFL, its ablations and the peers side by side, judged against the pocket world's truth."""

from __future__ import annotations


def run(args) -> int:
    from ..pocket.arena.plan import ArenaSettings
    from ..pocket.arena.run import run_arena

    settings = ArenaSettings.smoke() if args.quick else ArenaSettings(split=args.split)
    changes = {"workers": args.workers, "threads": args.threads}
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
    run_arena(out_dir=args.out, settings=settings.with_(**changes))
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("arena", help="UniFL, its ablations and LCM-LoRA/PCM/AlignProp on the pocket world, five seeds, judged by the world's truth")
    p.add_argument("--quick", action="store_true", help="smoke run: one seed, a few steps and images, validation split only")
    p.add_argument("--split", choices=("validation", "test"), default="test", help="validation: for tuning; test: the report (default)")
    p.add_argument("--out", default="out/arena", help="output folder; a rerun skips every job whose outputs are there")
    p.add_argument("--seeds", default="", help="comma-separated training seeds (default 0,1,2,3,4)")
    p.add_argument("--peers", default=None, help="comma-separated peers to run: lcm_lora,pcm,pcm_adv,alignprop (default all present; '' for none)")
    p.add_argument("--lora-variants", default="", help="each peer's LoRA: unifl,own (default both; 'unifl' alone saves a third of the time)")
    p.add_argument("--num-prompts", type=int, default=0, help="prompts per model and seed, 4 images each (default 52: 208 images, 1040 over the five seeds, which realism is measured on pooled)")
    p.add_argument("--unifl-set", action="append", default=[], metavar="KEY=VALUE", help="a config change for every UniFL training (repeatable): the validation runs that choose a default")
    p.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE", help="a config change for UniFL's stage-2 trainings only (repeatable), e.g. adversarial.schedule=step-counts")
    p.add_argument("--workers", type=int, default=2, help="processes running jobs side by side (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.set_defaults(func=run)
