"""``unifl demo``: stage 1 then stage 2, end to end, offline, on a CPU, with a report.

Until the pocket world's pretrained model lands, the demo runs on a *tiny randomly initialised*
SD1.5-architecture model with weight-free statistic rewards (colourfulness, sharpness, exposure) and a
random-feature Gram style loss, on procedurally rendered images. It exercises every real code path
(loader, LoRA, the three rollouts, the discriminator, checkpoints, kohya export, few-step sampling) and
reports the measured rewards honestly; it does not claim image quality, which a random model has none of.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import atomic_write_text
from .config import load_config
from .images import save_grid
from .sampling import generate
from .trainer import UniFLTrainer

PROMPTS = ["a red striped circle", "a blue square on a dark background", "a small green triangle above a yellow ring", "a purple star lit from the left"]


def _build_base_model(folder: Path) -> Path:
    from .models.tiny import build_tiny_pipeline

    if not (folder / "model_index.json").is_file():
        build_tiny_pipeline("sd15", seed=0).save_pretrained(str(folder))
    return folder


def _plot_curves(log_csv: Path, out_png: Path, title: str) -> Path | None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_csv.open(encoding="utf-8")))
    keys = [k for k in rows[0] if k not in ("step", "seconds", "lr", "grad_norm") and any(r.get(k) for r in rows)] if rows else []
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = [int(r["step"]) for r in rows]
    for key in keys:
        ax.plot(steps, [float(r[key]) if r.get(key) else float("nan") for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def run_demo(quick: bool = False, out_dir: str | Path = "out/demo") -> dict:
    out = Path(out_dir)
    base = _build_base_model(out / "base-model")
    steps = 4 if quick else 60
    common = [f"model.path={base}", f"optim.max_steps={steps}", "optim.seed=0", "logging.tensorboard=false"]

    stage1_cfg = load_config(None, common + ["stage=1", f"logging.output_dir={out / 'stage1'}", "logging.output_name=unifl-stage1"], preset="tiny")
    stage1 = UniFLTrainer(stage1_cfg).train(overwrite=True)
    stage2_cfg = load_config(None, common + ["stage=2", f"logging.output_dir={out / 'stage2'}", "logging.output_name=unifl-stage2", f"lora.init_from={stage1.lora_path}"], preset="tiny")
    stage2_trainer = UniFLTrainer(stage2_cfg)
    stage2 = stage2_trainer.train(overwrite=True)

    # Evaluate: the same prompts and seeds for every model; the base model through disabled adapters.
    from .models.loading import load_denoiser
    from .export import load_kohya_lora
    from .presets import STATISTIC_REWARDS
    from .registry import load_reward_model

    scorers = {spec["aspect"]: load_reward_model(spec["kind"]) for spec in STATISTIC_REWARDS}
    prompts = [p for p in PROMPTS for _ in range(4 if quick else 16)]
    seeds = list(range(len(prompts)))
    rows, grids = {}, {}
    for name, lora, n_steps, spacing in (("base_20", None, 20, "leading"), ("stage1_20", stage1.lora_path, 20, "leading"), ("base_4", None, 4, "trailing"), ("stage2_4", stage2.lora_path, 4, "trailing")):
        denoiser = load_denoiser(base)
        if lora is not None:
            load_kohya_lora(lora, denoiser.lora_target, architecture=denoiser.architecture)
        images = generate(denoiser, prompts, seeds, height=64, width=64, steps=n_steps, spacing=spacing)
        with torch.no_grad():
            rows[name] = {"aesthetic": {aspect: float(model(images, prompts).mean()) for aspect, model in scorers.items()}}
        grids[name] = save_grid(images[:: max(1, len(prompts) // 8)][:8], out / f"grid_{name}.png", columns=4)

    metrics = {"world": "tiny-random (fallback until the pocket world lands)", "models": rows, "lora": {"stage1": str(stage1.lora_path), "stage2": str(stage2.lora_path)}}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    curves = [_plot_curves(out / s / "logs.csv", out / f"curves_{s}.png", f"UniFL {s} losses") for s in ("stage1", "stage2")]

    lines = [
        "# UniFL demo report (tiny random model)",
        "",
        "This run trains stage 1 and stage 2 LoRAs on a tiny *randomly initialised* SD1.5-architecture model,",
        "with weight-free statistic rewards. It shows the whole pipeline working offline; it is not evidence of",
        "image quality. The scores below are the training rewards themselves (no held-out evaluator yet).",
        "",
        "| model | " + " | ".join(scorers) + " |",
        "|---|" + "---|" * len(scorers),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row['aesthetic'][a]:.4f}" for a in scorers) + " |")
    lines += ["", "## Samples (same prompts and seeds)", ""]
    lines += [f"**{name}**\n\n![{name}]({path.name})\n" for name, path in grids.items()]
    lines += ["## Loss curves", ""] + [f"![curves]({c.name})\n" for c in curves if c]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(f"demo report: {out / 'report.md'}")
    return metrics
