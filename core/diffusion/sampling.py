"""Sampling with the deployment sampler: deterministic DDIM at any step count and spacing, CFG optional.

A stage-2 UniFL LoRA is meant for 4 trailing-spaced DDIM steps without CFG: exactly 4 UNet evaluations
per image. CFG doubles that, so it is off (``cfg = 1``) unless asked for.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .denoiser import Conditioning, Denoiser


def guided_x0(denoiser: Denoiser, uncond: Conditioning, scale: float):
    """An ``x0`` predictor with classifier-free guidance (linear in x0 ⇔ linear in ε)."""

    def predict(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        negative = uncond[[0] * len(x)] if len(uncond) == 1 else uncond
        both = denoiser.predict_x0(torch.cat([x, x]), torch.cat([t, t]), Conditioning.cat([negative, cond]))
        x0_uncond, x0_cond = both.chunk(2)
        return x0_uncond + scale * (x0_cond - x0_uncond)

    return predict


@torch.no_grad()
def sample_latents(denoiser: Denoiser, cond: Conditioning, latents: torch.Tensor, *, steps: int, spacing: str = "trailing", cfg: float = 1.0, uncond: Conditioning | None = None, callback=None) -> torch.Tensor:
    """DDIM (η = 0) from initial noise ``latents`` to clean latents."""
    timesteps = denoiser.timesteps(steps, spacing)
    predict = denoiser.predict_x0
    if cfg != 1.0:
        if uncond is None:
            uncond = denoiser.encode_prompts([""])
        predict = guided_x0(denoiser, uncond, cfg)
    x = latents
    batch = x.shape[0]
    for i, t in enumerate(timesteps):
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else torch.tensor(-1)
        x0 = predict(x, t.repeat(batch), cond)
        x = denoiser.ddim_step(x, x0, t.repeat(batch), t_next.repeat(batch))
        if callback is not None:
            callback(i + 1, len(timesteps))
    return x


def initial_noise(denoiser: Denoiser, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """One latent of noise per seed: the same seed gives the same image at any batch size."""
    f = denoiser.vae_scale_factor
    shape = (denoiser.latent_channels, height // f, width // f)
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(denoiser.device)


@torch.no_grad()
def generate(denoiser: Denoiser, prompts: Sequence[str], seeds: Sequence[int], *, height: int, width: int, steps: int, spacing: str = "trailing", cfg: float = 1.0, negative_prompt: str = "", batch_size: int = 8) -> torch.Tensor:
    """Images in ``[0, 1]`` (BCHW, float32 CPU) for ``prompts`` and ``seeds`` (same length)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    uncond = denoiser.encode_prompts([negative_prompt]) if cfg != 1.0 else None
    out = []
    for i in range(0, len(prompts), batch_size):
        cond = denoiser.encode_prompts(prompts[i : i + batch_size])
        noise = initial_noise(denoiser, seeds[i : i + batch_size], height, width)
        latents = sample_latents(denoiser, cond, noise, steps=steps, spacing=spacing, cfg=cfg, uncond=uncond)
        out.append(denoiser.decode_latents(latents).clamp(0, 1).float().cpu())
    return torch.cat(out)
