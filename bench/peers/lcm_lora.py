"""LCM-LoRA on the pocket model through diffusers' own example,
``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py`` (Apache-2.0), patched at run time.

``python bench/peers/lcm_lora.py --source <diffusers checkout> --data <peer_data> --out <run> --seed 0
--budget-seconds 300`` (the arena runs it in a Python with webdataset). Same model, data stream, LoRA
(rank 16, alpha 16, attention + feed-forward), batch and learning rate as the UniFL pocket preset, fp32;
CFG range of the teacher scaled to the pocket model's (w ∈ [1, 3], i.e. CFG 2–4 around its 3).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BATCH_SIZE,
    LORA_ALPHA,
    LORA_RANK,
    LORA_TARGETS,
    Budget,
    Patch,
    count_unet_calls,
    patched_copy,
    peer_arguments,
    pocket_model,
    run_script,
    save_lora,
    set_threads,
    write_result,
)
from unifl.core.machine import source_commit  # noqa: E402
from data import shard_pattern

SCRIPT = Path("examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py")

PATCHES = [
    Patch("torchvision stand-in (torchvision does not import beside the CPU torch)", "import torchvision.transforms.functional as TF\n", "from unifl_peer_standin import functional as TF\n"),
    Patch("torchvision stand-in (transforms)", "from torchvision import transforms\n", "from unifl_peer_standin import transforms\n"),
    Patch("interpolation mode from the stand-in (diffusers' resolver needs torchvision)", "interpolation_mode = resolve_interpolation_mode(interpolation_type)", "interpolation_mode = transforms.InterpolationMode[interpolation_type.upper()]"),
    Patch("skip webdataset 1.x's empty end-of-shard sample (KeyError: 'fname')", "        assert isinstance(filesample, dict)\n", "        assert isinstance(filesample, dict)\n        if \"fname\" not in filesample:\n            continue\n"),
    Patch("empty prompt padded to the text encoder's 40 positions, not SD's 77", 'padding="max_length", max_length=77\n', 'padding="max_length", max_length=tokenizer.model_max_length\n'),
    Patch("fp32 teacher: torch.autocast on CPU would run it in bf16 despite --mixed_precision no", "autocast_ctx = torch.autocast(accelerator.device.type)\n", "autocast_ctx = nullcontext()\n"),
    Patch("wall-clock budget: stop at the first step past the UniFL stage's measured time (and log the step's own logs dict)", "            if global_step >= args.max_train_steps:\n                break\n",
          "            if global_step >= args.max_train_steps or _unifl_budget.spent(global_step, logs):\n                break\n"),
    Patch("wall-clock budget: no further epoch once stopped", "        for step, batch in enumerate(train_dataloader):\n",
          "        if _unifl_budget.stopped:\n            break\n        for step, batch in enumerate(train_dataloader):\n"),
]


def lora_arguments(variant: str) -> list[str]:
    """UniFL's LoRA, or none: the script's own defaults (rank 64, alpha 64, its own wider list of targets)."""
    if variant == "own":
        return []
    return ["--lora_rank", str(LORA_RANK), "--lora_alpha", str(int(LORA_ALPHA)), "--lora_target_modules", ",".join(LORA_TARGETS)]


def main(argv: list[str] | None = None) -> None:
    parser = peer_arguments(__doc__.split("\n\n")[0], "a local copy of huggingface/diffusers", "the arena's peer_data folder (webdataset shards)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    budget = Budget(args.budget_seconds, args.max_steps, args.out / "logs.csv")
    counter = count_unet_calls()
    import diffusers
    from safetensors.torch import load_file

    script = patched_copy(args.source / SCRIPT, PATCHES, args.out)
    count = int((args.data / "COUNT").read_text())
    run_script(script, [
        "--pretrained_teacher_model", str(pocket_model()), "--output_dir", str(args.out / "output"),
        "--train_shards_path_or_url", shard_pattern(args.data), "--max_train_samples", str(count),
        "--resolution", "64", "--train_batch_size", str(BATCH_SIZE), "--learning_rate", str(args.learning_rate),
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--mixed_precision", "no",
        *lora_arguments(args.lora),
        "--w_min", "1", "--w_max", "3", "--max_train_steps", "1000000", "--dataloader_num_workers", "1",
        "--validation_steps", "100000000", "--checkpointing_steps", "100000000", "--seed", str(args.seed),
        "--report_to", "tensorboard", "--num_ddim_timesteps", "50", "--loss_type", "huber",
    ], budget)
    lora = save_lora(load_file(str(args.out / "output" / "unet_lora" / "pytorch_lora_weights.safetensors")), args.out, scale=1.0)  # alpha = rank either way
    write_result(
        args.out, method="lcm_lora", lora=lora, seconds=round(time.perf_counter() - budget.started, 1), steps=budget.steps,
        batch_size=BATCH_SIZE, images_seen=budget.steps * BATCH_SIZE, unet_evaluations=counter["unet"], feedback_evaluations=counter["feedback"], seed=args.seed,
        budget_seconds=args.budget_seconds, learning_rate=args.learning_rate, lora_config=args.lora, version=f"huggingface/diffusers@{source_commit(args.source)} {SCRIPT} (diffusers {diffusers.__version__} installed)",
        patches=[p.why for p in PATCHES],
    )


if __name__ == "__main__":
    main()
