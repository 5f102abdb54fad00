"""Truncated rollouts: a no-grad DDIM prefix, then one step with gradients to an ``x0`` prediction.

All three UniFL signals share this shape (paper Algorithm 1 and §4.3); they differ only in where the
rollout starts and which positions may take the gradient step:

* PeFL: a real latent noised to level ``T_a`` of the 20-step schedule, grad at a random late level;
* aesthetic: pure noise, grad at a random late level of the same schedule (or of the few-step one);
* adversarial: pure noise at the start of the few-step schedule, as sampling starts (or a real latent
  noised to a later position of it), grad at any of its steps.

Positions index the schedule noisiest-first (``timesteps[0]`` is the noisiest). The stop position is
drawn once per *sample* (not per step: the per-step redraw is a known bug of TRL's AlignProp port), and
samples with different stop positions are denoised together, each only while it is above its stop.
"""

from __future__ import annotations

from typing import Callable

import torch

from .denoiser import Conditioning, Denoiser


def draw_positions(lo: int, hi: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """One integer in ``[lo, hi]`` per sample."""
    return torch.randint(lo, hi + 1, (batch,), generator=generator)


def levels_to_positions(levels: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Levels counted from the clean end (0 = the last sampler step) → noisiest-first positions."""
    return num_steps - 1 - levels


#: Called before each step of a rollout's prefix; a host's stop request raises from it, so a cancel
#: never waits for a whole rollout.
StepHook = Callable[[], None]


@torch.no_grad()
def denoise_until(denoiser: Denoiser, x: torch.Tensor, cond: Conditioning, timesteps: torch.Tensor, start: int, stops: torch.Tensor, guidance: Callable | None = None, before_step: StepHook | None = None) -> torch.Tensor:
    """DDIM from position ``start`` down to each sample's ``stops[b]`` (exclusive of the step at ``stops[b]``).

    Runs without gradients: the prefix of a truncated rollout never needs them, and skipping the graph
    is what keeps memory flat in the number of steps.
    """
    x = x.clone()
    for position in range(start, int(stops.max())):
        if before_step is not None:
            before_step()
        active = (stops > position).nonzero().flatten()
        if active.numel() == 0:
            continue
        t = timesteps[position].repeat(active.numel())
        t_next = timesteps[position + 1].repeat(active.numel())
        x_active, c_active = x[active], cond[active]
        x0 = guidance(x_active, t, c_active) if guidance else denoiser.predict_x0(x_active, t, c_active)
        x[active] = denoiser.ddim_step(x_active, x0, t, t_next)
    return x


def grad_step_x0(denoiser: Denoiser, x: torch.Tensor, cond: Conditioning, timesteps: torch.Tensor, positions: torch.Tensor, guidance: Callable | None = None) -> torch.Tensor:
    """The one step that carries gradients: the ``x0`` prediction at each sample's position, guided like
    the prefix (a reward must score the prediction the guided trajectory leads to)."""
    predict = guidance or denoiser.predict_x0
    return predict(x, timesteps[positions], cond)


def pefl_rollout(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, *, num_steps: int, noise_level: int, grad_levels: tuple[int, int], generator: torch.Generator, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real latents → noised to level ``T_a`` → no-grad DDIM → ``x0'`` with grad. Returns ``(x0', timesteps used)``."""
    timesteps = denoiser.timesteps(num_steps, "leading")
    start = int(levels_to_positions(torch.tensor(noise_level), num_steps))
    stops = levels_to_positions(draw_positions(*grad_levels, x0.shape[0], generator), num_steps)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x = denoiser.add_noise(x0, noise, timesteps[start].repeat(x0.shape[0]))
    x = denoise_until(denoiser, x, cond, timesteps, start, stops, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, timesteps, stops), timesteps[stops]


def aesthetic_rollout(denoiser: Denoiser, cond: Conditioning, latent_shape: tuple[int, ...], *, num_steps: int, grad_levels: tuple[int, int], generator: torch.Generator, spacing: str = "leading", guidance: Callable | None = None, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure noise → no-grad DDIM → ``x0'`` with grad at a late level, guided throughout when ``guidance`` is given."""
    timesteps = denoiser.timesteps(num_steps, spacing)
    batch = latent_shape[0]
    stops = levels_to_positions(draw_positions(*grad_levels, batch, generator), num_steps)
    x = torch.randn(latent_shape, generator=generator).to(denoiser.device)
    x = denoise_until(denoiser, x, cond, timesteps, 0, stops, guidance, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, timesteps, stops, guidance), timesteps[stops]


def adversarial_rollout(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, *, num_steps: int, spacing: str, start_level: int, grad_levels: tuple[int, int], generator: torch.Generator, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure noise (or real latents noised to ``start_level``) → no-grad prefix → ``x0'`` with grad at any step.

    Here positions count from the noisiest step, because every step of the few-step schedule is a
    step the deployed sampler will take, the first included. Position 0 starts from pure noise, as
    sampling does: a real latent noised to t = 999 still holds √ᾱ ≈ 0.07 of the image (SD's schedule),
    a head start the sampler never has.
    """
    timesteps = denoiser.timesteps(num_steps, spacing)
    stops = draw_positions(*grad_levels, x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x = noise if start_level == 0 else denoiser.add_noise(x0, noise, timesteps[start_level].repeat(x0.shape[0]))
    x = denoise_until(denoiser, x, cond, timesteps, start_level, stops, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, timesteps, stops), timesteps[stops]
