"""A short real-size training run: UniFL stage 1 on a random-weight SD1.5 at 512 px, the recipe's models.

``bench/gpu_check.sh`` runs it on a GPU (50 steps). It goes through ``UniFLTrainer.train()``, the loop
users run: the paper's rollouts (PeFL from level 10 of 20, grad at [0, 5]; aesthetic 20 steps), the
four aspect rewards and three perception models of docs/recipes.md at their real sizes with random
weights (``bench/real_size.py`` builds them), bf16 frozen weights, checkpointing, the LoRA exported at
the end. Prints the step rate and the peak memory; fails if a loss is not finite.

    python bench/gpu_train.py --steps 50              # CUDA if available
    python bench/gpu_train.py --steps 2 --quick       # toy widths on the CPU: checks that it runs
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import real_size  # noqa: E402  (bench/real_size.py: the random real-size models)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="toy widths (checks that it runs)")
    args = parser.parse_args(argv)

    import torch
    from unifl.core.config import load_config
    from unifl.core.training.trainer import TrainerCallbacks, UniFLTrainer

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    real_size.register_bench_models(args.quick)
    from unifl.core.feedback.registry import PERCEPTION_MODELS

    with tempfile.TemporaryDirectory(prefix="unifl-gpu-train-") as scratch:
        real_size.write_images(os.path.join(scratch, "images"), 512)
        with open(os.path.join(scratch, "prompts.txt"), "w") as fh:
            fh.write("\n".join(real_size.PROMPTS) + "\n")
        perception = [(a, k) for a, k in real_size.PERCEPTION if k in PERCEPTION_MODELS]
        overrides = [
            "stage=1", f"data.resolution={args.resolution}", f"data.images={os.path.join(scratch, 'images')}", f"data.prompts={os.path.join(scratch, 'prompts.txt')}",
            f"optim.max_steps={args.steps}", "optim.gradient_accumulation_steps=1", "optim.warmup_steps=0",
            f"logging.output_dir={os.path.join(scratch, 'run')}", "logging.tensorboard=false", "logging.validate_every=0", f"logging.checkpoint_every={args.steps}",
            "logging.validation_prompts=[\"a photo of a cat on a sofa\"]",
            "rewards=[" + ", ".join(f'{{aspect = "{a}", kind = "{k}", path = "bf16", weight = {w}, threshold = {t}}}' for a, k, w, t in real_size.REWARDS) + "]",
            "perception=[" + ", ".join(f'{{aspect = "{a}", kind = "{k}", path = "bf16"}}' for a, k in perception) + "]",
        ]
        config = load_config(None, overrides, preset="sd15")  # the preset's bf16 weights, bf16 autocast, checkpointing
        denoiser = real_size.random_denoiser("sd15", torch.bfloat16, torch.float32, args.device, args.quick)
        losses = []
        trainer = UniFLTrainer(config, denoiser=denoiser, callbacks=TrainerCallbacks(on_progress=lambda step, total, logs: losses.append(dict(logs))))
        if args.device == "cuda":  # the text encoders leave the GPU; validation at the end encodes on the CPU
            trainer.encode(["", *real_size.PROMPTS])
            for encoder in denoiser.text_encoders:
                encoder.to("cpu")
        print(trainer.describe(), flush=True)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = trainer.train(overwrite=True)
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
        print(f"\n{result.steps} stage-1 steps at {args.resolution} px in {seconds:.0f} s ({seconds / max(1, result.steps):.2f} s/step); LoRA {os.path.basename(str(result.lora_path))}")
        if peak is not None:
            print(f"peak tensor memory (torch.cuda.max_memory_allocated): {peak:.2f} GiB on {torch.cuda.get_device_name()}")
        bad = [(i, k, v) for i, logs in enumerate(losses) for k, v in logs.items() if isinstance(v, (int, float)) and not math.isfinite(v)]
        print("last step's logs: " + ", ".join(f"{k} {v:.4g}" for k, v in (losses[-1] if losses else {}).items() if isinstance(v, (int, float))))
        if bad or result.steps != args.steps:
            print(f"FAILED: {result.steps}/{args.steps} steps; non-finite logs: {bad[:5]}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
