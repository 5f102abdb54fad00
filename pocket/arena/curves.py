"""``make arena-curves``: quality against training compute, at ×1, ×4 and ×16 the arena's training budget.

×1 is the standard run (``make arena``'s folder); ×4 and ×16 are arenas of their own in ``<out>/x<budget>``: UniFL's
stages at 400 and 1600 steps, the peers at the matching wall time, the hyperparameters the standard run chose
(``ArenaSettings.tuning_from``: sweeping at ×16 would cost more than the run), each peer with the one LoRA variant
the standard run trained, no ablations or controls, five seeds at ×4 and seed 0 only at ×16 (:func:`curve_settings`). Each level is resumable job by job,
and the predicted cost of every level is printed before anything starts. The figure (``curves.png``) plots prompt
accuracy, KID and every further realism column the rows carry against training wall time and against UNet
evaluations, one line per method through its budgets, with the bootstrap interval of each point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .estimate import MEASURED_COSTS, estimate
from .plan import BUDGETS, ArenaSettings

CURVE_METRICS = ("prompt_accuracy", "kid", "spectrum")
"""Quality on the figure's rows (those a run has: the spectrum measure comes with the judges' realism v2)."""
SEEDS_AT = {1: None, 4: None, 16: 1}
"""Training seeds per level: None = the standard run's (five); ×16 takes seed 0 only (it would not fit otherwise)."""


def curve_settings(standard: ArenaSettings, budget: int, standard_out: Path) -> ArenaSettings:
    if budget == 1:
        return standard
    seeds = standard.seeds if SEEDS_AT[budget] is None else standard.seeds[: SEEDS_AT[budget]]
    return standard.with_(budget=budget, seeds=seeds, ablations=False, controls=False,
                          lora_variants=("best",) if "best" in standard.lora_variants else ("unifl",), tuning_from=str(standard_out.resolve()))


def levels(standard: ArenaSettings, standard_out: Path, out: Path, budgets=BUDGETS) -> dict[int, tuple[Path, ArenaSettings]]:
    return {b: (standard_out if b == 1 else out / f"x{b}", curve_settings(standard, b, standard_out)) for b in budgets}


def plot(metrics_by_budget: dict[int, dict], out_png: Path) -> Path:
    """One figure: a row of panels per x-axis (training wall time, UNet evaluations), a panel per quality metric,
    a line per trained row through its budgets (error bars: the bootstrap interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [m for m in CURVE_METRICS if any(m in row.get("intervals", {}) for metrics in metrics_by_budget.values() for row in metrics["rows"].values())]
    axes_x = (("seconds", "training wall time (s)"), ("unet_evaluations", "training UNet evaluations"))
    fig, axes = plt.subplots(len(axes_x), len(present), figsize=(4.5 * len(present), 7), squeeze=False)
    names = sorted({name for metrics in metrics_by_budget.values() for name, row in metrics["rows"].items() if (row.get("compute") or {}).get("training")})
    for r, (key, label) in enumerate(axes_x):
        for c, metric in enumerate(present):
            ax = axes[r][c]
            for name in names:
                points = []
                for budget, metrics in sorted(metrics_by_budget.items()):
                    row = metrics["rows"].get(name)
                    if row and (row.get("compute") or {}).get("training") and metric in row["intervals"]:
                        i = row["intervals"][metric]
                        points.append((row["compute"]["training"][key], i["point"], i["interval"]))
                if points:
                    x, y, spans = zip(*points)
                    errors = [[yy - lo for yy, (lo, _) in zip(y, spans)], [hi - yy for yy, (_, hi) in zip(y, spans)]]
                    ax.errorbar(x, y, yerr=errors, marker="o", capsize=2, linewidth=1, label=name)
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_title(f"{metric} ({'higher' if metric == 'prompt_accuracy' else 'lower'} is better)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("The arena at ×" + ", ×".join(str(b) for b in sorted(metrics_by_budget)) + " the training budget")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> None:
    from .run import run_arena

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--standard", type=Path, default=Path("out/arena"), help="the standard run's folder (×1; made if missing)")
    parser.add_argument("--out", type=Path, default=Path("out/arena-curves"))
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--tuning-from", default="out/arena-tune", help="the tuning run's folder the standard run adopts (`make arena-tune`)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    standard = ArenaSettings.standard(tuning_from=args.tuning_from, workers=args.workers)
    plan = levels(standard, args.standard, args.out, tuple(int(b) for b in args.budgets.split(",")))
    total = 0.0
    for budget, (folder, settings) in plan.items():
        wall = estimate(settings, MEASURED_COSTS)["wall"]
        total += wall
        print(f"arena-curves ×{budget}: {folder}, seeds {list(settings.seeds)}, predicted {wall / 3600:.1f} h on {settings.workers} workers")
    print(f"arena-curves: predicted {total / 3600:.1f} h in all (levels already run are skipped job by job)", flush=True)
    metrics = {budget: run_arena(folder, settings) for budget, (folder, settings) in plan.items()}
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps({str(b): {"folder": str(plan[b][0]), "rows": m["rows"], "environment": m["environment"]} for b, m in metrics.items()}, indent=2))
    print(f"arena-curves: {plot(metrics, args.out / 'curves.png')}")


if __name__ == "__main__":
    main()
