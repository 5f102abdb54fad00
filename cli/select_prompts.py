"""``unifl select-prompts``: UniFL's active prompt selection over a prompt file.

Importing it is cheap (no torch); the command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .arguments import number, whole


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "select-prompts", help="pick diverse, information-rich training prompts (UniFL active prompt selection)",
        description="Filter prompts by scene-graph information score (τ1), drop near-duplicates (cosine > τ2, exact nearest-neighbour suppression), "
                    "then sample N. Writes OUT (one prompt per line) and OUT's stem + .report.json with stage counts and the average nearest-neighbour similarity before/after.",
    )
    p.add_argument("input", metavar="INPUT.txt", help="text file, one prompt per line (blank lines ignored, exact duplicates merged)")
    p.add_argument("--out", required=True, metavar="OUT.txt", help="where to write the selected prompts")
    p.add_argument("-n", type=whole(1), required=True, help="how many prompts to select")
    p.add_argument("--tau1", type=whole(0), default=1, help="information-score threshold (paper: 1)")
    p.add_argument("--tau1-rule", choices=["at-least", "more-than"], default="at-least",
                   help="keep score ≥ τ1 (the paper's text, default) or score > τ1 (its Algorithm 2)")
    p.add_argument("--tau2", type=number(-1.0, 1.0), default=0.8, help="cosine similarity above which a prompt counts as a near-duplicate (paper: 0.8)")
    p.add_argument("--embedder", default="tfidf", help="tfidf (lexical, no weights; default) | tfidf:DIM | sentence (packaged all-MiniLM-L6-v2) | sentence:PATH | clip:PATH")
    p.add_argument("--parser", choices=["builtin", "scenegraphparser"], default="builtin", help="information-score parser; scenegraphparser needs sng_parser, spaCy and an English model")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--device", help="device for the embedding model and the similarity search, e.g. cuda (default: models run on cuda when available, the search on cpu)")
    p.add_argument("--chunk-size", type=whole(1), default=4096, help="block size of the similarity computations (memory ~ chunk_size² floats)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def report_path(out: str | Path) -> Path:
    """``selected.txt`` → ``selected.report.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".report.json")


def run(args) -> int:
    from ..core.data import load_prompts
    from ..core.files import atomic_write_text, check_new_output
    from ..core.prompts.embed import build_embedder
    from ..core.prompts.relations import relation_score, scene_graph_parser
    from ..core.prompts.select import select_prompts

    from .arguments import torch_device

    if args.device is not None:
        torch_device(args.device)  # refused now, not after the prompts are parsed
    source, out = Path(args.input), Path(args.out)
    prompts = load_prompts(source, fix="give a text file with one prompt per line")  # one rule with `unifl train`: a file without a prompt is refused
    check_new_output(out, report_path(out), overwrite=args.overwrite)
    scorer = scene_graph_parser() if args.parser == "scenegraphparser" else relation_score
    embedder = build_embedder(args.embedder, device=args.device)
    report = select_prompts(prompts, args.n, tau1=args.tau1, rule=args.tau1_rule.replace("-", "_"), tau2=args.tau2, embedder=embedder,
                            seed=args.seed, chunk_size=args.chunk_size, scorer=scorer, device=args.device)
    atomic_write_text(out, "".join(p + "\n" for p in report.prompts))
    summary = report.summary() | {"input_file": str(source), "output_file": str(out), "parser": args.parser}
    atomic_write_text(report_path(out), json.dumps(summary, indent=2) + "\n")

    c = report.counts
    print(f"prompts: {c['input']} read, {c['unique']} unique, {c['after_filter']} with information score "
          f"{'≥' if args.tau1_rule == 'at-least' else '>'} {args.tau1}, {c['after_compression']} after neighbour compression "
          f"(τ2 {args.tau2}, {embedder.name}), {c['selected']} selected")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"average nearest-neighbour similarity: {fmt(report.ans_before)} (random sample of the input, same size) → {fmt(report.ans_after)} (selected)")
    if report.shortfall:
        print(f"note: only {c['selected']} prompts survived filtering and compression, {report.shortfall} fewer than -n {args.n}", file=sys.stderr)
    print(f"wrote {out} and {report_path(out)}")
    return 0
