"""``metrics.json`` and ``report.md`` of an arena run: tables with bootstrap intervals, the claims decided by the
family's Holm-corrected tests with the compute of both sides, controls, sweeps, grids, curves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ...core.files import atomic_write_text
from ...core.images import save_grid
from ...core.machine import describe_machine, library_versions, source_commit
from ..demo.demo import _plot_curves
from .claims import CHOICES_FAMILY, FAMILY, METRICS, NO_WORSE_MARGIN, REALISM, aggregate, choices_family, decide, family, planned_claims
from .counting import training_compute
from .measure import load_images, load_per_image, load_tensor, prompt_judge_version, write_json
from .plan import SPLITS, ArenaSettings, tuning_of
from .stats import FrechetToReal, ImageMean, KernelDistanceToReal, MeanAbsoluteGap, centred_interval, bootstrap, bootstrap_weights

BOOTSTRAP_METRICS = ("prompt_accuracy", "all_correct", "prompt_accuracy_v1", "all_correct_v1", *REALISM, "aspect_shortfall")
"""The metrics with bootstrap intervals (per-image values or sets resampled); the others show mean [min, max] over seeds."""
TABLE_METRICS = ("prompt_accuracy", "all_correct", "count", "shape", "colour", "size", "relation", "tone", "light", "precision", "recall",
                 "extra_objects", "missing_objects", "prompt_accuracy_v1", "all_correct_v1", *REALISM, "aspect_shortfall")
"""The tables' columns, those the judges measured (version 2's precision and recall, version 1's columns beside)."""
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
    boot = row_bootstraps(out, settings, list(summary))
    intervals = {row: {m: _interval(draws, settings.confidence) for m, draws in metrics.items()} for row, metrics in boot.items()}
    row_plan = {name: plan["rows"][name] for name in summary}
    claims = decide(planned_claims(set(summary)), boot, row_plan, settings.family_alpha, settings.confidence)
    candidates = [c for c in choices_family(settings.variants) if c.a in summary and c.b in summary]
    choices = decide(candidates, boot, row_plan, settings.family_alpha, settings.confidence) if candidates else []
    by_training = {}
    for (name, seed), result in sorted(results.items()):
        by_training.setdefault(name, {})[str(seed)] = result
    compute = {row: training_compute(plan["rows"][row].training, plan["trainings"], by_training) for row in summary}
    for claim in [*claims, *choices]:
        claim["compute"] = {side: _row_compute(compute, plan["rows"], claim[side]) for side in ("a", "b")}
    not_run = {name: _why_not_run(row, plan) for name, row in plan["planned_rows"].items() if name not in summary}
    metrics = {
        "split": asdict(split),
        "settings": json.loads(json.dumps(asdict(settings))),
        "rows": {row: {"label": plan["rows"][row].label, "group": plan["rows"][row].group, "training": plan["rows"][row].training,
                       "control_of": plan["rows"][row].control_of, "sampler": asdict(plan["rows"][row].sampler), "summary": summary[row],
                       "intervals": intervals[row], "compute": _row_compute(compute, plan["rows"], row), "pooled_realism": pooled[row],
                       "replicates": {str(s): measures[row][s] for s in sorted(measures[row])}} for row in summary},
        "not_run": not_run,
        "references": {name: {"summary": reference_summary[name], "replicates": {str(s): references[s][name] for s in sorted(references)}} for name in REFERENCES},
        "realism_floor_real_vs_real": realism_floor,
        "pooled_realism_floor_real_vs_real": pooled_floor,
        "family": {"name": FAMILY, "alpha": settings.family_alpha, "confidence": settings.confidence, "no_worse_margin": NO_WORSE_MARGIN,
                   "draws": settings.bootstrap_draws, "tests": sum(len(c["tests"]) for c in claims)},
        "claims": claims,
        "claims_not_run": [c.text for c in family() if c.a not in summary or c.b not in summary],
        **({"choices": {"family": {"name": CHOICES_FAMILY, "alpha": settings.family_alpha, "tests": sum(len(c["tests"]) for c in choices)}, "claims": choices}}
           if settings.variants else {}),
        "trainings": by_training,
        "tuning": _tuning(out, plan["rows"]),
        "controls": {path.parent.name: json.loads(path.read_text()) for path in sorted((out / "controls").glob("*/choice.json"))},
        "peers_skipped": sorted(plan["missing"]),
        "peers_missing": plan["missing"],
        "judge": _judge_quality(),
        "prompt_judge_version": prompt_judge_version(),
        "seconds": round(seconds, 1),
        "seconds_total": round(seconds if seconds_total is None else seconds_total, 1),
        "environment": environment(),
    }
    write_json(out / "metrics.json", metrics)
    grids = _grids(out, settings, summary)
    curves = _curves(out, settings, plan)
    atomic_write_text(out / "report.md", "\n".join(_markdown(metrics, grids, curves)))
    return metrics


def row_bootstraps(out: Path, settings: ArenaSettings, rows: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Each row's :data:`BOOTSTRAP_METRICS` under one shared set of draws (seeds, then prompts; draw 0 the point)."""
    seeds, k = list(settings.seeds), settings.images_per_prompt
    weights = bootstrap_weights(len(seeds), settings.num_prompts, settings.bootstrap_draws + 1, seed=0)
    real = load_tensor(out / "references" / "real_features.safetensors").double().numpy()
    real_aspects = [load_per_image(out / "references" / f"seed{s}.same_scenes.per_image.safetensors") for s in seeds]
    real_shares = None
    if "spectrum" in REALISM:
        from ..judges.spectrum import log_band_shares

        real_shares = log_band_shares(load_images(out / "references" / "real_images.safetensors")).double().numpy()
    boot = {}
    for row in rows:
        per_image = [load_per_image(out / "measures" / row / f"seed{s}.per_image.safetensors") for s in seeds]
        features = np.stack([load_tensor(out / "measures" / row / f"seed{s}.features.safetensors").double().numpy() for s in seeds])
        stack = lambda key, data: np.stack([d[key] for d in data])  # noqa: E731
        aspects = [key for key in per_image[0] if key.startswith("aspect.")]
        shortfall = [np.clip(bootstrap(ImageMean(stack(a, real_aspects), k), weights) - bootstrap(ImageMean(stack(a, per_image), k), weights), 0, None) for a in aspects]
        boot[row] = {
            "prompt_accuracy": bootstrap(ImageMean(stack("prompt_accuracy", per_image), k), weights),
            "all_correct": bootstrap(ImageMean(stack("all_correct", per_image), k), weights),
            "prompt_accuracy_v1": bootstrap(ImageMean(stack("prompt_accuracy_v1", per_image), k), weights),
            "all_correct_v1": bootstrap(ImageMean(stack("all_correct_v1", per_image), k), weights),
            "fd": bootstrap(FrechetToReal(features, real, k), weights),
            "kid": bootstrap(KernelDistanceToReal(features, real, k), weights),
            "aspect_shortfall": np.mean(shortfall, axis=0),
        }
        if real_shares is not None:
            boot[row]["spectrum"] = bootstrap(MeanAbsoluteGap(stack("log_band_shares", per_image), real_shares, k), weights)
    return boot


def _interval(draws: np.ndarray, confidence: float) -> dict:
    return {"point": float(draws[0]), "interval": list(centred_interval(draws, confidence))}


def _row_compute(compute: dict, rows: dict, row: str) -> dict:
    """A row's training compute (its lineage's, mean over seeds) and its sampling cost per image."""
    training = compute.get(row)
    return {"training": training, "unet_calls_per_image": rows[row].sampler.unet_calls_per_image() if row in rows else None}


def _why_not_run(row, plan: dict) -> str:
    if row.control_of and not plan["post_filters"]:
        return "no post-filter registry in the judges"
    training = plan["trainings"].get(row.training) if row.training else None
    if training is not None and training.method in plan["missing"]:
        return plan["missing"][training.method]
    return "not planned"


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
    """Every sweep: each candidate's validation numbers, the value chosen on each axis (by the metric named), whether
    the grid was widened and whether the choice still sits at its edge, and when it was chosen."""
    lines = ["| training | judged as | picked on | axis | value | steps | validation FD ↓ | validation prompt accuracy ↑ | chosen |", "|---|---|---|---|---|---|---|---|---|"]
    for name, choice in tuning.items():
        if choice.get("from"):
            lines.append(f"| {name} | {choice['row']} | {choice['metric']} | all | {_hyperparameters(choice['hyperparameters'])} | | | | ✓ (taken from {choice['from']}) |")
            if choice.get("lora_scores"):
                scores = ", ".join(f"{variant}: {score:.3f}" for variant, score in choice["lora_scores"].items())
                lines.append(f"| {name} | {choice['row']} | {choice['metric']} | LoRA | {choice['lora']} | | | | ✓ (each variant's tuned validation {choice['metric']}: {scores}) |")
            continue
        for axis in choice.get("axes", []):
            for key, c in axis["candidates"].items():
                chosen = c["hyperparameters"] == axis["hyperparameters"]
                mark = "" if not chosen else "✓" if choice.get("before_sampling", True) else "✓ (after its test rows were sampled)"
                if chosen and axis.get("at_edge"):
                    mark += f" (at the grid's edge after {axis['widened']} widenings)"
                elif chosen and axis.get("widened"):
                    mark += f" (grid widened {axis['widened']}×)"
                lines.append(f"| {name} | {axis['row']} | {axis['metric']} | {axis['axis']} | {key} | {c['steps']} | {c['fd']:.2f} | {c['prompt_accuracy']:.3f} | {mark} |")
    return lines


def _hyperparameters(values: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items()) or "defaults"


TUNING_NOTE = ("The hyperparameters of each UniFL stage and each peer were picked on the **validation** split (first training seed, its "
               "prompts, noise and real images; {images} images per candidate) before any model they tune was sampled on the test "
               "split, except where the table says *after its test rows were sampled*: a learning-rate grid of at least four values "
               "spaced ×2–×2.5, widened by ×2.5 while the best value sat at an edge, then, for UniFL's stage 2 and PCM's adversarial "
               "variant, the discriminator's learning rate the same way. Stage 2 and the few-step peers are picked on FD, stage 1 "
               "and AlignProp on prompt accuracy (`pocket/arena/plan.py`, `TUNING`); the chosen candidate's run is that seed's "
               "training, an ablation takes its stage's values, and each peer's own-LoRA variant is swept as itself. The standard "
               "run takes these choices from the tuning run (`make arena-tune`; rows *taken from*), each peer with the LoRA "
               "variant that scored better there.")


def cell(row: dict, metric: str) -> str:
    """A table cell: the bootstrap point and interval where there is one, else mean [min, max] over the seeds."""
    if metric in row.get("intervals", {}):
        i = row["intervals"][metric]
        return f"{i['point']:.3f} [{i['interval'][0]:.3f}, {i['interval'][1]:.3f}]"
    return fmt(row["summary"][metric])


def compute_text(compute: dict) -> str:
    training = compute.get("training")
    sampling = f"{compute['unet_calls_per_image']} UNet calls per image"
    if training is None:
        return f"no training; {sampling}"
    if not training:
        return f"training not run; {sampling}"
    return (f"{training['seconds']:.0f} s, {training['unet_evaluations']:.0f} UNet and {training['feedback_evaluations']:.0f} feedback-model "
            f"evaluations, {training['images_seen']:.0f} images seen ({' → '.join(training['lineage'])}); {sampling}")


def claim_lines(claims: list[dict], groups: tuple[str, ...]) -> list[str]:
    """Each claim's verdict, its tests (difference A − B with its interval, Holm-adjusted p) and both sides' compute."""
    lines = []
    for c in claims:
        if c["group"] not in groups:
            continue
        tests = "; ".join(f"{METRICS[t['metric']][2]} vs {t['b']}: {t['difference']:+.3f} [{t['interval'][0]:+.3f}, {t['interval'][1]:+.3f}], "
                          f"Holm p {t['holm_p']:.3g} {'✓' if t['holds'] else '✗'}" for t in c["tests"])
        compute = c.get("compute", {})
        lines.append(f"- {'✅ holds' if c['holds'] else '❌ does not hold'}: {c['claim']} ({tests})"
                     + (f"\n  - compute: **{c['a']}** {compute_text(compute['a'])}; **{c['b']}** {compute_text(compute['b'])}" if compute else ""))
    return lines


def _pooled_realism(out: Path, feature_files: list[Path]) -> dict:
    """FD and KID of all of a row's images (every replicate's) against the real reference set."""
    from ..judges.judges import realism
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
    """``rows``: name → a metrics.json row (``summary``, ``intervals``) or a bare summary (references)."""
    labels = labels or {}
    rows = {name: row if "summary" in row else {"summary": row} for name, row in rows.items()}
    metrics = [m for m in metrics if all(m in row["summary"] for row in rows.values())]
    lines = ["| model | " + " | ".join(METRICS[m][2] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, row in rows.items():
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cell(row, m) for m in metrics) + " |")
    return lines


def not_run_lines(metrics: dict) -> list[str]:
    return [f"| {name} | not run: {why} |" for name, why in metrics.get("not_run", {}).items()]


def _markdown(metrics: dict, grids: dict, curves: list) -> list[str]:
    s, split = metrics["settings"], metrics["split"]
    n = len(s["seeds"])
    rows = metrics["rows"]
    labels = {name: f"{name} ({row['label']}; {_sampler(row['sampler'])})" for name, row in metrics["rows"].items()}
    family = metrics["family"]
    lines = [
        "# The pocket arena" + (" — SMOKE RUN (few steps and images: read nothing into these numbers)" if s["quick"] else ""),
        "",
        f"Split **{split['name']}**: prompts are the captions of world stream {split['prompt_seed']}, the real reference images "
        f"stream {split['real_seed']}; sampling noise seeds from {split['noise_seed']} (+100 000 per replicate). "
        f"{n} training seed(s) {s['seeds']}, each sampled with its own noise seeds; {s['num_prompts']} prompts × {s['images_per_prompt']} "
        f"images = {s['num_prompts'] * s['images_per_prompt']} images per model and replicate; realism against {s['num_real']} real renders. "
        f"UniFL stage 1: {s['stage1_steps'] * s['budget']} steps, stage 2: {s['stage2_steps'] * s['budget']} steps (budget ×{s['budget']}). "
        f"Cells: point [{family['confidence']:.0%} interval] of a hierarchical paired bootstrap ({family['draws']} draws: seeds, then prompts) "
        f"for {', '.join(BOOTSTRAP_METRICS)}; mean [min, max] over the seeds for the other columns.",
        "",
        environment_line(metrics),
        "",
        "Judges (frozen before any model was scored, `pocket/weights/judges/BUILD.md`): " + JUDGE_NOTES[metrics.get("prompt_judge_version", 1)]
        + " **FD / KID** in that detector's trunk features" + ("; **spectrum** = the distance between the per-frequency power spectra "
        "of a row's images and of real renders (`pocket/judges/spectrum.py`)" if "spectrum" in REALISM else "") + "; **aspect shortfall** = mean over the "
        "four held-out aspect judges of max(0, real − model), real = real renders of the same scenes.",
        "",
        "## All rows",
        "",
        *table(rows, labels=labels),
        "",
        *(["| row | |", "|---|---|", *not_run_lines(metrics), ""] if metrics.get("not_run") else []),
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
        f"## Claims: one family ({family['name']}, {family['tests']} tests), Holm-corrected at {family['alpha']:g}",
        "",
        FAMILY_NOTE.format(margin=family["no_worse_margin"]),
        "",
    ]
    if n <= 1:
        lines += ["With one training seed the bootstrap resamples prompts only: these verdicts are the path working, not evidence.", ""]
    for group in ("paper", "ablation", "peer"):
        if any(c["group"] == group for c in metrics["claims"]):
            lines += [f"**{group}**", "", *claim_lines(metrics["claims"], (group,)), ""]
    if metrics.get("claims_not_run"):
        lines += ["**not run** (a row they need did not run):", "", *[f"- {text}" for text in metrics["claims_not_run"]], ""]
    if metrics.get("choices"):
        chosen = metrics["choices"]["family"]
        lines += [f"## Candidate defaults against today's: a family of their own ({chosen['name']}, {chosen['tests']} tests), Holm-corrected at {chosen['alpha']:g}", "",
                  "Each variant trained beside today's UniFL at today's tuned rates and the same steps, seeds, prompts and noise; "
                  "`docs/paper-choices.md` says which verdicts make a variant the default (a cheaper step that is no worse at equal "
                  "steps wins at lower cost).", "", *claim_lines(metrics["choices"]["claims"], ("choice",)), ""]
    lines += ["## Trainings: wall time, steps, images seen, model evaluations", "",
              "Evaluations are images through a model (`pocket/arena/counting.py`): UNet forwards, and each feedback model (reward, "
              "perception, discriminator) an image passes. A blank cell: the run predates that count.", "",
              "| training | seed | method | seconds | steps | images seen | UNet evaluations | feedback-model evaluations | version |", "|---|---|---|---|---|---|---|---|---|"]
    for name, seeds in metrics["trainings"].items():
        for seed, r in seeds.items():
            lines.append(f"| {name} | {seed} | {r['method']} | {r['seconds']:.0f} | {r['steps']} | {r.get('images_seen', '')} | {r.get('unet_evaluations', '')} | {r.get('feedback_evaluations', '')} | {r.get('version', 'this repository')} |")
    if metrics["tuning"]:
        images = next(iter(metrics["tuning"].values()))["images"]
        lines += ["", "## Hyperparameters, chosen on the validation split", "", TUNING_NOTE.format(images=images), "", *tuning_table(metrics["tuning"])]
    if metrics.get("controls"):
        lines += ["", "## Post-filter controls, chosen per row on the validation split", "", *control_table(metrics["controls"])]
    patched = {name: r.get("patches", []) for name, seeds in metrics["trainings"].items() for r in seeds.values() if r.get("patches")}
    if patched:
        lines += ["", "Patches our glue applied to the peers' code at run time:", ""]
        for name, patches in patched.items():
            lines += [f"- **{name}**: " + "; ".join(patches)]
    for method, why in metrics.get("peers_missing", {}).items():
        lines += ["", f"**{method} was not run**: {why}."]
    lines += ["", "## Samples (same prompts and noise in every grid: replicate of the first seed)", ""]
    lines += [f"**{labels[name]}**\n\n![{name}]({path.name})\n" for name, path in grids.items()]
    lines += ["## Training curves", ""] + [f"![{c.stem}]({c.name})\n" for c in curves]
    lines += [f"Wall time: {metrics['seconds_total'] / 60:.0f} min over every invocation on this folder ({metrics['seconds']:.0f} s this one; jobs done earlier were skipped).", ""]
    return lines


JUDGE_NOTES = {
    1: ("**prompt accuracy** = per prompt the share of its checks that pass (object count; each prompted object's shape, colour, "
        "size; each stated relation; background tone; light direction), read by a detector trained on world streams no other model saw."),
    2: ("**prompt accuracy** (prompt judge version 2, `pocket/weights/judges/PROMPT_V2.md`) = per prompt the mean of its kinds of check: "
        "the object count; shape, colour and size each as an F1 over one-to-one matches with everything the image shows (an extra "
        "object costs precision, a missing one recall); the stated relations; background tone; light direction, read by a detector "
        "trained on world streams no other model saw; version 1's prompt accuracy and all-checks columns stand beside it."),
}


FAMILY_NOTE = ("Each claim is decided by code (`pocket/arena/claims.py`, the family fixed before the run): per metric and opponent, "
               "A − B with its interval and the Holm-adjusted one-sided p-value; a claim holds when every test does. A realism claim "
               "is tested against B *and* B's post-filter control, a claim against a peer against the peer with UniFL's LoRA *and* "
               "with its script's own where both were trained (the standard run trains the one that won on validation). \"No worse\" allows {margin:.0%} of B's value, declared in advance. Each claim states the "
               "compute of both sides: training wall time, UNet and feedback-model evaluations and images seen (mean over seeds, "
               "summed over the trainings a LoRA continues), and sampling UNet calls per image.")


def control_table(controls: dict) -> list[str]:
    lines = ["| row | filter | strength | chosen on |", "|---|---|---|---|"]
    for row, choice in controls.items():
        lines.append(f"| {row} | {choice.get('filter')} | {choice.get('strength')} | {choice['split']} split, seed {choice['seed']} |")
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
