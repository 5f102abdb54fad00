"""Train the arena's prompt judge, reproducibly, on a CPU, and measure it on real renders.

``python -m unifl.pocket.build_judges --out pocket/weights/judges [--quick]`` writes

* ``prompt.safetensors`` – :class:`~.judges.PromptJudge`, trained on pocket stream ``JUDGE_SEEDS[0]``
  (301) and validated on ``JUDGE_SEEDS[1]`` (302): streams that no reward, perception model, evaluator or
  LDM saw;
* ``BUILD.md`` – command, seeds, steps, wall time, machine, and what it measured on the *real* validation
  renders: the accuracy of every check of :func:`~.judges.prompt_checks` (the ceiling a perfect generator
  would reach), the same on uniform noise and on real renders of other scenes (the floors), and the
  realism floor (FD and KID between two sets of real renders) against a blurred set.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.files import atomic_write_text
from .build_perception import RenderedSet, render_set
from .degrade import degradation
from .judges import (
    CHECKS,
    JUDGE_SEEDS,
    PromptJudge,
    embed,
    judge_loss,
    judge_targets,
    load_prompt_judge,
    mirror,
    prompt_accuracy,
    realism,
)
from .perception import save_weights

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
        f"Built with `python -m unifl.pocket.build_judges --out pocket/weights/judges{quick}` in {report['wall_seconds']:.0f} s wall "
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="judges folder (the shipped one is pocket/weights/judges)")
    parser.add_argument("--quick", action="store_true", help="a few images and steps: checks the pipeline, not the judge")
    args = parser.parse_args(argv)
    build(args.out, QUICK if args.quick else FULL, log=lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    main()
