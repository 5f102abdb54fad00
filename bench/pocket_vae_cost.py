"""What a pocket base's VAE costs a UniFL step: decoding with a gradient, beside the UNet's forward and backward.

``python bench/pocket_vae_cost.py [--threads 1] [--batch 4] [--repeats 5]``: for each VAE of the pocket LDM's build
presets (``pocket/models/ldm.py``, ``PRESETS``; randomly initialised, the cost does not depend on the weights) the
seconds of ``decode`` forward + backward and of ``encode`` (no gradient) for a batch of its latents, next to the
preset's UNet's forward + backward on the same latents, all in this one run on this machine. Every feedback term of a
UniFL step that scores images decodes with a gradient once, so this is the part of a step's cost a wider VAE adds
(``pocket/weights/ldm/TRIALS.md`` quotes it).
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def seconds_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from unifl.core.machine import cpu_name
    from unifl.pocket.models.ldm import MAX_TOKENS, PRESETS, RESOLUTION, TEXT_CONFIG, unet_config, vae_config

    torch.manual_seed(0)
    text = torch.randn(args.batch, MAX_TOKENS, TEXT_CONFIG["hidden_size"])
    timesteps = torch.full((args.batch,), 500)
    rows, seen = [], {}
    for name, settings in PRESETS.items():
        key = (settings.vae_channels, settings.unet_channels, settings.latent_factor)
        if key in seen:
            seen[key].append(name)
            continue
        seen[key] = [name]
        side = RESOLUTION // settings.latent_factor
        z = torch.randn(args.batch, 4, side, side, requires_grad=True)
        unet = UNet2DConditionModel(**unet_config(settings.unet_channels, settings.latent_factor, settings.unet_layers_per_block))
        step = seconds_per_call(lambda: unet(z, timesteps, text).sample.sum().backward(), args.repeats)
        vae = AutoencoderKL(**vae_config(settings.vae_channels))
        decode = seconds_per_call(lambda: vae.decode(z).sample.sum().backward(), args.repeats)
        images = torch.rand(args.batch, 3, RESOLUTION, RESOLUTION) * 2 - 1
        with torch.no_grad():
            encode = seconds_per_call(lambda: vae.encode(images).latent_dist.mean, args.repeats)
        rows.append({"widths": settings.vae_channels, "latents": f"{side}×{side}", "presets": seen[key], "parameters": sum(p.numel() for p in vae.parameters()),
                     "unet": step, "decode": decode, "encode": encode})
    print(f"pocket VAE cost, batch {args.batch}, {torch.get_num_threads()} thread(s) on {cpu_name()}, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}")
    print("| VAE widths | latents | presets | VAE parameters | UNet fwd + bwd (ms) | decode fwd + bwd (ms) | decode ÷ UNet | encode, no grad (ms) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['widths']} | {row['latents']} | {', '.join(row['presets'])} | {row['parameters'] / 1e6:.2f} M | {row['unet'] * 1000:.0f} | "
              f"{row['decode'] * 1000:.0f} | {row['decode'] / row['unet']:.2f} | {row['encode'] * 1000:.0f} |")
    return rows


if __name__ == "__main__":
    main()
