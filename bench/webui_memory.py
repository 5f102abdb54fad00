"""Peak RAM of starting a UniFL run inside a webui that computes on the CPU: the webui's model and UniFL's own.

A webui on the CPU (Forge ``--always-cpu``, A1111 ``--use-cpu all``) keeps its checkpoint in RAM, and
"unloading" it moves it nowhere; UniFL then loads the same file again. Three ways, each in a fresh
subprocess so that one's allocator cannot inflate another's figure (peak = the process's ``VmHWM``):

* ``before``: the webui's model held (fp32, as a CPU webui computes), UniFL's copy loaded in fp32 (what
  the ``sd15`` preset stored until the frozen weights followed the mixed precision);
* ``bf16 copy``: the webui's model held, UniFL's copy in bf16 (the ``sd15`` preset now);
* ``now (Forge)``: the webui's model let go first (``WebuiHost.release_gpu`` on a CPU Forge), UniFL's copy in bf16.

Then what a run leaves in the process (``--after-run``): in one fresh subprocess, the webui's stand-in model
loaded and let go, then a whole tab job (:class:`~unifl.webui_extension.jobs.TrainingJob`, 2 steps of aesthetic
feedback from the image statistics at 64 px on the CPU, the real-Forge test's run); its RSS when the job ends,
just before and just after the job's :func:`~unifl.core.memory.release_freed_memory` (glibc's ``malloc_trim``):
the same process, the same heap, measured both ways.

The webui's model is stood in for by the same checkpoint loaded with diffusers in fp32 (Forge's own
loader builds other module classes of the same size). Needs a single-file SD1.5 checkpoint; a random-weight
full-size one is made by ``python tests/comfyui_stub/random_sd15.py OUT.safetensors --size full``.

    python bench/webui_memory.py /path/to/sd15.safetensors [--after-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

RESULT_PREFIX = "BENCH-RESULT "
SCENARIOS = {
    "before": ("held", "fp32"),
    "bf16 copy": ("held", "bf16"),
    "now (Forge)": ("let go", "bf16"),
}
GIB = 2**30


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))


def measure(checkpoint: str, webui_model: str, dtype: str) -> dict:
    """In this process: hold (or load and let go) the webui's stand-in model, then load UniFL's denoiser."""
    import gc

    import torch

    from unifl.core.diffusion.loading import load_denoiser, load_pipeline

    torch.set_num_threads(1)
    held = load_pipeline(checkpoint, dtype=torch.float32)
    after_webui = _status_kib("VmRSS")
    if webui_model == "let go":
        del held
        gc.collect()
    denoiser = load_denoiser(checkpoint, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    return {"webui_model_gib": after_webui * 1024 / GIB, "rss_end_gib": _status_kib("VmRSS") * 1024 / GIB,
            "peak_gib": _status_kib("VmHWM") * 1024 / GIB, "unet_dtype": str(denoiser.unet.dtype)}


def measure_after_run(checkpoint: str) -> dict:
    """In this process: the webui's model loaded and let go, then a 2-step tab job; RSS around the job's trim."""
    import gc
    import tempfile
    from pathlib import Path

    import torch
    from PIL import Image

    from unifl.core.config import load_config
    from unifl.core.diffusion.loading import load_pipeline
    from unifl.core.config.presets import STATISTIC_REWARDS
    from unifl.webui_extension import jobs
    from unifl.webui_extension.form import toml_literal
    from unifl.webui_extension.host import StandaloneHost

    torch.set_num_threads(1)
    held = load_pipeline(checkpoint, dtype=torch.float32)
    webui_model = _status_kib("VmRSS")
    del held
    gc.collect()
    let_go = _status_kib("VmRSS")
    folder = Path(tempfile.mkdtemp(prefix="unifl-bench-"))
    images = folder / "images"
    images.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (64, 64), color).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"a {color} square")
    config = load_config(None, [
        f"model.path={toml_literal(checkpoint)}", f"logging.output_dir={toml_literal(str(folder / 'run'))}", f"data.images={toml_literal(str(images))}",
        f"rewards={toml_literal([dict(table) for table in STATISTIC_REWARDS])}", "data.resolution=64", "optim.max_steps=2",
        "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]", "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
        "optim.gradient_accumulation_steps=1", "optim.warmup_steps=0", "logging.checkpoint_every=1000", "logging.validate_every=0",
    ], preset="sd15")
    around_trim: dict[str, int] = {}
    trim = jobs.release_freed_memory

    def measured_trim() -> bool:
        gc.collect()
        around_trim["before"] = _status_kib("VmRSS")
        released = trim()
        around_trim["after"] = _status_kib("VmRSS")
        return released

    jobs.release_freed_memory = measured_trim
    job = jobs.TrainingJob("bench", config, StandaloneHost([], folder / "Lora", folder), folder / "Lora" / "bench.safetensors", resume=False, replace=False)
    message = job.run()
    if job.snapshot().state != jobs.FINISHED:
        raise SystemExit(f"the run did not finish: {message}")
    return {"webui_model_gib": webui_model * 1024 / GIB, "let_go_gib": let_go * 1024 / GIB, "peak_gib": _status_kib("VmHWM") * 1024 / GIB,
            "end_untrimmed_gib": around_trim["before"] * 1024 / GIB, "end_trimmed_gib": around_trim["after"] * 1024 / GIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a single-file SD1.5 checkpoint (.safetensors)")
    parser.add_argument("--after-run", action="store_true", help="what a 2-step tab job leaves in the process, before and after its trim")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "after run"], help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    if args.scenario:
        result = measure_after_run(args.checkpoint) if args.scenario == "after run" else measure(args.checkpoint, *SCENARIOS[args.scenario])
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    print(f"machine: {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"Python {platform.python_version()} · checkpoint {args.checkpoint} ({os.path.getsize(args.checkpoint) / GIB:.2f} GiB)")
    if args.after_run:
        r = _child(args.checkpoint, "after run")
        if r is None:
            return 1
        print(f"webui model held {r['webui_model_gib']:.2f} GiB, let go {r['let_go_gib']:.2f} GiB, peak {r['peak_gib']:.2f} GiB; when the job ended: "
              f"{r['end_untrimmed_gib']:.2f} GiB before its trim, {r['end_trimmed_gib']:.2f} GiB after")
        return 0
    print(f"{'scenario':<14} {'webui model':<12} {'UniFL copy':<11} {'after webui load':>17} {'peak':>8} {'end':>8}")
    for name, (webui_model, dtype) in SCENARIOS.items():
        r = _child(args.checkpoint, name)
        if r is None:
            return 1
        print(f"{name:<14} {webui_model:<12} {dtype:<11} {r['webui_model_gib']:>13.2f} GiB {r['peak_gib']:>4.2f} GiB {r['rss_end_gib']:>4.2f} GiB")
    return 0


def _child(checkpoint: str, scenario: str) -> dict | None:
    """One measurement in a fresh subprocess (its own allocator); ``None`` after printing why it failed."""
    run = subprocess.run([sys.executable, __file__, checkpoint, "--scenario", scenario], capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if run.returncode != 0 or not lines:
        print(f"{scenario}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len(RESULT_PREFIX):])


if __name__ == "__main__":
    sys.exit(main())
