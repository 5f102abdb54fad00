"""Per-step costs of the arena's jobs on this machine, and what they make of `make arena`'s wall time.

``python bench/arena_costs.py [--out <scratch folder>]``: one thread, the machine as it is (say how busy it
was when you quote the numbers). Measures a UniFL stage-1 and stage-2 step (pocket preset, steps 3–8 of a
run, after warm-up), an AlignProp step through the peer glue (if trl's venv is there), a UNet call per
image when sampling through the arena's pipeline, and the judges' measuring per image; then prints
:func:`unifl.pocket.arena.estimate.estimate` for the standard arena (copy the costs into ``MEASURED_COSTS`` there
when they are from a quiet machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def step_cost(log_csv: Path, first: int = 3) -> float:
    rows = list(csv.DictReader(log_csv.open()))
    seconds = [float(r["seconds"]) for r in rows]
    return (seconds[-1] - seconds[first - 1]) / (len(seconds) - first)


def unifl_step(out: Path, stage: str, steps: int = 8) -> float:
    from unifl.core.config import load_config
    from unifl.core.training.trainer import UniFLTrainer

    run = out / f"stage{stage}"
    config = load_config(None, [f"logging.output_dir={run}", "logging.tensorboard=false", f"stage={stage}", f"optim.max_steps={steps}"], preset="pocket")
    UniFLTrainer(config).train(overwrite=True)
    return step_cost(run / "logs.csv")


def alignprop_step(out: Path, steps: int = 5) -> float | None:
    from unifl.pocket.arena.run import PEER_GLUE, package_path_entry, peer_present, peer_sources

    if not peer_present("alignprop"):
        return None
    run = out / "alignprop"
    run.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(package_path_entry(run))}
    subprocess.run([peer_sources()["alignprop"]["python"], str(PEER_GLUE / "alignprop.py"), "--out", str(run), "--max-steps", str(steps)],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return step_cost(run / "logs.csv", first=2)


def sampling_cost(out: Path, images: int = 64) -> float:
    from unifl.pocket.arena.measure import sample_row
    from unifl.pocket.arena.plan import Sampler
    from unifl.pocket.world.world import sample_prompts

    sampler = Sampler("ddim", 4, 1.0, "trailing")
    started = time.perf_counter()
    sample_row(sampler, None, sample_prompts(images, 401), list(range(images)), str(out / "samples.safetensors"))
    return (time.perf_counter() - started) / (images * sampler.unet_calls_per_image())


def measure_cost(images: int = 256) -> float:
    from unifl.pocket.arena.measure import Judges, prompt_set
    from unifl.pocket.arena.plan import SPLITS, ArenaSettings

    settings = ArenaSettings(num_prompts=images, images_per_prompt=1, num_real=images)
    prompts = prompt_set(SPLITS["validation"], settings, 0)
    judges = Judges()
    real = judges.real_features(SPLITS["validation"].real_seed, 0, images)
    fake = torch.rand(images, 3, 64, 64)
    started = time.perf_counter()
    judges.measure(fake, prompts, real, None)
    return (time.perf_counter() - started) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="arena-costs-")), help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from unifl.core.machine import describe_machine
    from unifl.pocket.arena.estimate import estimate
    from unifl.pocket.arena.plan import ArenaSettings
    from unifl.pocket.plugin import register

    register()
    load = os.getloadavg()
    costs = {"stage1_step": unifl_step(args.out, "1"), "stage2_step": unifl_step(args.out, "2"), "unet_image": sampling_cost(args.out),
             "measure_image": measure_cost()}
    measured_alignprop = alignprop_step(args.out)
    costs["alignprop_step"] = measured_alignprop if measured_alignprop is not None else costs["stage1_step"]
    result = estimate(ArenaSettings(), costs)
    print(f"machine: {describe_machine()}; load average at start {load[0]:.1f}, 1 thread")
    print("costs (s): " + json.dumps({k: round(v, 4) for k, v in costs.items()}) + ("" if measured_alignprop is not None else " (AlignProp not measured: stage 1's cost used)"))
    print(f"standard arena ({len(ArenaSettings().seeds)} seeds, ablations, every peer with both LoRAs and its sweeps, every control, {ArenaSettings().images} images per model and seed, 2 workers): "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.items()))


if __name__ == "__main__":
    sys.exit(main())
