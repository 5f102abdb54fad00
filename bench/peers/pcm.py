"""PCM (Phased Consistency Models) on the pocket model through its authors' scripts,
``code/text_to_image_sd15/train_pcm_lora_sd15.py`` and, with ``--adversarial``, ``train_pcm_lora_sd15_adv.py``
(G-U-N/Phased-Consistency-Model, MIT), patched at run time.

``python bench/peers/pcm.py --source <folder holding the two scripts and discriminator_sd15.py> --data
<peer_data> --out <run> --seed 0 --budget-seconds 300 [--adversarial]``. Same model, data stream, LoRA (rank
16, alpha 16, attention + feed-forward), batch and learning rate as the UniFL pocket preset, fp32; 4
phases (its 4-step setting, sampled with 4 trailing DDIM steps), the teacher's CFG range scaled to the
pocket model's (w ∈ [1, 3] instead of the scripts' 4–5 on SD's 7.5 scale).
"""

from __future__ import annotations

import json
import shutil
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
from unifl.pocket.arena.counting import count_images  # noqa: E402

SCRIPTS = {False: "train_pcm_lora_sd15.py", True: "train_pcm_lora_sd15_adv.py"}
DISCRIMINATOR = "discriminator_sd15.py"


OWN_RANK, PEFT_DEFAULT_ALPHA = 64, 8
"""The scripts' own LoRA: ``--lora_rank`` 64 and no ``lora_alpha`` (peft's default 8 applies), its own targets."""


def script_patches(adversarial: bool, lora: str = "unifl") -> list[Patch]:
    data_line = ('CustomImageDataset(\n        "/mnt/data/wangfuyun/cc3m", args.resolution\n    )' if adversarial
                 else 'CustomImageDataset("/mnt/data/wangfuyun/cc3m", args.resolution)')
    patches = [
        Patch("torchvision stand-in (torchvision does not import beside the CPU torch)", "from torchvision import transforms\n", "from unifl_peer_standin import transforms\n"),
        Patch("data folder: the script hard-codes /mnt/data/…/cc3m with no option", data_line, "CustomImageDataset(_unifl_images, args.resolution)"),
        Patch("empty prompt padded to the text encoder's 40 positions, not SD's 77", "        max_length=77,\n", "        max_length=tokenizer.model_max_length,\n"),
        *([] if lora == "own" else [Patch("LoRA: the preset's alpha (the script sets none: peft's 8 would train rank 16 at scale 0.5) and targets",
              "    lora_config = LoraConfig(\n        r=args.lora_rank,\n        target_modules=[",
              "    lora_config = LoraConfig(\n        r=args.lora_rank,\n        lora_alpha=_unifl_lora_alpha,\n        target_modules=_unifl_lora_targets or [")]),
        Patch("wall-clock budget: stop at the first step past the UniFL stage's measured time (and log the step's own logs dict)", "            if global_step >= args.max_train_steps:\n                break\n",
              "            if global_step >= args.max_train_steps or _unifl_budget.spent(global_step, logs):\n                break\n"),
        Patch("wall-clock budget: no further epoch once stopped", "        for step, batch in enumerate(train_dataloader):\n",
              "        if _unifl_budget.stopped:\n            break\n        for step, batch in enumerate(train_dataloader):\n"),
    ]
    if adversarial:
        patches.append(Patch("discriminator betas (0, 0.999) as floats: torch 2.13's AdamW refuses an int beside a float",
                             "        betas=(0, 0.999),\n", "        betas=(0.0, 0.999),\n"))
        patches.append(Patch("discriminator heads sized for the pocket UNet's features (the script hard-codes SD1.5's nine)",
                             "discriminator = Discriminator(teacher_unet)", "discriminator = Discriminator(teacher_unet, adapter_channel_dims=_unifl_feature_channels)"))
    return patches


DISCRIMINATOR_PATCHES = [
    Patch("diffusers 0.42 moved UNet2DConditionModel (diffusers.models.unet_2d_condition is gone)",
          "from diffusers.models.unet_2d_condition import UNet2DConditionModel\n", "from diffusers import UNet2DConditionModel\n"),
]


def script_folder(source: Path) -> Path:
    """The folder of the scripts: ``code/text_to_image_sd15`` of a repository (as ``make peers`` fetches it), or
    that folder itself."""
    return source / "code" / "text_to_image_sd15" if (source / "code").is_dir() else source


def feature_channels(model_dir: Path) -> list[int]:
    """The channels of the features the PCM discriminator taps: each down block, the mid block, each up block."""
    channels = json.loads((model_dir / "unet" / "config.json").read_text())["block_out_channels"]
    return [*channels, channels[-1], *reversed(channels)]


def main(argv: list[str] | None = None) -> None:
    parser = peer_arguments(__doc__.split("\n\n")[0], "a local copy of PCM's code/text_to_image_sd15 (or the repository root)", "the arena's peer_data folder (png + txt pairs)")
    parser.add_argument("--adversarial", action="store_true", help="its adversarial variant (train_pcm_lora_sd15_adv.py)")
    parser.add_argument("--discriminator-rate", type=float, default=1e-5, help="the adversarial variant's --adv_lr (default its script's 1e-5)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    budget = Budget(args.budget_seconds, args.max_steps, args.out / "logs.csv")
    counter = count_unet_calls()
    from safetensors.torch import load_file

    source = script_folder(args.source)
    patches = script_patches(args.adversarial, args.lora)
    script = patched_copy(source / SCRIPTS[args.adversarial], patches, args.out)
    if args.adversarial:  # the script imports its discriminator and scheduler modules from beside it
        discriminator = patched_copy(source / DISCRIMINATOR, DISCRIMINATOR_PATCHES, args.out)
        shutil.copyfile(discriminator, args.out / DISCRIMINATOR)
        patches += DISCRIMINATOR_PATCHES
        sys.path[:0] = [str(args.out), str(source)]  # the patched discriminator first
        import discriminator_sd15  # noqa: E402  (the patched copy: the script's own import then finds it loaded)

        count_images(discriminator_sd15.Discriminator, "_forward", counter, "feedback")  # a UNet encoder and heads
    extra = ["--adv_weight", "0.1", "--adv_lr", f"{args.discriminator_rate:g}"] if args.adversarial else []
    rank = OWN_RANK if args.lora == "own" else LORA_RANK
    model = pocket_model()
    run_script(script, [
        "--pretrained_teacher_model", str(model), "--output_dir", str(args.out / "output"),
        "--resolution", "64", "--train_batch_size", str(BATCH_SIZE), "--learning_rate", str(args.learning_rate),
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--mixed_precision", "no", "--lora_rank", str(rank),
        "--loss_type", "huber", "--adam_weight_decay", "1e-3", "--max_train_steps", "1000000", "--max_train_samples", "1000000",
        "--dataloader_num_workers", "0", "--w_min", "1", "--w_max", "3", "--validation_steps", "100000000",
        "--checkpointing_steps", "100000000", "--seed", str(args.seed), "--num_ddim_timesteps", "50", "--multiphase", "4",
        "--report_to", "tensorboard", *extra,
    ], budget, {"_unifl_images": str(args.data / "images"), "_unifl_lora_alpha": LORA_ALPHA, "_unifl_lora_targets": list(LORA_TARGETS),
                "_unifl_feature_channels": feature_channels(model)})
    lora = save_lora(load_file(str(args.out / "output" / "unet_lora" / "pytorch_lora_weights.safetensors")), args.out, scale=(PEFT_DEFAULT_ALPHA if args.lora == "own" else LORA_ALPHA) / rank)
    name = "pcm_adv" if args.adversarial else "pcm"
    write_result(
        args.out, method=name, lora=lora, seconds=round(time.perf_counter() - budget.started, 1), steps=budget.steps,
        batch_size=BATCH_SIZE, images_seen=budget.steps * BATCH_SIZE, unet_evaluations=counter["unet"], feedback_evaluations=counter["feedback"], seed=args.seed,
        budget_seconds=args.budget_seconds, learning_rate=args.learning_rate, lora_config=args.lora,
        discriminator_rate=args.discriminator_rate if args.adversarial else None, version=f"G-U-N/Phased-Consistency-Model@{source_commit(source)} code/text_to_image_sd15/{SCRIPTS[args.adversarial]}",
        patches=[p.why for p in patches],
    )


if __name__ == "__main__":
    main()
