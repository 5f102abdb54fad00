"""The ``unifl`` command line (also ``python -m unifl``; ``accelerate launch -m unifl train …`` for GPUs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args) -> int:
    from .config import explain, load_config
    from .trainer import UniFLTrainer

    if args.explain:
        for key, default, text in explain():
            print(f"{key} = {default}\n    {text}")
        return 0
    if args.config is None and args.preset is None:
        print("unifl train: give a CONFIG file or --preset NAME (see --explain for every field)", file=sys.stderr)
        return 2
    config = load_config(args.config, args.set, preset=args.preset)
    result = UniFLTrainer(config).train(resume=args.resume, overwrite=args.overwrite)
    print(f"{'stopped' if result.stopped_early else 'finished'} after {result.steps} steps; LoRA: {result.lora_path}")
    return 0


def _sample(args) -> int:
    from .export import SamplerContract, load_kohya_lora, read_lora_metadata
    from .images import save_grid, save_png, to_pil
    from .models.loading import load_denoiser
    from .sampling import generate

    denoiser = load_denoiser(args.model)
    contract = SamplerContract(steps=20, timestep_spacing="leading", cfg=7.5)
    if args.lora:
        contract = SamplerContract.from_metadata(read_lora_metadata(args.lora)) or contract
        load_kohya_lora(args.lora, denoiser.lora_target, architecture=denoiser.architecture)
    steps = args.steps or contract.steps
    spacing = args.spacing or contract.timestep_spacing
    cfg = contract.cfg if args.cfg is None else args.cfg
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + i for i in range(len(prompts))]
    print(f"sampling {len(prompts)} image(s): {steps} DDIM steps, {spacing} spacing, CFG {cfg}")
    images = generate(denoiser, prompts, seeds, height=args.height, width=args.width, steps=steps, spacing=spacing, cfg=cfg, negative_prompt=args.negative_prompt)
    out = Path(args.out)
    for i, image in enumerate(to_pil(images)):
        save_png(image, out / f"{i:04d}-seed{seeds[i]}.png")
    save_grid(images, out / "grid.png", columns=min(4, len(prompts)))
    print(f"wrote {len(prompts)} image(s) and grid.png to {out}")
    return 0


def _export(args) -> int:
    from . import checkpoint as ckpt
    from .config import from_dict, TrainConfig
    from .export import save_kohya_lora
    from .lora import LoRASettings, add_lora, load_lora_state_dict
    from .models.loading import load_denoiser
    from .trainer import sampler_contract

    path = ckpt.resolve_resume(args.run_dir, args.checkpoint) if args.run_dir else Path(args.checkpoint)
    tensors, _, state = ckpt.load_checkpoint(path)
    config = from_dict(TrainConfig, state["config"])
    denoiser = load_denoiser(args.model or config.model.path)
    settings = LoRASettings(rank=config.lora.rank, alpha=config.lora.alpha, targets=config.lora.targets)
    add_lora(denoiser.lora_target, settings)
    load_lora_state_dict(denoiser.lora_target, tensors["lora"])
    out = save_kohya_lora(args.out, denoiser.lora_target, settings, naming=denoiser.module_naming, name_map=denoiser.lora_name_map, architecture=denoiser.architecture,
                          metadata={"unifl.stage": config.stage, "unifl.steps_trained": str(state["step"])}, sampler=sampler_contract(config), overwrite=args.overwrite)
    print(f"exported {path} → {out}")
    return 0


def _demo(args) -> int:
    from dataclasses import replace

    from .demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    run_demo(out_dir=args.out, settings=replace(settings, workers=args.workers, threads=args.threads))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifl", description="UniFL: unified feedback learning for Stable Diffusion, trained as a LoRA.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a UniFL stage as a LoRA", description="Train stage 1 (quality) or stage 2 (acceleration). Multi-GPU: accelerate launch -m unifl train CONFIG.")
    p.add_argument("config", nargs="?", help="TOML config file (may start with preset = 'sd15' | 'sdxl' | 'pocket' | 'tiny')")
    p.add_argument("--preset", help="start from a named preset (the file's own preset key wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field, e.g. --set optim.max_steps=200 (repeatable)")
    p.add_argument("--resume", metavar="latest|CHECKPOINT", help="continue from the newest checkpoint of the run folder, or from a checkpoint folder")
    p.add_argument("--overwrite", action="store_true", help="allow starting a fresh run in a folder that already holds checkpoints")
    p.add_argument("--explain", action="store_true", help="print every config field with its default and meaning, then exit")
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="generate images, by default with the LoRA's own sampler settings")
    p.add_argument("--model", required=True, help="diffusers folder or single-file checkpoint")
    p.add_argument("--lora", help="a UniFL (kohya) LoRA file; its metadata sets steps, spacing and CFG unless given")
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the LoRA's contract, else 20)")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"], help="timestep spacing (default: the LoRA's contract)")
    p.add_argument("--cfg", type=float, help="CFG scale; 1 disables CFG (one UNet call per step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--out", default="out/samples", help="output folder")
    p.set_defaults(func=_sample)

    p = sub.add_parser("export", help="write a training checkpoint as a kohya LoRA file")
    p.add_argument("checkpoint", help="a checkpoint folder, or 'latest' with --run-dir")
    p.add_argument("--run-dir", help="run folder, to resolve 'latest'")
    p.add_argument("--model", help="base model (default: the one in the checkpoint's config)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_export)

    from ..webui_extension.standalone import add_webui_command
    from .pocket.build import add_pocket_command
    from .prompts import add_select_prompts_command
    from .score import add_score_command
    from .train_reward import add_train_reward_command

    add_score_command(sub)
    add_train_reward_command(sub)
    add_select_prompts_command(sub)
    add_webui_command(sub)
    add_pocket_command(sub)

    p = sub.add_parser("demo", help="train stage 1 and stage 2 on the embedded default model, offline, on a CPU")
    p.add_argument("--quick", action="store_true", help="the same path in a few minutes' fraction (for tests)")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--workers", type=int, default=2, help="processes training and sampling side by side (default 2, one per core of a small machine)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default 1: the demo's models are tiny, and on a 2-core machine two threads "
                   "stalled whenever another process held a core: 90 s vs 1.1 s per stage-1 step, measured)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import atomic_write_text  # noqa: F401  (cheap import check of the package)
    from .config import ConfigError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError, ImportError) as err:
        print(f"unifl {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"unifl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
