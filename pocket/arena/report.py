"""``metrics.json`` and ``report.md`` of an arena run: tables with spreads, claims, grids, curves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ...core.files import atomic_write_text
from ...core.images import save_grid
from ...core.machine import describe_machine, library_versions, source_commit
from ..demo import _plot_curves
from .claims import METRICS, aggregate, check, planned_claims
from .measure import load_images, write_json
from .plan import SPLITS, ArenaSettings, tuning_of

TABLE_METRICS = ("prompt_accuracy", "all_correct", "count", "shape", "colour", "size", "relation", "tone", "light", "fd", "kid", "aspect_shortfall")
REFERENCES = {"real_same_scenes": "real renders of the same scenes (ceiling)", "real_other_scenes": "real renders of other scenes (floor)", "uniform_noise": "uniform noise (floor)"}


def _judge_quality() -> dict:
    from .. import WEIGHTS_DIR

    path = WEIGHTS_DIR / "judges" / "quality.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_report(out: Path, settings: ArenaSettings, plan: dict, measures: dict, references: dict, results: dict, seconds: float, seconds_total: float | None = None) -> dict:
    split = SPLITS[settings.split]
    summary = {row: aggregate([measures[row][s] for s in sorted(measures[row])]) for row in plan["rows"] if row in measures}
    pooled = {row: _pooled_realism(out, [out / "measures" / row / f"seed{s}.features.safetensors" for s in sorted(measures[row])]) for row in summary}
    pooled_floor = _pooled_realism(out, [out / "references" / f"seed{s}.other_scenes.safetensors" for s in sorted(references)])
    reference_summary = {name: aggregate([references[s][name] for s in sorted(references)]) for name in REFERENCES}
    realism_floor = {s: _real_vs_real(out, s) for s in references}
    claims = [check(c, summary) for c in planned_claims(set(summary))]
    trainings = {}
    for (name, seed), result in sorted(results.items()):
        trainings.setdefault(name, {})[str(seed)] = result
    metrics = {
        "split": asdict(split),
        "settings": json.loads(json.dumps(asdict(settings))),
        "rows": {row: {"label": plan["rows"][row].label, "group": plan["rows"][row].group, "training": plan["rows"][row].training,
                       "sampler": asdict(plan["rows"][row].sampler), "summary": summary[row], "pooled_realism": pooled[row],
                       "replicates": {str(s): measures[row][s] for s in sorted(measures[row])}} for row in summary},
        "references": {name: {"summary": reference_summary[name], "replicates": {str(s): references[s][name] for s in sorted(references)}} for name in REFERENCES},
        "realism_floor_real_vs_real": realism_floor,
        "pooled_realism_floor_real_vs_real": pooled_floor,
        "claims": claims,
        "trainings": trainings,
        "tuning": _tuning(out, plan["rows"]),
        "peers_skipped": sorted(set(settings.peers) - {t.method for t in plan["present"].values()}),
        "judge": _judge_quality(),
        "seconds": round(seconds, 1),
        "seconds_total": round(seconds if seconds_total is None else seconds_total, 1),
        "environment": environment(),
    }
    write_json(out / "metrics.json", metrics)
    grids = _grids(out, settings, summary)
    curves = _curves(out, settings, plan)
    atomic_write_text(out / "report.md", "\n".join(_markdown(metrics, grids, curves)))
    return metrics


def environment() -> dict:
    """Where and with what the tables were written: the machine, the libraries, this repository's commit (the
    trainings record the commit each ran at; the workers share this machine and venv)."""
    return {"machine": describe_machine(), "libraries": library_versions(), "commit": source_commit(Path(__file__).resolve().parents[2])}


def environment_line(metrics: dict) -> str:
    env = metrics.get("environment")
    if not env:
        return ""
    libraries = ", ".join(f"{name} {version}" for name, version in env["libraries"].items())
    return f"Machine: {env['machine']}. Libraries: {libraries}. Tables written at commit `{env['commit'][:12]}`."


def _tuning(out: Path, row_plan: dict) -> dict:
    """Each learning-rate sweep on the validation split (``tuning/<training>/choice.json``), and whether it was
    chosen before any model it tunes was sampled on the report's split (the files' modification times: a sweep
    added to an arena that had already sampled those rows says so, rather than claiming to have come first)."""
    choices = {}
    for path in sorted((out / "tuning").glob("*/choice.json")):
        name = path.parent.name
        tuned_rows = [row.name for row in row_plan.values() if row.training and tuning_of(row.training) == name]
        sampled = [p.stat().st_mtime for row in tuned_rows for p in (out / "samples" / row).glob("*.safetensors")]
        choices[name] = json.loads(path.read_text()) | {"before_sampling": path.stat().st_mtime < min(sampled, default=float("inf"))}
    return choices


def tuning_table(tuning: dict) -> list[str]:
    """The sweep: each candidate's validation numbers, the rate chosen (by the metric named) and when."""
    lines = ["| training | judged as | picked on | learning rate | steps | validation FD ↓ | validation prompt accuracy ↑ | chosen |", "|---|---|---|---|---|---|---|---|"]
    for name, choice in tuning.items():
        for key, c in choice["candidates"].items():
            chosen = "" if c["learning_rate"] != choice["learning_rate"] else "✓" if choice.get("before_sampling", True) else "✓ (after its test rows were sampled)"
            lines.append(f"| {name} | {choice['row']} | {choice['metric']} | {key} | {c['steps']} | {c['fd']:.2f} | {c['prompt_accuracy']:.3f} | {chosen} |")
    return lines


TUNING_NOTE = ("The learning rate of each UniFL stage and each peer was picked on the **validation** split (first training seed, its "
               "prompts, noise and real images; {images} images per candidate) before any model it tunes was sampled on the test "
               "split, except where the table says *after its test rows were sampled* (a sweep added to an arena that had "
               "already sampled them): the "
               "pocket preset's 2e-4 and 1e-3. Stage 2 and the few-step peers are picked on FD, stage 1 and AlignProp on prompt "
               "accuracy (`pocket/arena/plan.py`, `TUNING`); the chosen candidate's run is that seed's training, and an ablation "
               "takes its stage's rate.")


def _pooled_realism(out: Path, feature_files: list[Path]) -> dict:
    """FD and KID of all of a row's images (every replicate's) against the real reference set."""
    from ..judges import realism
    from .measure import load_tensor

    features = torch.cat([load_tensor(p) for p in feature_files])
    return realism(features, load_tensor(out / "references" / "real_features.safetensors")) | {"images": len(features)}


def _real_vs_real(out: Path, seed: int) -> dict:
    """FD/KID of the "other scenes" real renders against the reference set: the floor a perfect model sits on."""
    reference = json.loads((out / "references" / f"seed{seed}.json").read_text())
    return reference["real_other_scenes"]["realism"]


def _grids(out: Path, settings: ArenaSettings, summary: dict) -> dict[str, Path]:
    seed = settings.seeds[0]
    grids = {}
    for row in summary:
        images = load_images(out / "samples" / row / f"seed{seed}.safetensors")
        grids[row] = save_grid(images[:: settings.images_per_prompt][: settings.grid_images], out / f"grid_{row}.png", columns=settings.grid_images)
    return grids


def _curves(out: Path, settings: ArenaSettings, plan: dict) -> list[Path]:
    curves = []
    for name in plan["present"]:
        for seed in settings.seeds:
            log = out / "trainings" / name / f"seed{seed}" / "logs.csv"
            if log.is_file():
                curve = _plot_curves(log, out / f"curves_{name}_seed{seed}.png", f"{name} (seed {seed})")
                if curve:
                    curves.append(curve)
    return curves


def fmt(stats: dict) -> str:
    if stats["n"] <= 1:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['min']:.3f}, {stats['max']:.3f}]"


def table(rows: dict[str, dict], metrics=TABLE_METRICS, labels: dict[str, str] | None = None) -> list[str]:
    labels = labels or {}
    lines = ["| model | " + " | ".join(METRICS[m][2] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, stats in rows.items():
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(fmt(stats[m]) for m in metrics) + " |")
    return lines


def _markdown(metrics: dict, grids: dict, curves: list) -> list[str]:
    s, split = metrics["settings"], metrics["split"]
    n = len(s["seeds"])
    rows = {name: row["summary"] for name, row in metrics["rows"].items()}
    labels = {name: f"{name} ({row['label']}; {_sampler(row['sampler'])})" for name, row in metrics["rows"].items()}
    lines = [
        "# The pocket arena" + (" — SMOKE RUN (few steps and images: read nothing into these numbers)" if s["quick"] else ""),
        "",
        f"Split **{split['name']}**: prompts are the captions of world stream {split['prompt_seed']}, the real reference images "
        f"stream {split['real_seed']}; sampling noise seeds from {split['noise_seed']} (+100 000 per replicate). "
        f"{n} training seed(s) {s['seeds']}, each sampled with its own noise seeds; {s['num_prompts']} prompts × {s['images_per_prompt']} "
        f"images = {s['num_prompts'] * s['images_per_prompt']} images per model and replicate; realism against {s['num_real']} real renders. "
        f"UniFL stage 1: {s['stage1_steps']} steps, stage 2: {s['stage2_steps']} steps (pocket preset). Cells: mean [min, max] over replicates.",
        "",
        environment_line(metrics),
        "",
        "Judges (frozen before any model was scored, `pocket/weights/judges/BUILD.md`): **prompt accuracy** = per prompt the share of "
        "its checks that pass (object count; each prompted object's shape, colour, size; each stated relation; background tone; light "
        "direction), read by a detector trained on world streams no other model saw; **FD / KID** in that detector's trunk features; "
        "**aspect shortfall** = mean over the four held-out aspect judges of max(0, real − model), real = real renders of the same scenes.",
        "",
        "## All rows",
        "",
        *table(rows, labels=labels),
        "",
        "## References: ceiling and floors",
        "",
        *table({REFERENCES[k]: v["summary"] for k, v in metrics["references"].items()}),
        "",
        "Realism floor: the \"other scenes\" row's FD/KID is real renders against real renders (as many images as a model has).",
        "",
        f"## Realism on all of a row's images (every replicate pooled, against {s['num_real']} real renders)",
        "",
        *pooled_table(metrics),
        "",
        "## Claims, each checked by code (holds only when the spreads do not overlap)",
        "",
    ]
    if n <= 1:
        lines += ["With one replicate the spreads are points: these verdicts are the path working, not evidence.", ""]
    for group in ("paper", "ablation", "peer"):
        chosen = [c for c in metrics["claims"] if c["group"] == group]
        if chosen:
            lines += [f"**{group}**", ""] + [f"- {'✅ holds' if c['holds'] else '❌ does not hold'}: {c['claim']} ({c['numbers']})" for c in chosen] + [""]
    lines += ["## Trainings: wall time, steps, images seen, model evaluations", "",
              "Evaluations are images through a model (`pocket/arena/counting.py`): UNet forwards, and each feedback model (reward, "
              "perception, discriminator) an image passes. A blank cell: the run predates that count.", "",
              "| training | seed | method | seconds | steps | images seen | UNet evaluations | feedback-model evaluations | version |", "|---|---|---|---|---|---|---|---|---|"]
    for name, seeds in metrics["trainings"].items():
        for seed, r in seeds.items():
            lines.append(f"| {name} | {seed} | {r['method']} | {r['seconds']:.0f} | {r['steps']} | {r.get('images_seen', '')} | {r.get('unet_evaluations', '')} | {r.get('feedback_evaluations', '')} | {r.get('version', 'this repository')} |")
    if metrics["tuning"]:
        images = next(iter(metrics["tuning"].values()))["images"]
        lines += ["", "## Learning rates, chosen on the validation split", "", TUNING_NOTE.format(images=images), "", *tuning_table(metrics["tuning"])]
    patched = {name: r.get("patches", []) for name, seeds in metrics["trainings"].items() for r in seeds.values() if r.get("patches")}
    if patched:
        lines += ["", "Patches our glue applied to the peers' code at run time:", ""]
        for name, patches in patched.items():
            lines += [f"- **{name}**: " + "; ".join(patches)]
    if metrics["peers_skipped"]:
        lines += ["", f"Peers not on this machine, skipped: {', '.join(metrics['peers_skipped'])}."]
    lines += ["", "## Samples (same prompts and noise in every grid: replicate of the first seed)", ""]
    lines += [f"**{labels[name]}**\n\n![{name}]({path.name})\n" for name, path in grids.items()]
    lines += ["## Training curves", ""] + [f"![{c.stem}]({c.name})\n" for c in curves]
    lines += [f"Wall time: {metrics['seconds_total'] / 60:.0f} min over every invocation on this folder ({metrics['seconds']:.0f} s this one; jobs done earlier were skipped).", ""]
    return lines


def pooled_table(metrics: dict, names=None) -> list[str]:
    """FD and KID of every replicate's images of a row together (≥ 1024 in a full run), and the real floor."""
    floor = metrics["pooled_realism_floor_real_vs_real"]
    lines = ["| model | images | FD ↓ | KID ↓ |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['pooled_realism']['images']} | {row['pooled_realism']['fd']:.2f} | {row['pooled_realism']['kid']:.3f} |"
              for name, row in metrics["rows"].items() if names is None or name in names]
    return lines + [f"| real renders of other scenes (floor) | {floor['images']} | {floor['fd']:.2f} | {floor['kid']:.3f} |"]


def _sampler(sampler: dict) -> str:
    spacing = f" {sampler['spacing']}" if sampler["scheduler"] == "ddim" else ""
    return f"{sampler['scheduler'].upper()}{spacing} {sampler['steps']} steps, CFG {sampler['cfg']:g}"
