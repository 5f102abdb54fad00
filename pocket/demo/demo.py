"""``unifl demo``: UniFL's claims in miniature, on the embedded pocket world, offline, on a CPU.

1. Stage 1 (PeFL + decoupled aesthetic + denoising regulariser) on the pocket model.
2. Stage 2 (adversarial + decoupled aesthetic + regulariser), starting from the stage-1 LoRA.
3. The ablations: stage 1 without PeFL, stage 1 with one global reward model instead of the four
   decoupled ones, stage 2 without the adversarial term.
4. Every model sampled on the same held-out prompts and seeds and measured by judges that training never
   touches (:mod:`unifl.pocket.judges.evaluate`); then ``report.md`` (tables, grids, curves, the claims
   checked plainly), ``metrics.json`` and the LoRA files.

The runs are independent except that stage 2 starts from stage 1, so they go through a small pool of
worker processes (:class:`DemoSettings` ``workers``), one torch thread each: on 2 cores that halves the
wall time. Each worker's own output goes to ``<run>/train.log``; the terminal shows one progress bar.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...core.config import load_config
from ...core.diffusion.sampling import generate
from ...core.files import atomic_write_text
from ...core.images import save_grid
from ...core.progress import progress_bar
from ...core.training.trainer import TrainerCallbacks, UniFLTrainer
from ..plugin import MODEL_DIR, WEIGHTS_DIR, register


@dataclass
class DemoSettings:
    """Sizes of one demo run. The default fits the 15-minute budget on 2 CPU cores."""

    stage1_steps: int = 100
    stage2_steps: int = 100
    num_prompts: int = 64
    images_per_prompt: int = 4
    num_real: int = 1024
    ablations: bool = True
    workers: int = 2
    """Worker processes running trainings and samplings side by side."""
    threads: int = 1
    """torch CPU threads per worker."""

    @classmethod
    def quick(cls) -> "DemoSettings":
        return cls(stage1_steps=2, stage2_steps=2, num_prompts=8, images_per_prompt=1, num_real=64)


BASE_CFG = 3.0  # the pocket model's usual guidance; stage 2's contract is CFG 1 (no second UNet call)


@dataclass(frozen=True)
class Job:
    """One unit of demo work for the pool: train a LoRA, or sample a model on the evaluation prompts."""

    name: str
    work: tuple  # (function, *arguments), run in a worker
    after: tuple[str, ...] = ()  # jobs that must finish first (stage 2 reads stage 1's LoRA)
    steps: int = 1  # progress units (optimizer steps for a training, 1 for a sampling)


_progress = None  # the worker's end of the progress queue


def _init_worker(threads: int, progress) -> None:
    import diffusers
    import transformers

    global _progress
    torch.set_num_threads(threads)
    _progress = progress
    register()  # a spawned worker starts with empty registries
    # Loading bars from two workers would garble the demo's own bar.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _train(out: Path, name: str, overrides: list[str]) -> str:
    """Train one LoRA of the demo (in a worker; its console output goes to ``<run>/train.log``)."""
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(None, [f"logging.output_dir={run_dir}", f"logging.output_name=unifl-{name}", "logging.tensorboard=false", *overrides], preset="pocket")
    callbacks = TrainerCallbacks(on_progress=lambda step, total, logs: _progress.put((name, step)))
    with open(run_dir / "train.log", "w", encoding="utf-8") as log, redirect_stdout(log), redirect_stderr(log):
        return str(UniFLTrainer(config, callbacks=callbacks).train(overwrite=True).lora_path)


def _sample(lora: str | None, prompts: list[str], seeds: list[int], steps: int, spacing: str, cfg: float) -> torch.Tensor:
    """Images (uint8, to keep the transfer small) of the pocket model with ``lora`` on the evaluation prompts."""
    from ...core.diffusion.loading import load_denoiser
    from ...core.lora.kohya import load_kohya_lora

    denoiser = load_denoiser("pocket")
    if lora is not None:
        load_kohya_lora(lora, denoiser.lora_target, architecture=denoiser.architecture)
    images = generate(denoiser, prompts, seeds, height=64, width=64, steps=steps, spacing=spacing, cfg=cfg, batch_size=64)
    return (images * 255).round().to(torch.uint8)


def _downstream(lora: str, out: Path):
    """The stage-2 LoRA beside the pocket ControlNet and AnimateDiff motion adapter, in plain diffusers."""
    from .downstream import downstream_grids

    return downstream_grids(lora, out, steps=4)


def run_jobs(jobs: list[Job], workers: int, threads: int, on_result, desc: str = "UniFL demo") -> None:
    """Run ``jobs`` on ``workers`` processes in dependency order; ``on_result(name, value)`` in this process.

    One bar counts every job's progress (training steps as they happen); its postfix names what runs.
    """
    unknown = {d for job in jobs for d in job.after} - {job.name for job in jobs}
    if unknown:
        raise ValueError(f"demo jobs wait for {sorted(unknown)}, which no job makes")
    context = multiprocessing.get_context("spawn")  # no fork of a process that already holds torch threads
    progress = context.Queue()
    done_steps: dict[str, int] = {}
    total = sum(job.steps for job in jobs)
    bar = progress_bar(total=total, desc=desc, unit="step", dynamic_ncols=True)
    pending, running, finished = list(jobs), {}, set()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads, progress)) as pool:
        while pending or running:
            for job in [j for j in pending if set(j.after) <= finished][: workers - len(running)]:
                pending.remove(job)
                function, *args = job.work
                running[pool.submit(function, *args)] = job
            bar.set_postfix_str(", ".join(j.name for j in running.values()), refresh=False)
            completed, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            while not progress.empty():
                name, step = progress.get()
                done_steps[name] = step
            for future in completed:
                job = running.pop(future)
                if future.exception() is not None:
                    raise RuntimeError(f"demo job {job.name!r} failed (its log: the run folder's train.log)") from future.exception()
                done_steps[job.name] = job.steps
                finished.add(job.name)
                on_result(job.name, future.result())
            bar.update(sum(done_steps.values()) - bar.n)  # update, not refresh: a log gets a line only every 30 s
    bar.close()


def _running_mean(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1): i + 1] if v == v]  # v == v: not NaN
        out.append(sum(recent) / len(recent) if recent else float("nan"))
    return out


def _plot_curves(log_csv: Path, out_png: Path, title: str) -> Path | None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log_csv.open(encoding="utf-8")))
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "seconds", "lr", "grad_norm") and not k.startswith("pefl_")]
    if not keys:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = [int(r["step"]) for r in rows]
    for key in keys:
        ax = axes[1] if key.startswith("reward_") or key.startswith("d_") else axes[0]
        values = [float(r[key]) if r.get(key) else float("nan") for r in rows]
        raw, = ax.plot(steps, values, linewidth=0.6, alpha=0.25)  # one batch per step: noisy
        ax.plot(steps, _running_mean(values, 10), label=key, linewidth=1.4, color=raw.get_color())
    axes[0].set_title(f"{title}: losses (lines: mean of the last 10 steps)")
    axes[1].set_title(f"{title}: rewards and discriminator")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)
        else:  # a peer's log has losses only
            ax.text(0.5, 0.5, "none logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


STAGE1_IOU_MARGIN = 0.01
"""The structure IoU a stage-1 LoRA must add to the base's for the demo's claim to hold. The demo has one seed and no
interval, so a smaller change is not read as a gain either way; the arena decides with intervals over five seeds."""
STAGE1_AESTHETIC_MARGIN = 0.05
"""The same for the mean held-out aesthetic score (the aspect judges' scores run from about −3 to 3)."""


def check_claims(models: dict) -> list[tuple[str, bool, str]]:
    """The paper's claims in miniature, each with whether it holds here and the numbers behind it."""
    def mean_aes(m):
        return sum(m["aesthetic"].values()) / len(m["aesthetic"])

    b20, s20, b4, s4 = (models[k] for k in ("base_20", "stage1_20", "base_4", "stage2_4"))
    # One seed: a stage-1 gain counts only beyond these margins (a LoRA that barely moves the base is no gain)
    claims = [
        (f"Stage 1 improves structure IoU over the base at 20 steps (by ≥ {STAGE1_IOU_MARGIN:g})", s20["structure_iou"] >= b20["structure_iou"] + STAGE1_IOU_MARGIN,
         f"{b20['structure_iou']:.3f} → {s20['structure_iou']:.3f}"),
        (f"Stage 1 improves the mean held-out aesthetic score over the base at 20 steps (by ≥ {STAGE1_AESTHETIC_MARGIN:g})", mean_aes(s20) >= mean_aes(b20) + STAGE1_AESTHETIC_MARGIN,
         f"{mean_aes(b20):.3f} → {mean_aes(s20):.3f}"),
        ("Stage 2 at 4 steps has a clearly lower FD than the base at 4 steps (≥ 20 % lower)", s4["fd"] < 0.8 * b4["fd"], f"{b4['fd']:.2f} → {s4['fd']:.2f}"),
        ("Stage 2 at 4 steps is close to the base at 20 steps (FD within 25 %)", s4["fd"] <= 1.25 * b20["fd"], f"base 20 steps {b20['fd']:.2f}, stage 2 4 steps {s4['fd']:.2f}"),
    ]
    return claims


def _metrics_table(models: dict, reference: dict | None) -> list[str]:
    aspects = list(next(iter(models.values()))["aesthetic"])
    lines = ["| model | prompt accuracy ↑ | judge FD ↓ | judge KID ↓ | FD ↓ | structure IoU ↑ | " + " | ".join(aspects) + " | mean aesthetic ↑ |",
             "|---|---|---|---|---|---|" + "---|" * (len(aspects) + 1)]
    rows = list(models.items()) + ([("real renders (ceiling)", reference)] if reference else [])
    for name, m in rows:
        mean = sum(m["aesthetic"].values()) / len(aspects)
        lines.append(f"| {name} | {m['prompt_accuracy']:.3f} | {m['judge_fd']:.2f} | {m['judge_kid']:.3f} | {m['fd']:.2f} | {m['structure_iou']:.3f} | "
                     + " | ".join(f"{m['aesthetic'][a]:.3f}" for a in aspects) + f" | {mean:.3f} |")
    return lines


def pocket_world_missing() -> list[str]:
    """The pocket-world parts whose weights are not built yet (``unifl pocket build``); empty when complete."""
    weights = WEIGHTS_DIR
    needed = {"pocket model": MODEL_DIR / "model_index.json", "perception models": weights / "perception",
              "reward models": weights / "rewards" / "detail.safetensors", "held-out evaluators": weights / "evaluators" / "aspect_detail.safetensors",
              "arena prompt judge": weights / "judges" / "prompt.safetensors",
              "pocket ControlNet": weights / "controlnet" / "diffusion_pytorch_model.safetensors",
              "pocket motion adapter": weights / "motion_adapter" / "diffusion_pytorch_model.safetensors"}
    return [name for name, path in needed.items() if not path.exists() or (path.is_dir() and not any(path.glob("*.safetensors")))]


def run_demo(quick: bool = False, out_dir: str | Path = "out/demo", settings: DemoSettings | None = None) -> dict:
    """Train, sample and measure everything (see the module docstring); returns ``metrics.json``'s content."""
    from ..judges.evaluate import AspectJudges, evaluation_set, measure, measure_real

    register()

    missing = pocket_world_missing()
    if missing:
        raise FileNotFoundError(f"the pocket world is incomplete ({', '.join(missing)} missing under {WEIGHTS_DIR}); rebuild it with `unifl pocket build`")
    settings = settings or (DemoSettings.quick() if quick else DemoSettings())
    out = Path(out_dir)
    started = time.time()
    eval_set = evaluation_set(settings.num_prompts, settings.images_per_prompt, settings.num_real)

    # 1. The plan: trainings, then each model sampled on the same prompts and seeds.
    def lora(name: str) -> str:
        return str(out / name / f"unifl-{name}.safetensors")

    s1, s2 = settings.stage1_steps, settings.stage2_steps
    stage2_from_stage1 = [f"lora.init_from={lora('stage1')}"]
    trainings = {"stage1": ("1", s1, [], ()), "stage2": ("2", s2, stage2_from_stage1, ("stage1",))}  # stage, steps, overrides, after
    samplings = {"base_20": (None, 20, "leading", BASE_CFG), "stage1_20": ("stage1", 20, "leading", BASE_CFG),
                 "base_4": (None, 4, "trailing", BASE_CFG), "stage2_4": ("stage2", 4, "trailing", 1.0)}
    if settings.ablations:
        trainings |= {"stage1_no_pefl": ("1", s1, ["perception=[]"], ()),
                      "stage1_global_reward": ("1", s1, ['rewards=[{aspect = "global", kind = "pocket-reward", path = "global"}]'], ()),
                      "stage2_no_adversarial": ("2", s2, stage2_from_stage1 + ["adversarial.weight=0"], ("stage1",))}
        samplings |= {"stage1_no_pefl_20": ("stage1_no_pefl", 20, "leading", BASE_CFG), "stage1_global_reward_20": ("stage1_global_reward", 20, "leading", BASE_CFG),
                      "stage2_no_adversarial_4": ("stage2_no_adversarial", 4, "trailing", 1.0)}
    jobs = [Job(name, (_train, out, name, [f"stage={stage}", f"optim.max_steps={steps}", *overrides]), after, steps)
            for name, (stage, steps, overrides, after) in trainings.items()]
    for name, (run, steps, spacing, cfg) in samplings.items():
        # Cost in units of about one training step: UNet calls per image × images.
        units = max(1, round(steps * (1 if cfg == 1.0 else 2) * len(eval_set) / 256))
        jobs.append(Job(name, (_sample, run and lora(run), eval_set.prompts, eval_set.seeds, steps, spacing, cfg), (run,) if run else (), units))
    jobs.append(Job("downstream", (_downstream, lora("stage2"), out), ("stage2",), 20))
    # Longest chains first, so the second worker is never idle waiting for stage 1.
    order = ["stage1", "stage1_no_pefl", "stage2", "base_20", "stage1_global_reward", "stage2_no_adversarial", "base_4"]
    jobs.sort(key=lambda j: order.index(j.name) if j.name in order else len(order))

    # 2. Run it; measure each model as its images arrive, with judges that training never touches.
    judges, models, grids, loras, downstream = AspectJudges(), {}, {}, {}, {}

    def on_result(name: str, value) -> None:
        if name == "downstream":
            downstream.update(result=value)
        elif name in trainings:
            loras[name] = value
        else:
            images = value.float() / 255
            models[name] = measure(images, eval_set, judges) | dict(zip(("steps", "spacing", "cfg"), samplings[name][1:]))
            grids[name] = save_grid(images[:: settings.images_per_prompt][:16], out / f"grid_{name}.png", columns=8)

    run_jobs(jobs, settings.workers, settings.threads, on_result)
    reference = measure_real(eval_set, judges)

    # 3. Report.
    claims = check_claims(models)
    core = {k: models[k] for k in ("base_20", "stage1_20", "base_4", "stage2_4")}
    metrics = {
        "models": core,
        "ablations": {k: models[k] for k in samplings if k not in core},
        "real_reference": reference,
        "claims": [{"claim": c, "holds": bool(h), "numbers": n} for c, h, n in claims],
        "settings": asdict(settings),
        "images_per_model": len(eval_set),
        "loras": loras,
        "downstream": downstream["result"].metrics,
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    curves = [c for c in (_plot_curves(out / s / "logs.csv", out / f"curves_{s}.png", s) for s in ("stage1", "stage2")) if c]
    grids = {name: grids[name] for name in samplings}  # report order, not finishing order
    _write_report(out, metrics, claims, grids, curves, settings, downstream["result"])
    print(f"demo report: {out / 'report.md'} ({metrics['seconds']:.0f} s)")
    return metrics


def _downstream_section(result) -> list[str]:
    m = result.metrics
    rows = [("control class IoU ↑ (objects where the control map puts them, of the right shape)", "control_class_iou"),
            ("control foreground IoU ↑", "control_foreground_iou"),
            ("mean change between consecutive frames", "frame_change"),
            ("object IoU between consecutive frames ↑ (steady clips)", "frame_object_iou")]
    return [
        "## Downstream: the stage-2 LoRA beside ControlNet and AnimateDiff",
        "",
        "Plain diffusers, nothing of ours in the loop: the pocket model with the pocket ControlNet in a",
        "`StableDiffusionControlNetPipeline` and with the pocket motion adapter in an `AnimateDiffPipeline`, the",
        "stage-2 LoRA loaded with `pipe.load_lora_weights`, 4 DDIM steps (trailing), CFG 1, same seeds in both rows.",
        "",
        "| measure | without LoRA | with LoRA |",
        "|---|---|---|",
        *[f"| {label} | {m[f'{key}_without_lora']:.3f} | {m[f'{key}_with_lora']:.3f} |" for label, key in rows],
        "",
        "**ControlNet** (rows: control map, without the LoRA, with the LoRA)\n",
        f"![controlnet]({result.grids['controlnet'].name})\n",
        "**AnimateDiff** (per prompt: a clip without, then with the LoRA; frames left to right)\n",
        f"![animatediff]({result.grids['animatediff'].name})\n",
    ]


def _write_report(out: Path, metrics: dict, claims, grids: dict, curves: list, settings: DemoSettings, downstream) -> None:
    lines = [
        "# UniFL on the pocket world",
        "",
        f"Stage 1 ({settings.stage1_steps} steps) and stage 2 ({settings.stage2_steps} steps) LoRAs trained on the embedded pocket",
        f"model, each model sampled on the same {metrics['images_per_model']} held-out prompts and seeds and measured by held-out",
        "judges (another seed, split and architecture than anything UniFL trained against). FD: Fréchet distance",
        "of the evaluator embedding to real renders. Structure IoU: are the prompted objects there and well formed.",
        "Prompt accuracy and judge FD/KID: the arena's judges (`unifl arena`, `pocket/weights/judges/BUILD.md`): the share of",
        "each prompt's checks (count, shape, colour, size, relations, background tone, light) that a detector trained on its",
        "own world streams finds true, and realism in that detector's features. A single seed: `unifl arena` has the spreads.",
        "Base models at 20 steps and at 4 steps use CFG 3; stage 2 samples with its own contract: 4 DDIM steps,",
        "trailing spacing, CFG 1.",
        "",
        "## Metrics",
        "",
        *_metrics_table(metrics["models"], metrics["real_reference"]),
        "",
        "## Do the paper's claims hold here?",
        "",
        *[f"- {'✅ holds' if h else '❌ does not hold'}: {c} ({n})" for c, h, n in claims],
        "",
    ]
    if metrics["ablations"]:
        rows = {"full stage 1 (20 steps)": metrics["models"]["stage1_20"], **{k: v for k, v in metrics["ablations"].items() if k.startswith("stage1")},
                "full stage 2 (4 steps)": metrics["models"]["stage2_4"], **{k: v for k, v in metrics["ablations"].items() if k.startswith("stage2")}}
        lines += ["## Ablations (each against the full method)", "", *_metrics_table(rows, None), ""]
    lines += ["## Samples (same prompts and seeds in every grid)", ""]
    lines += [f"**{name}**\n\n![{name}]({path.name})\n" for name, path in grids.items()]
    lines += _downstream_section(downstream)
    lines += ["## Training curves", ""] + [f"![{c.stem}]({c.name})\n" for c in curves]
    lines += ["## Files", "", *[f"- `{name}`: `{path}`" for name, path in metrics["loras"].items()], f"- metrics: `metrics.json`; total time {metrics['seconds']:.0f} s", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
