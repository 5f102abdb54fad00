"""Peak RAM of starting a UniFL run inside a webui that computes on the CPU: the webui's model and UniFL's own.

A webui on the CPU (Forge ``--always-cpu``, A1111 ``--use-cpu all``) keeps its checkpoint in RAM, and
"unloading" it moves it nowhere; UniFL then loads the same file again. Three ways, each in a fresh
subprocess so that one's allocator cannot inflate another's figure (peak = the process's ``VmHWM``):

* ``before``: the webui's model held (fp32, as a CPU webui computes), UniFL's copy loaded in fp32 (what
  the ``sd15`` preset stored until the frozen weights followed the mixed precision);
* ``bf16 copy``: the webui's model held, UniFL's copy in bf16 (the ``sd15`` preset now);
* ``now (Forge)``: the webui's model let go first (``WebuiHost.release_gpu`` on a CPU Forge), UniFL's copy in bf16.

The webui's model is stood in for by the same checkpoint loaded with diffusers in fp32 (Forge's own
loader builds other module classes of the same size). Needs a single-file SD1.5 checkpoint; a random-weight
full-size one is made by ``python tests/comfyui_stub/random_sd15.py OUT.safetensors --size full``.

    python bench/webui_memory.py /path/to/sd15.safetensors
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a single-file SD1.5 checkpoint (.safetensors)")
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    if args.scenario:
        print(RESULT_PREFIX + json.dumps(measure(args.checkpoint, *SCENARIOS[args.scenario])), flush=True)
        return 0

    print(f"machine: {platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"Python {platform.python_version()} · checkpoint {args.checkpoint} ({os.path.getsize(args.checkpoint) / GIB:.2f} GiB)")
    print(f"{'scenario':<14} {'webui model':<12} {'UniFL copy':<11} {'after webui load':>17} {'peak':>8} {'end':>8}")
    for name, (webui_model, dtype) in SCENARIOS.items():
        run = subprocess.run([sys.executable, __file__, args.checkpoint, "--scenario", name], capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if run.returncode != 0 or not lines:
            print(f"{name}: failed\n{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        r = json.loads(lines[-1][len(RESULT_PREFIX):])
        print(f"{name:<14} {webui_model:<12} {dtype:<11} {r['webui_model_gib']:>13.2f} GiB {r['peak_gib']:>4.2f} GiB {r['rss_end_gib']:>4.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
