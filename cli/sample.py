"""``unifl sample``: images from a model, by default with a UniFL LoRA's own sampler settings."""

from __future__ import annotations

import sys
from pathlib import Path

from .arguments import number, whole


def run(args) -> int:
    from ..core.diffusion.loading import load_denoiser
    from ..core.diffusion.sampling import generate
    from ..core.files import check_new_output, check_output_folder
    from ..core.images import save_grid, save_png, to_pil
    from ..core.lora.kohya import SamplerContract, load_kohya_lora, read_lora_metadata

    out = Path(args.out)
    seeds = [args.seed + i for i in range(len(args.prompt) * args.num_images)]
    names = [f"{i:04d}-seed{seed}.png" for i, seed in enumerate(seeds)]
    check_output_folder(out)
    check_new_output(*(out / name for name in (*names, "grid.png")), overwrite=args.overwrite)  # before the model loads
    denoiser = load_denoiser(args.model)
    factor = denoiser.vae_scale_factor
    for name, size in (("--height", args.height), ("--width", args.width)):
        if size % factor:
            raise ValueError(f"{name} {size}: this model's images are made of {factor}x{factor}-pixel latents; use a multiple of {factor}, e.g. {max(factor, size // factor * factor)}")
    contract = SamplerContract(steps=20, timestep_spacing="leading", cfg=7.5)
    if args.lora:
        contract = SamplerContract.from_metadata(read_lora_metadata(args.lora)) or contract
        load_kohya_lora(args.lora, denoiser.lora_target, architecture=denoiser.architecture)
    steps, warning = contract.steps_for(args.steps)
    if warning:
        print(f"unifl sample: {args.lora}: {warning}", file=sys.stderr)
    spacing = args.spacing or contract.timestep_spacing
    cfg = contract.cfg if args.cfg is None else args.cfg
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    print(f"sampling {len(prompts)} image(s): {steps} DDIM steps, {spacing} spacing, CFG {cfg}")
    images = generate(denoiser, prompts, seeds, height=args.height, width=args.width, steps=steps, spacing=spacing, cfg=cfg, negative_prompt=args.negative_prompt)
    for name, image in zip(names, to_pil(images)):
        save_png(image, out / name)
    save_grid(images, out / "grid.png", columns=min(4, len(prompts)))
    print(f"wrote {len(prompts)} image(s) and grid.png to {out}")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate images, by default with the LoRA's own sampler settings")
    p.add_argument("--model", required=True, help="diffusers folder or single-file checkpoint")
    p.add_argument("--lora", help="a UniFL (kohya) LoRA file; its metadata sets steps, spacing and CFG unless given")
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--num-images", type=whole(1), default=1, help="images per prompt")
    p.add_argument("--steps", type=whole(1), help="DDIM steps (default: the LoRA's contract, else 20); a few-step LoRA samples at the nearest count it was trained for")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"], help="timestep spacing (default: the LoRA's contract)")
    p.add_argument("--cfg", type=number(1.0), help="CFG scale; 1 disables CFG (one UNet call per step)")
    p.add_argument("--seed", type=whole(0), default=0)
    p.add_argument("--height", type=whole(8), default=512)
    p.add_argument("--width", type=whole(8), default=512)
    p.add_argument("--out", default="out/samples", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace images (and grid.png) of an earlier run in --out")
    p.set_defaults(func=run)
