"""Training-step benchmark: the UniFL iteration against a naive full-chain ReFL baseline.

For each stage, on the same randomly initialised SD1.5-architecture model and the same inputs, it
measures two variants of one optimizer step:

* ``UniFL``: the real :meth:`UniFLTrainer.train_step` (no-grad rollout prefix, one step with gradients,
  gradient checkpointing on the UNet and the VAE decoder, one backward per feedback term);
* ``naive``: what ReFL-style reward backprop does without UniFL's economies (AlignProp/DRaFT without
  truncation): the *same* rollouts, losses, batch, resolution and LoRA, but every denoising step of
  the rollout carries gradients, nothing is checkpointed, and all terms are summed before one backward.

Both variants draw the same noise, images, prompts and truncation points (they are a pure function of
the seed and the step index), so their first iteration computes the same loss values; the benchmark
checks that and prints the difference. Each variant runs in its own subprocess so one's allocator state
cannot inflate the other's memory figures.

Then, per stage, where a step's model evaluations and seconds go: a per-term table (UNet evaluations,
feedback-model evaluations, seconds) of the real ``train_step`` at ``--terms-batch-size`` (default 4), for
each step configuration side by side (:func:`step_configs`: each stage today and with its no-grad prefixes cut
to a few evenly spaced steps; stage 2 also with the aesthetic term scoring the adversarial rollout, and that
over the step counts {1, 2, 4, 8}). Evaluations are counted as the arena counts
them (``pocket/arena/counting.py``: images through ``UNet2DConditionModel.forward``, and through each feedback
model once per model).

Run ``python bench/train_step.py --threads 1`` (under 15 minutes on a busy 2-core machine: 64 px, 2 measured
iterations; ``--resolution 128 --repeats 5`` for steadier figures) or ``--quick`` (toy sizes, to check that it runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

STAGES = {"1": "PeFL + aesthetic + denoising regulariser", "2": "adversarial + aesthetic + denoising regulariser"}
VARIANTS = {"naive": "naive full-chain ReFL", "unifl": "UniFL train_step"}
#: The feedback-evaluation cuts: the discriminator's fake half from the generator's scores, the rewards on half a batch.
LEAN_FEEDBACK = ("adversarial.reuse_fake_scores=true", "aesthetic.scored_fraction=0.5")


def step_configs(stage: str, steps: int) -> dict[str, tuple[str, ...]]:
    """Step configurations compared term by term: label → config overrides; the first is today's default.
    Short prefixes: 4 no-grad steps of the aesthetic rollout's 14–19 and 2 of PeFL's 5–10 at 20 steps (scaled
    with ``--steps``)."""
    aesthetic, pefl = f"aesthetic.prefix_steps={max(1, steps // 5)}", f"pefl.prefix_steps={max(1, steps // 10)}"
    if stage == "1":
        return {"today": (), "short prefixes": (aesthetic, pefl)}
    return {
        "today": (),
        "shared rollout": ("aesthetic.stage2_schedule=shared",),
        "shared, steps 1/2/4/8": ("aesthetic.stage2_schedule=shared", "adversarial.schedule=step-counts"),
        "shared, lean feedback": ("aesthetic.stage2_schedule=shared", *LEAN_FEEDBACK),
        "short aesthetic prefix": (aesthetic,),
    }
#: The trainer's loss methods and ``_accumulate`` names (each term's backward), by the term they belong to.
TERM_METHODS = {"_real_batch": "real images (VAE encode)", "pefl_loss": "PeFL", "adversarial_loss": "adversarial", "aesthetic_loss": "aesthetic",
                "regularizer_loss": "regularizer", "discriminator_step": "discriminator step"}
ACCUMULATED = {"pefl": "PeFL", "adv_g": "adversarial", "aesthetic": "aesthetic", "regularizer": "regularizer"}
SHARED_TERM = "adversarial + aesthetic (one rollout)"
REST = "optimizer and the rest"
RESULT_PREFIX = "BENCH-RESULT "
MIB = 2**20


@dataclass
class ModelSize:
    """Widths of the randomly initialised SD1.5-architecture model (real SD1.5: UNet (320, 640, 1280, 1280))."""

    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    vae_channels: tuple[int, ...]  # 4 levels: 8x downsampling, like SD's VAE
    text_width: int


FULL = ModelSize(unet_channels=(64, 128, 256), unet_layers_per_block=2, vae_channels=(32, 64, 128, 128), text_width=128)
QUICK = ModelSize(unet_channels=(32, 32, 64), unet_layers_per_block=1, vae_channels=(32, 32, 32, 32), text_width=32)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--resolution", type=int, default=None, help="image size in pixels (default 64)")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per feedback term")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of the PeFL and aesthetic rollouts (default 20 as in the paper; 4 with --quick); the adversarial rollout keeps its 4-step schedule")
    parser.add_argument("--repeats", type=int, default=None, help="measured iterations per variant (default 2; 1 with --quick)")
    parser.add_argument("--terms-batch-size", type=int, default=4, help="samples per feedback term in the per-term tables (default 4)")
    parser.add_argument("--terms-repeats", type=int, default=None, help="measured steps per configuration in the per-term tables (default 2; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="iterations run before measuring")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice, one per core)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that the benchmark runs (under a minute on an idle 2-core machine)")
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--terms-child", metavar="STAGE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if _cuda_available() else "cpu")
    args.resolution = args.resolution or 64
    args.steps = args.steps or (4 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.terms_repeats = args.terms_repeats or (1 if args.quick else 2)
    if args.steps < 4:
        parser.error("--steps must be at least 4 (PeFL noises to level steps/2 and takes its grad step at levels [0, steps/4])")
    if args.resolution % 32:
        parser.error("--resolution must be a multiple of 32 (the VAE downsamples 8x, then the UNet 4x)")
    return args


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# -- the model and the trainer ------------------------------------------------------------------------


def build_denoiser(size: ModelSize, resolution: int, device: str, scratch: str):
    """A randomly initialised SD1.5-architecture denoiser from diffusers/transformers configs (seeded)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser
    from unifl.core.diffusion.tiny import SD15_SCHEDULER, write_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = write_clip_tokenizer(os.path.join(scratch, "tokenizer"), words=["a", "photo"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=size.text_width, intermediate_size=2 * size.text_width, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77,
    ))
    unet = UNet2DConditionModel(
        block_out_channels=size.unet_channels, layers_per_block=size.unet_layers_per_block, sample_size=resolution // 8,
        in_channels=4, out_channels=4, norm_num_groups=32, attention_head_dim=8, cross_attention_dim=size.text_width,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=size.vae_channels, layers_per_block=1, in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * len(size.vae_channels), up_block_types=("UpDecoderBlock2D",) * len(size.vae_channels),
        sample_size=resolution,
    )
    for module in (unet, vae, text_encoder):
        module.to(device)
    return DiffusersDenoiser(unet, vae, [text_encoder], [tokenizer], SD15_SCHEDULER)


def build_trainer(args, stage: str, variant: str, scratch: str, batch_size: int | None = None, extra: tuple[str, ...] = ()):
    """The real trainer on the benchmark model; the naive variant only switches checkpointing off."""
    from unifl.core.config import load_config
    from unifl.pocket.plugin import register

    register()  # the tiny preset and pocket images
    from unifl.core.training.trainer import UniFLTrainer

    s = args.steps
    overrides = [
        f"stage={stage}", f"data.resolution={args.resolution}", "data.images=pocket", "data.source_images=64",
        f"pefl.inference_steps={s}", f"pefl.noise_level={s // 2}", f"pefl.grad_levels=[0, {s // 4}]",
        f"aesthetic.inference_steps={s}", f"aesthetic.grad_levels=[0, {s // 4}]",
        "lora.rank=16", "lora.alpha=16.0",
        f"optim.batch_size={batch_size or args.batch_size}", "optim.gradient_accumulation_steps=1",
        f"optim.gradient_checkpointing={str(variant == 'unifl').lower()}",
        f"logging.output_dir={os.path.join(scratch, 'run')}", *extra,
    ]
    config = load_config(None, overrides, preset="tiny")
    denoiser = build_denoiser(QUICK if args.quick else FULL, args.resolution, args.device, scratch)
    trainer = UniFLTrainer(config, denoiser=denoiser)
    denoiser.lora_target.train()  # as UniFLTrainer.train() does before its loop
    return trainer


# -- the two variants of one iteration ------------------------------------------------------------------


@contextlib.contextmanager
def full_chain_rollouts():
    """The same rollout code with the no-grad prefix switched off: every denoising step keeps its graph.

    :func:`unifl.core.diffusion.rollouts.denoise_until` is the prefix of all three rollouts, wrapped in
    ``torch.no_grad``; its undecorated function is the full-chain (DRaFT-full / untruncated AlignProp)
    rollout with the same steps, noise and stop positions.
    """
    from unifl.core.diffusion import rollouts

    truncated = rollouts.denoise_until
    rollouts.denoise_until = truncated.__wrapped__
    try:
        yield
    finally:
        rollouts.denoise_until = truncated


def naive_step(trainer) -> dict[str, float]:
    """One ReFL-style optimizer step: the trainer's own loss terms, all graphs alive, one backward of the sum."""
    from unifl.core.training.trainer import step_generator

    opt = trainer.config.optim
    gen = lambda stream: step_generator(opt.seed, trainer.step, 0, stream)  # noqa: E731  (the trainer's streams)
    batch = trainer._real_batch(trainer.step)
    terms, fake = {}, None
    with full_chain_rollouts(), trainer.precision.autocast():
        if trainer.uses_pefl:
            terms["pefl"] = trainer.pefl_loss(batch, gen(0))[0]
        if trainer.uses_adversarial:
            terms["adv_g"], _, fake = trainer.adversarial_loss(batch, gen(2))
        if trainer.uses_aesthetic:
            terms["aesthetic"] = trainer.aesthetic_loss(trainer._prompt_batch(trainer.step), gen(1))[0]
        terms["regularizer"] = trainer.regularizer_loss(batch, gen(3))[0]
    trainer.precision.backward("generator", sum(terms.values()))
    trainer.precision.unscaled_grad_norm("generator", trainer.optimizer, trainer.lora_params, opt.max_grad_norm)
    trainer.precision.step("generator", trainer.optimizer)
    trainer.lr_schedule.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if fake is not None:
        trainer.discriminator_step(batch["image"].to(trainer.device), [fake], batch["caption"])
    return {name: float(value.detach()) for name, value in terms.items()}


def unifl_step(trainer) -> dict[str, float]:
    """The UniFL iteration: the trainer's own step, unchanged."""
    return trainer.train_step()


# -- measuring one variant (in a subprocess) --------------------------------------------------------------


def allocator_peak(step, device: str) -> int:
    """Bytes the tensor allocator held at the peak of ``step()`` above what it held when the step began.

    CUDA: the caching allocator's own counters. CPU: torch's CPU allocator reports every allocation and
    free to the profiler (``profile_memory=True``); the running sum of those events in time order is the
    live tensor memory, and its maximum is the same quantity ``torch.cuda.max_memory_allocated`` gives.
    (Those events are read from ``prof.profiler.kineto_results``, the profiler's raw record: the public
    ``key_averages`` sums memory per operator and loses the order of allocations and frees.)
    """
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_rss() -> int | None:
    """This process's peak resident set size so far, in bytes (None on Windows, which has no getrusage)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure(args, stage: str, variant: str, scratch: str) -> dict:
    """Warm up, time ``repeats`` iterations, then replay the same iterations to measure peak memory."""
    import psutil
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = build_trainer(args, stage, variant, scratch)
    rss_after_setup = psutil.Process().memory_info().rss
    step_fn = {"unifl": unifl_step, "naive": naive_step}[variant]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def iteration(index: int) -> dict:
        trainer.step = index
        return step_fn(trainer)

    # 1. Warm-up (allocator pools, optimizer state, lazy inits). Its first iteration is step 0 of both
    #    variants, the same forward computation: its losses are the equivalence check.
    first_losses = {k: float(v) for k, v in iteration(0).items() if k in ("pefl", "aesthetic", "adv_g", "regularizer")}
    for index in range(1, args.warmup):
        iteration(index)
    measured = range(args.warmup, args.warmup + args.repeats)

    # 2. Wall and process CPU time of each measured iteration. On a shared machine, CPU time is the
    #    figure other processes disturb least (they delay this one without adding to its CPU time).
    wall, cpu = [], []
    for index in measured:
        sync()
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        iteration(index)
        sync()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)

    # 3. The OS view, as a cross-check: peak RSS so far (set-up, warm-up, timed iterations) above the
    #    RSS after set-up. It also counts what the C allocator caches and libraries' own workspaces.
    rss_peak = peak_rss()

    # 4. Peak memory of the same iterations (same truncation points), replayed under the memory meter.
    peaks = [allocator_peak(lambda: iteration(index), args.device) for index in measured]

    unet, vae = trainer.denoiser.unet, trainer.denoiser.vae
    return {
        "wall_seconds": wall, "cpu_seconds": cpu, "peak_bytes": peaks, "first_losses": first_losses,
        "rss_increase_bytes": None if rss_peak is None else rss_peak - rss_after_setup,
        "unet_params": sum(p.numel() for p in unet.parameters()), "vae_params": sum(p.numel() for p in vae.parameters()),
        "lora_params": sum(p.numel() for p in trainer.lora_params), "threads": torch.get_num_threads(),
    }


# -- where a step goes, term by term (in a subprocess) ---------------------------------------------------


class TermMeter:
    """Wraps a trainer's loss methods and its per-term backward (``_accumulate``) to add up, per term, the
    UNet and feedback-model evaluations (the arena's counters) and the seconds they take."""

    def __init__(self, trainer, device: str):
        from unifl.pocket.arena.counting import count_feedback_models, count_unet, new_counter

        import torch

        self.counter, self.on, self.rows = new_counter(), False, {}
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        count_unet(self.counter)
        count_feedback_models([*trainer.rewards.values(), *(model for _, model in trainer.perception), trainer.discriminator], self.counter)
        shared = trainer.shares_rollout
        for method, term in TERM_METHODS.items():
            term = SHARED_TERM if shared and term == "adversarial" else term
            setattr(trainer, method, self.metered(getattr(trainer, method), lambda *a, term=term, **k: term))
        accumulate = trainer._accumulate
        trainer._accumulate = self.metered(accumulate, lambda name, *a, **k: SHARED_TERM if shared and name == "adv_g" else ACCUMULATED[name])

    def metered(self, method, term_of):
        def run(*args, **kwargs):
            if not self.on:
                return method(*args, **kwargs)
            before, start = dict(self.counter), time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.sync()
                self.add(term_of(*args, **kwargs), time.perf_counter() - start, {k: self.counter[k] - before[k] for k in before})
        return run

    def add(self, term: str, seconds: float, counts: dict) -> None:
        row = self.rows.setdefault(term, {"unet": 0, "feedback": 0, "seconds": 0.0})
        row["seconds"] += seconds
        for key, value in counts.items():
            row[key] += value

    def measure(self, step, repeats: int) -> dict:
        """Per-step means over ``repeats`` calls of ``step``; time outside every term goes to :data:`REST`."""
        self.on = True
        total = 0.0
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            step()
            self.sync()
            total += time.perf_counter() - start
        self.on = False
        self.add(REST, total - sum(row["seconds"] for row in self.rows.values()), {})
        return {term: {key: value / repeats for key, value in row.items()} for term, row in self.rows.items()}


def measure_terms(args, stage: str, scratch: str) -> dict:
    """Every step configuration of ``stage``, one after the other in this process (one start-up for all:
    on a busy machine importing torch and diffusers costs as much as the steps), each on a fresh trainer."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for index, (config, overrides) in enumerate(step_configs(stage, args.steps).items()):
        trainer = build_trainer(args, stage, "unifl", os.path.join(scratch, str(index)), batch_size=args.terms_batch_size, extra=overrides)
        meter = TermMeter(trainer, args.device)

        def step(trainer=trainer):
            trainer.train_step()
            trainer.step += 1

        step()  # warm-up: allocator pools, optimizer state, lazy inits
        results[config] = {"terms": meter.measure(step, args.terms_repeats)}
    return results


# -- the parent: one subprocess per (stage, variant), then the tables --------------------------------------


def run_child(args, stage: str, variant: str | None, role: str = "--child") -> dict:
    forwarded = ["--device", args.device, "--resolution", str(args.resolution), "--batch-size", str(args.batch_size),
                 "--steps", str(args.steps), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                 "--terms-batch-size", str(args.terms_batch_size), "--terms-repeats", str(args.terms_repeats)]
    forwarded += ["--threads", str(args.threads)] if args.threads else []
    command = [sys.executable, __file__, *forwarded, *(["--quick"] if args.quick else []), role, stage, *([variant] if variant else [])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the trainer's Accelerator picks a GPU whenever it sees one
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} {variant} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def summary(result: dict) -> dict[str, float]:
    """Median wall and CPU seconds and the largest peak over the measured iterations."""
    return {"wall": statistics.median(result["wall_seconds"]), "cpu": statistics.median(result["cpu_seconds"]), "memory": max(result["peak_bytes"])}


def print_stage(stage: str, results: dict[str, dict], args) -> None:
    base = summary(results["naive"])
    print(f"\n### Stage {stage}: {STAGES[stage]}\n")
    print("| variant | wall s / iteration | CPU s / iteration | peak memory (MiB) | wall time vs naive | CPU time vs naive | memory vs naive |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant, label in VARIANTS.items():
        m = summary(results[variant])
        print(f"| {label} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['memory'] / MIB:.1f} | "
              f"{m['wall'] / base['wall']:.2f}x | {m['cpu'] / base['cpu']:.2f}x | {m['memory'] / base['memory']:.2f}x |")
    print(f"\ntimes: medians over {args.repeats} measured iteration(s); memory: the largest of their peaks")
    for variant, label in VARIANTS.items():
        r = results[variant]
        rss = "" if r["rss_increase_bytes"] is None or args.device == "cuda" else f"; cross-check, peak RSS above RSS after set-up: {r['rss_increase_bytes'] / MIB:.0f} MiB"
        print(f"{label}: wall seconds {', '.join(f'{x:.2f}' for x in r['wall_seconds'])}{rss}")
    a, b = results["unifl"]["first_losses"], results["naive"]["first_losses"]
    diff = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)
    print("first-iteration losses, UniFL / naive (the same forward computation): "
          + ", ".join(f"{k} {a[k]:.6g} / {b[k]:.6g}" for k in b) + f"; max relative difference {diff:.1e}")
    u = summary(results["unifl"])
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"target (UniFL peak memory <= 0.5x naive, time <= 1.0x): memory {verdict(u['memory'] <= 0.5 * base['memory'])}, "
          f"wall time {verdict(u['wall'] <= base['wall'])}, CPU time {verdict(u['cpu'] <= base['cpu'])}")


def print_terms(stage: str, results: dict[str, dict], args) -> None:
    """The per-term table of one stage: each configuration's evaluations and seconds side by side."""
    configs = list(results)
    terms = list(dict.fromkeys(term for r in results.values() for term in r["terms"] if term != REST)) + [REST]
    print(f"\n### Stage {stage} per term: model evaluations and seconds per step, batch {args.terms_batch_size}\n")
    print("| term | " + " | ".join(f"{c}: UNet | {c}: feedback | {c}: s" for c in configs) + " |")
    print("|---|" + "---:|---:|---:|" * len(configs))

    def cells(row: dict | None) -> str:
        return " | ".join("–" for _ in range(3)) if row is None else f"{row['unet']:.1f} | {row['feedback']:.1f} | {row['seconds']:.2f}"

    for term in terms:
        print(f"| {term} | " + " | ".join(cells(results[c]["terms"].get(term)) for c in configs) + " |")
    totals = {c: {k: sum(row[k] for row in results[c]["terms"].values()) for k in ("unet", "feedback", "seconds")} for c in configs}
    print("| **per step** | " + " | ".join(cells(totals[c]) for c in configs) + " |")
    base = totals[configs[0]]
    for config in configs[1:]:
        t = totals[config]
        ratio = lambda key: t[key] / base[key] if base[key] else float("nan")  # noqa: E731
        both = (t["unet"] + t["feedback"]) / (base["unet"] + base["feedback"])
        verdict = "met" if both <= 0.5 else "MISSED"
        print(f"{config} / {configs[0]}: UNet evaluations {ratio('unet'):.2f}x, feedback evaluations {ratio('feedback'):.2f}x, "
              f"all evaluations {both:.2f}x (target <= 0.5x: {verdict}), seconds {ratio('seconds'):.2f}x")
    print(f"means over {args.terms_repeats} measured step(s) after 1 warm-up step, each configuration on a fresh trainer; "
          f"configurations: " + "; ".join(f"{c} = {' '.join(o) or 'the defaults'}" for c, o in step_configs(stage, args.steps).items()))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child or args.terms_child:
        with tempfile.TemporaryDirectory(prefix="unifl-bench-") as scratch:
            result = measure(args, *args.child, scratch) if args.child else measure_terms(args, args.terms_child, scratch)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    size = QUICK if args.quick else FULL
    print("# UniFL training-step benchmark\n")
    from unifl.core.machine import describe_machine

    print(f"machine: {describe_machine(args.device)}; device: {args.device}")
    print(f"model: random SD1.5-architecture, UNet {size.unet_channels} x{size.unet_layers_per_block} layers/block, "
          f"VAE {size.vae_channels} (8x), CLIP text width {size.text_width}; {args.resolution} px images "
          f"({args.resolution // 8}x{args.resolution // 8} latents), batch {args.batch_size}, LoRA rank 16 on attention, fp32")
    print(f"rollouts: PeFL and aesthetic {args.steps} DDIM steps (PeFL from level {args.steps // 2}, grad at levels [0, {args.steps // 4}]); "
          f"adversarial 4 trailing steps; {args.warmup} warm-up + {args.repeats} measured iterations per variant, each variant in its own process")
    meter = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "torch CPU allocator events (torch.profiler, profile_memory=True)"
    print(f"peak memory: the most tensor memory live during an iteration, above what was live when it began; max over the measured iterations (replayed), from {meter}")
    print(f"load average at start: {load()}", flush=True)
    started = time.perf_counter()
    for stage in STAGES:
        results = {variant: run_child(args, stage, variant) for variant in VARIANTS}
        if stage == "1":
            r = results["unifl"]
            print(f"parameters: UNet {r['unet_params'] / 1e6:.1f} M, VAE {r['vae_params'] / 1e6:.1f} M, LoRA {r['lora_params'] / 1e3:.0f} k; torch threads {r['threads']}")
        print_stage(stage, results, args)
        print_terms(stage, run_child(args, stage, None, "--terms-child"), args)
    print(f"\nload average at end: {load()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
