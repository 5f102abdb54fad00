"""``unifl export``: a training checkpoint as a kohya LoRA file."""

from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from ..core.config import TrainConfig, from_dict
    from ..core.diffusion.loading import load_denoiser
    from ..core.files import check_new_output
    from ..core.lora.kohya import save_kohya_lora
    from ..core.lora.peft import add_lora, load_lora_state_dict, settings_from_config
    from ..core.training import checkpoint as ckpt
    from ..core.training.outputs import sampler_contract

    check_new_output(args.out, overwrite=args.overwrite)  # before the model loads
    path = ckpt.resolve_resume(args.run_dir, args.checkpoint) if args.run_dir else Path(args.checkpoint)
    tensors, _, state = ckpt.load_checkpoint(path)
    config = from_dict(TrainConfig, state["config"])
    denoiser = load_denoiser(args.model or config.model.path)
    ckpt.check_model_family(path, state, denoiser.architecture)
    settings = settings_from_config(config.lora)
    add_lora(denoiser.lora_target, settings)
    load_lora_state_dict(denoiser.lora_target, tensors["lora"])
    out = save_kohya_lora(
        args.out,
        denoiser.lora_target,
        settings,
        naming=denoiser.module_naming,
        name_map=denoiser.lora_name_map,
        architecture=denoiser.architecture,
        metadata={"unifl.stage": config.stage, "unifl.steps_trained": str(state["step"])},
        sampler=sampler_contract(config),
        overwrite=args.overwrite,
    )
    print(f"exported {path} → {out}")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a training checkpoint as a kohya LoRA file")
    p.add_argument("checkpoint", help="a checkpoint folder, or 'latest' with --run-dir")
    p.add_argument("--run-dir", help="run folder, to resolve 'latest'")
    p.add_argument("--model", help="base model (default: the one in the checkpoint's config)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=run)
