"""Train the arena's prompt judge, reproducibly, on a CPU, and measure it on real renders.

``python -m unifl.pocket.judges.build_judges --out pocket/weights/judges [--quick]`` writes

* ``prompt.safetensors`` – :class:`~.judges.PromptJudge`, trained on pocket stream ``JUDGE_SEEDS[0]``
  (301) and validated on ``JUDGE_SEEDS[1]`` (302): streams that no reward, perception model, evaluator or
  LDM saw;
* ``BUILD.md`` – command, seeds, steps, wall time, machine, and what it measured on the *real* validation
  renders: the accuracy of every check of :func:`~.judges.prompt_checks` (the ceiling a perfect generator
  would reach), the same on uniform noise and on real renders of other scenes (the floors), and the
  realism floor (FD and KID between two sets of real renders) against a blurred set.

``python -m unifl.pocket.judges.build_judges --out pocket/weights/judges --rule-v2`` keeps the network and chooses
version 2's matching rule (:data:`~.judges.RULE_V2`, the confidence cut for a found object) on real renders of
the validation stream only: clean, blurred and low-res (world truth, no model's samples), the cut that scores
them best against their own scenes. It writes ``prompt_v2.json`` and ``PROMPT_V2.md``: the sweep, and both
versions' scores of the right scene, the right scene with extra objects, an empty scene, other prompts'
scenes and random 4–5-object scenes.

Single-threaded, seeded; quality is measured on the saved fp16 file reloaded, i.e. on what ships. The
judge is frozen before any arena model is scored: never rebuild it after looking at test-split scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...core.files import atomic_write_text
from ..models.build_perception import RenderedSet, render_set
from ..world.degrade import degradation
from .judges import (
    CHECKS,
    CHECKS_V2,
    JUDGE_SEEDS,
    MIN_SCORE_GRID_V2,
    MatchingRuleV2,
    PromptJudge,
    embed,
    judge_loss,
    judge_targets,
    load_prompt_judge,
    mirror,
    prompt_accuracy,
    prompt_accuracy_from_readings,
    prompt_scores_v2,
    read_scenes,
    realism,
)
from ..models.perception import save_weights
from ..world.world import (
    PocketDataset,
    Scene,
    WorldConfig,
    _draw_object,
    _legible,
    _place,
    render,
)

MODEL_SEED = 311
LEARNING_RATE = 3e-3


@dataclass(frozen=True)
class JudgePlan:
    train_images: int
    val_images: int
    batch_size: int
    steps: int


FULL = JudgePlan(train_images=8000, val_images=1024, batch_size=8, steps=5000)
QUICK = JudgePlan(train_images=16, val_images=16, batch_size=4, steps=2)


def batch_targets(data: RenderedSet, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    res = data.images.shape[-1]
    parts = [judge_targets(data.scenes[i], data.instance_ids[i], res) for i in indices.tolist()]
    maps, heat, scene = (torch.stack(p) for p in zip(*parts))
    return data.images[indices].float(), maps, heat, scene


def train(model: PromptJudge, data: RenderedSet, plan: JudgePlan, seed: int) -> float:
    """AdamW, one-cycle schedule, shuffled epochs, half the batches mirrored; mean loss of the last tenth."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, total_steps=plan.steps, pct_start=0.15)
    model.train()
    order, cursor, recent = torch.randperm(len(data), generator=generator), 0, []
    progress = tqdm(range(plan.steps), desc="train prompt judge", mininterval=10)
    for step in progress:
        if cursor + plan.batch_size > len(data):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        batch = batch_targets(data, order[cursor : cursor + plan.batch_size])
        cursor += plan.batch_size
        if torch.rand((), generator=generator) < 0.5:
            batch = mirror(*batch)
        loss = judge_loss(model, *batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step >= plan.steps - max(1, plan.steps // 10):
            recent.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return float(np.mean(recent))


@torch.no_grad()
def pixel_accuracy(model: PromptJudge, data: RenderedSet) -> dict[str, float]:
    """Per attribute, the share of object pixels labelled right (the dense reading, before any voting)."""
    correct, total = np.zeros(4), 0
    for start in range(0, len(data), 128):
        images, maps, _, _ = batch_targets(data, torch.arange(start, min(start + 128, len(data))))
        groups, _, _ = model(images)
        on_object = maps[:, 0] > 0
        correct += [float((g.argmax(1) == maps[:, k])[on_object].sum()) for k, g in enumerate(groups)]
        total += int(on_object.sum())
    return {f"{name}_pixels": float(c / max(total, 1)) for name, c in zip(("shape", "colour", "size", "pattern"), correct)}


@torch.no_grad()
def measure(model: PromptJudge, data: RenderedSet) -> dict:
    """On real renders of the validation stream: ceiling, floors, and the realism floor against blur."""
    images, scenes = data.images.float(), data.scenes
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    other_scenes = scenes[len(scenes) // 2 :] + scenes[: len(scenes) // 2]  # every image against another scene's prompt
    half = len(images) // 2
    rng = np.random.default_rng(0)
    blurred = torch.stack([degradation(scene, "detail", rng, strength=0.7, variant="blur").image for scene in scenes[half : 2 * half]])
    first, second, blur = (embed(x, model) for x in (images[:half], images[half : 2 * half], blurred))
    return {
        "ceiling_real_same_scenes": prompt_accuracy(images, scenes, model),
        "floor_uniform_noise": prompt_accuracy(noise, scenes, model),
        "floor_real_other_scenes": prompt_accuracy(images, other_scenes, model),
        "pixels": pixel_accuracy(model, data),
        "realism_real_vs_real": realism(first, second),
        "realism_real_vs_blurred": realism(blur, first),
        "realism_images_per_set": half,
    }


def build(out: Path, plan: JudgePlan, log=print) -> dict:
    torch.set_num_threads(1)
    started = time.perf_counter()
    train_set, val_set = render_set(plan.train_images, JUDGE_SEEDS[0]), render_set(plan.val_images, JUDGE_SEEDS[1])
    render_seconds = time.perf_counter() - started
    torch.manual_seed(MODEL_SEED)
    model = PromptJudge()
    tick = time.perf_counter()
    final_loss = train(model, train_set, plan, MODEL_SEED)
    train_seconds = time.perf_counter() - tick
    path = out / "prompt.safetensors"
    save_weights(model, path)
    shipped = load_prompt_judge(str(path))
    quality = measure(shipped, val_set)
    report = {
        "plan": asdict(plan), "seeds": JUDGE_SEEDS, "model_seed": MODEL_SEED, "final_loss": final_loss,
        "render_seconds": render_seconds, "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - started,
        "parameters": sum(p.numel() for p in shipped.parameters()), "bytes": path.stat().st_size, "quality": quality,
        "load_average": os.getloadavg()[0],
    }
    atomic_write_text(out / "quality.json", json.dumps(report, indent=2))
    write_build_notes(out / "BUILD.md", plan, report)
    log(json.dumps(quality["ceiling_real_same_scenes"]))
    return report


def _row(name: str, values: dict) -> str:
    return f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in ("prompt_accuracy", "all_correct", *CHECKS)) + " |"


def write_build_notes(path: Path, plan: JudgePlan, report: dict) -> None:
    quick = " --quick" if plan is QUICK else ""
    q = report["quality"]
    lines = [
        "# The arena's prompt judge",
        "",
        f"Built with `python -m unifl.pocket.judges.build_judges --out pocket/weights/judges{quick}` in {report['wall_seconds']:.0f} s wall "
        f"({report['render_seconds']:.0f} s rendering, {report['train_seconds']:.0f} s training), single-threaded torch {torch.__version__} "
        f"on {platform.machine()} {platform.processor() or platform.system()} ({os.cpu_count()} cores, shared), Python {platform.python_version()}.",
        "",
        f"Data: {plan.train_images} training images of pocket stream {JUDGE_SEEDS[0]}, {plan.val_images} validation images of stream "
        f"{JUDGE_SEEDS[1]} (no reward, perception model, evaluator or LDM saw either), 64 px. {plan.steps} steps of AdamW, one-cycle lr "
        f"{LEARNING_RATE}, batch {plan.batch_size}, half the batches mirrored left–right (light left ↔ right); model seed {report['model_seed']}; "
        f"final loss {report['final_loss']:.4f}. {report['parameters']:,} parameters, {report['bytes']:,} bytes (fp16). "
        f"{report['train_seconds'] / plan.steps:.3f} s a training step here, load average {report.get('load_average', float('nan')):.1f} at the end "
        "(the machine is shared: on an idle core a step takes about 0.15 s, 5000 steps about 13 min).",
        "",
        "## What it reads right on real renders (validation stream, the saved file reloaded)",
        "",
        "Prompt accuracy is the mean over prompts of the share of its checks that pass; `all_correct` the share of prompts "
        "passing all; the other columns are the accuracy of each kind of check over all its instances.",
        "",
        "| images scored against | prompt accuracy | all correct | " + " | ".join(CHECKS) + " |",
        "|---|---|---|" + "---|" * len(CHECKS),
        _row("their own scenes (ceiling)", q["ceiling_real_same_scenes"]),
        _row("other scenes' prompts (floor)", q["floor_real_other_scenes"]),
        _row("uniform noise (floor)", q["floor_uniform_noise"]),
        "",
        "Dense reading, share of object pixels labelled right: " + ", ".join(f"{k} {v:.3f}" for k, v in q["pixels"].items()) + ".",
        "",
        f"Realism feature space (the judge's trunk, 128-d), two sets of {q['realism_images_per_set']} real renders: "
        f"FD {q['realism_real_vs_real']['fd']:.2f}, KID {q['realism_real_vs_real']['kid']:.3f}; "
        f"against the same number blurred (degrade 'detail'/'blur', strength 0.7): FD {q['realism_real_vs_blurred']['fd']:.2f}, "
        f"KID {q['realism_real_vs_blurred']['kid']:.3f}.",
        "",
        "All numbers: `quality.json` beside this file.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


# ------------------------------------------------------------------------------------- version 2's rule

RULE_V2_IMAGES, RULE_V2_QUICK_IMAGES = 1024, 16
RULE_V2_DETAIL = ("blur", "lowres")
"""Besides the clean renders, the cut is scored on these detail degradations (strength 0.7): real objects
drawn faintly, as few-step samples draw them, so the cut does not lose what a blur leaves readable."""


def cluttered(scene: Scene, rng: np.random.Generator, extra: int = 2, config: WorldConfig = WorldConfig()) -> Scene:
    """``scene`` with ``extra`` more random objects placed as the world places them (the asked ones stay legible)."""
    objects = list(scene.objects)
    for _ in range(100 * extra):
        if len(objects) == len(scene.objects) + extra:
            break
        candidate = _place(_draw_object(rng), objects, rng)
        if candidate is not None and _legible(replace(scene, objects=(*objects, candidate)), config):
            objects.append(candidate)
    return replace(scene, objects=tuple(objects))


def reference_scenes(scenes: list[Scene], seed: int) -> dict[str, list[Scene]]:
    """What each prompt's scene is compared with: itself, itself with two extra objects, its background
    alone, the next prompt's scene, and random scenes of 4–5 objects (stream ``seed``)."""
    rng = np.random.default_rng(seed)
    crowded = PocketDataset(len(scenes), seed, WorldConfig(min_objects=4, max_objects=5))
    return {
        "right scene": scenes,
        "right scene + 2 extra objects": [cluttered(scene, rng) for scene in scenes],
        "empty scene (background only)": [replace(scene, objects=()) for scene in scenes],
        "other prompts' scenes": scenes[1:] + scenes[:1],
        "random 4–5-object scenes": [crowded.scene(i) for i in range(len(scenes))],
    }


def choose_rule_v2(judge: PromptJudge, scenes: list[Scene], grid=MIN_SCORE_GRID_V2) -> tuple[MatchingRuleV2, list[dict]]:
    """The cut of ``grid`` under which real renders of ``scenes`` (clean and :data:`RULE_V2_DETAIL`-degraded)
    score best against their own scenes (mean over the three sets); ties go to the lower cut."""
    rng = np.random.default_rng(0)
    sets = {"clean": torch.stack([render(scene).image for scene in scenes])}
    for variant in RULE_V2_DETAIL:
        sets[variant] = torch.stack([degradation(scene, "detail", rng, strength=0.7, variant=variant).image for scene in scenes])
    readings = {name: read_scenes(judge, images) for name, images in sets.items()}
    table = []
    for cut in grid:
        scores = {name: prompt_scores_v2(r, scenes, rule=MatchingRuleV2(cut))["prompt_accuracy"] for name, r in readings.items()}
        table.append({"min_score": cut, **scores, "mean": float(np.mean(list(scores.values())))})
    best = max(table, key=lambda row: row["mean"])  # max keeps the first of equals: the lower cut
    return MatchingRuleV2(best["min_score"]), table


def build_rule_v2(out: Path, images: int, log=print) -> dict:
    torch.set_num_threads(1)
    started = time.perf_counter()
    judge = load_prompt_judge(str(out / "prompt.safetensors"))
    world = PocketDataset(images, JUDGE_SEEDS[1])
    scenes = [world.scene(i) for i in range(images)]
    rule, sweep = choose_rule_v2(judge, scenes)
    references = {}
    for name, shown in reference_scenes(scenes, JUDGE_SEEDS[1] + 1000).items():
        readings = read_scenes(judge, torch.stack([render(scene).image for scene in shown]))
        references[name] = {"v1": prompt_accuracy_from_readings(readings, scenes, version=1), "v2": prompt_scores_v2(readings, scenes, rule=rule)}
    report = {"images": images, "seed": JUDGE_SEEDS[1], "detail_variants": RULE_V2_DETAIL, "rule": asdict(rule), "sweep": sweep,
              "references": references, "wall_seconds": time.perf_counter() - started}
    atomic_write_text(out / "prompt_v2.json", json.dumps(report, indent=2))
    write_rule_v2_notes(out / "PROMPT_V2.md", report, quick=images != RULE_V2_IMAGES)
    log(f"version 2 rule: {asdict(rule)}")
    return report


def write_rule_v2_notes(path: Path, report: dict, quick: bool) -> None:
    option = " --quick" if quick else ""
    v2_columns = (*CHECKS_V2, "precision", "recall", "extra_objects")
    lines = [
        "# The prompt judge, version 2: scoring what was asked against everything shown",
        "",
        f"Written by `python -m unifl.pocket.judges.build_judges --out pocket/weights/judges --rule-v2{option}` in {report['wall_seconds']:.0f} s "
        f"(torch {torch.__version__}, {platform.machine()}, Python {platform.python_version()}). The network is version 1's "
        "(`prompt.safetensors`, `BUILD.md`); version 2 changes the scoring (`pocket/judges/judges.py`, `prompt_scores_v2`).",
        "",
        f"## The confidence cut, chosen on {report['images']} real renders of the validation stream {report['seed']}",
        "",
        "Mean version-2 prompt accuracy of real renders against their own scenes, clean and degraded ('detail', strength 0.7); "
        f"the cut with the best mean is frozen in `RULE_V2` (ties to the lower cut): **{report['rule']['min_score']}**.",
        "",
        "| cut | clean | " + " | ".join(report["detail_variants"]) + " | mean |",
        "|---|---|" + "---|" * len(report["detail_variants"]) + "---|",
        *(f"| {row['min_score']} | {row['clean']:.4f} | " + " | ".join(f"{row[v]:.4f}" for v in report["detail_variants"]) + f" | {row['mean']:.4f} |"
          for row in report["sweep"]),
        "",
        "## Both versions on real renders shown against each prompt (validation stream)",
        "",
        "| shown | v1 prompt accuracy | v2 prompt accuracy | " + " | ".join(v2_columns) + " |",
        "|---|---|---|" + "---|" * len(v2_columns),
        *(f"| {name} | {r['v1']['prompt_accuracy']:.3f} | {r['v2']['prompt_accuracy']:.3f} | " + " | ".join(f"{r['v2'][c]:.3f}" for c in v2_columns) + " |"
          for name, r in report["references"].items()),
        "",
        "All numbers: `prompt_v2.json` beside this file.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="judges folder (the shipped one is pocket/weights/judges)")
    parser.add_argument("--quick", action="store_true", help="a few images and steps: checks the pipeline, not the judge")
    parser.add_argument("--rule-v2", action="store_true", help="keep the network in --out and choose version 2's matching rule")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr)
    if args.rule_v2:
        build_rule_v2(args.out, RULE_V2_QUICK_IMAGES if args.quick else RULE_V2_IMAGES, log=log)
    else:
        build(args.out, QUICK if args.quick else FULL, log=log)


if __name__ == "__main__":
    main()
