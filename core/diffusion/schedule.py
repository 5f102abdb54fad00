"""Discrete diffusion schedule math, written once for every host.

Stable Diffusion 1.x/2.x and SDXL are discrete variance-preserving models trained on ``T = 1000``
timesteps with a cumulative signal level ``ᾱ_t``. Everything UniFL needs (noising a real latent to a
step of a short sampling schedule, a deterministic DDIM step, few-step schedules with trailing spacing)
is a function of ``ᾱ``, so it lives here and not in the host adapters: an adapter only has to tell
``ᾱ`` and predict ``x0``.

Conventions: ``x_t = sqrt(ᾱ_t) · x0 + sqrt(1 − ᾱ_t) · ε`` (diffusers' convention). A host that works in
sigma space (ComfyUI: ``x = x0 + σ ε`` with ``σ = sqrt((1 − ᾱ)/ᾱ)``) converts at its own edge.
"""

from __future__ import annotations

import torch

SPACINGS = ("leading", "trailing", "linspace")


def sampling_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "leading", steps_offset: int = 1) -> torch.Tensor:
    """Training-timestep indices of an ``num_steps``-step sampler, noisiest first (int64, shape [num_steps]).

    The three spacings are diffusers' (``DDIMScheduler.set_timesteps``) so a LoRA trained here samples
    the same way in diffusers, ComfyUI (``ddim_uniform``/``sgm_uniform``) and A1111:

    * ``leading``  (SD1.5's default): ``0, k, 2k, …`` shifted by the scheduler's ``steps_offset`` (1 in
      SD1.5's and SDXL's configs), never reaching ``T − 1``. 20-step DDIM in the paper uses this.
    * ``trailing``: counts back from ``T − 1`` (``999, 749, 499, 249`` for 4 steps). Few-step models need
      it: the first step starts from (almost) pure noise, as sampling will.
    * ``linspace``: evenly from ``0`` to ``T − 1`` inclusive.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if spacing == "leading":
        ratio = num_train_timesteps // num_steps
        steps = torch.arange(num_steps, dtype=torch.int64) * ratio + steps_offset
    elif spacing == "trailing":
        ratio = num_train_timesteps / num_steps
        steps = torch.round(torch.arange(num_train_timesteps, 0, -ratio, dtype=torch.float64)).to(torch.int64) - 1
        return steps.clamp_(0, num_train_timesteps - 1)
    elif spacing == "linspace":
        steps = torch.linspace(0, num_train_timesteps - 1, num_steps, dtype=torch.float64).round().to(torch.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    return steps.clamp_(0, num_train_timesteps - 1).flip(0)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=torch.float32).reshape(-1, *([1] * (like.ndim - 1)))


def signal_level(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """``ᾱ`` at each timestep; a timestep of ``-1`` means "clean" (``ᾱ = 1``), the end of sampling."""
    timesteps = timesteps.to(torch.int64).cpu()
    levels = alphas_cumprod.double()[timesteps.clamp(min=0)]
    return torch.where(timesteps < 0, torch.ones_like(levels), levels)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Forward process ``q(x_t | x0)``: ``sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε``; ``alpha_bar`` has one value per sample."""
    a = _expand(alpha_bar, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def epsilon_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The noise implied by an ``x0`` prediction at ``x_t`` (exact inverse of :func:`add_noise`)."""
    a = _expand(alpha_bar, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).clamp_min(1e-12).sqrt()


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor, alpha_bar_next: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from ``x_t`` to the next, less noisy, level.

    Written in terms of the ``x0`` prediction so that it is the same step for epsilon-, v- and
    x0-predicting models, and the same as Euler in sigma space (what ComfyUI's ``ddim`` sampler does).
    With ``alpha_bar_next = 1`` it returns ``x0``.
    """
    eps = epsilon_from_x0(x_t, x0, alpha_bar)
    a_next = _expand(alpha_bar_next, x_t)
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def x0_from_model_output(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Convert a UNet's raw output to an ``x0`` prediction (``epsilon``, ``v_prediction`` or ``sample``)."""
    a = _expand(alpha_bar, x_t)
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def model_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The regression target of the pre-training (denoising) loss for a model of ``prediction_type``."""
    a = _expand(alpha_bar, x0)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")
