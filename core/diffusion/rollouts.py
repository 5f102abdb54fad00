"""Truncated rollouts: a no-grad DDIM prefix, then one step with gradients to an ``x0`` prediction.

All three UniFL signals share this shape (paper Algorithm 1 and §4.3); they differ only in where the
rollout starts and which positions may take the gradient step:

* PeFL: a real latent noised to level ``T_a`` of the 20-step schedule, grad at a random late level;
* aesthetic: pure noise, grad at a random late level of the same schedule (or of the few-step one);
* adversarial: pure noise at the start of the few-step schedule, as sampling starts (or a real latent
  noised to a later position of it), grad at any of its steps; or, for a LoRA good at several step
  counts, a step count drawn per sample and that count's own schedule (:func:`step_count_rollout`); or
  the paper's reading, a real latent noised to a level of the 20-step trajectory, grad anywhere after it
  (:func:`trajectory_rollout`).

Positions index the schedule noisiest-first (``timesteps[0]`` is the noisiest). The stop position is
drawn once per *sample* (not per step: the per-step redraw is a known bug of TRL's AlignProp port), and
samples with different stop positions are denoised together, each only while it is above its stop.
A schedule is either one for the whole batch (``[steps]``) or one row per sample (``[batch, steps]``:
samples on schedules of different lengths, denoised together since the UNet takes a timestep per
sample); after its last step every schedule lands on the clean image (timestep −1, ᾱ = 1).
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


#: The timestep after a schedule's last step: the clean image (``ᾱ = 1``, :func:`~.schedule.signal_level`).
CLEAN = -1


def per_sample_schedules(timesteps: torch.Tensor, batch: int) -> torch.Tensor:
    """``[batch, steps + 1]``: each sample's schedule (a shared ``[steps]`` one repeated, or ``[batch, steps]``
    as given) followed by :data:`CLEAN`, so that the step after any sample's last one lands on ᾱ = 1."""
    table = timesteps.expand(batch, -1) if timesteps.ndim == 1 else timesteps
    return torch.cat([table, torch.full((batch, 1), CLEAN, dtype=table.dtype)], dim=1)


def step_count_schedules(denoiser: Denoiser, counts: torch.Tensor, spacing: str) -> torch.Tensor:
    """``[batch, max(counts)]``: row ``b`` is the ``counts[b]``-step sampler's timesteps (noisiest first),
    padded with :data:`CLEAN` after its last step."""
    table = torch.full((counts.numel(), int(counts.max())), CLEAN, dtype=torch.int64)
    for n in counts.unique().tolist():
        rows = (counts == n).nonzero().flatten()
        table[rows, :n] = denoiser.timesteps(n, spacing)
    return table


@torch.no_grad()
def denoise_until(denoiser: Denoiser, x: torch.Tensor, cond: Conditioning, timesteps: torch.Tensor, start: int, stops: torch.Tensor, guidance: Callable | None = None, before_step: StepHook | None = None) -> torch.Tensor:
    """DDIM from position ``start`` down to each sample's ``stops[b]`` (exclusive of the step at ``stops[b]``).

    ``timesteps``: one schedule ``[steps]`` or one per sample ``[batch, steps]``. A stop past a sample's
    last step denoises it to the end: its last step lands on the clean image. Runs without gradients:
    the prefix of a truncated rollout never needs them, and skipping the graph is what keeps memory flat
    in the number of steps.
    """
    x = x.clone()
    table = per_sample_schedules(timesteps, x.shape[0])
    for position in range(start, int(stops.max())):
        if before_step is not None:
            before_step()
        active = (stops > position).nonzero().flatten()
        if active.numel() == 0:
            continue
        t, t_next = table[active, position], table[active, position + 1]
        x_active, c_active = x[active], cond[active]
        x0 = guidance(x_active, t, c_active) if guidance else denoiser.predict_x0(x_active, t, c_active)
        x[active] = denoiser.ddim_step(x_active, x0, t, t_next)
    return x


def grad_step_x0(denoiser: Denoiser, x: torch.Tensor, cond: Conditioning, timesteps: torch.Tensor, positions: torch.Tensor, guidance: Callable | None = None) -> torch.Tensor:
    """The one step that carries gradients: the ``x0`` prediction at each sample's position, guided like
    the prefix (a reward must score the prediction the guided trajectory leads to)."""
    predict = guidance or denoiser.predict_x0
    return predict(x, at_positions(timesteps, positions), cond)


def at_positions(timesteps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Each sample's timestep at its position, of a shared ``[steps]`` or a per-sample ``[batch, steps]`` schedule."""
    return timesteps[positions] if timesteps.ndim == 1 else timesteps[torch.arange(positions.numel()), positions]


def shortened_prefixes(timesteps: torch.Tensor, start: int, stops: torch.Tensor, prefix_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's path from position ``start`` to its grad position ``stops[b]``, with its no-grad prefix cut
    to ``prefix_steps`` DDIM steps evenly spaced in timestep between the same two ends (a coarser solve of the
    same trajectory) where it had more; ``0`` keeps every step. Returns ``(schedules [batch, steps], grad positions)``."""
    rows = []
    for stop in stops.tolist():
        path = timesteps[start:stop + 1]
        if 0 < prefix_steps < stop - start:
            path = torch.linspace(float(path[0]), float(path[-1]), prefix_steps + 1, dtype=torch.float64).round().to(torch.int64)
        rows.append(path)
    table = torch.full((len(rows), max(len(row) for row in rows)), CLEAN, dtype=torch.int64)
    for b, row in enumerate(rows):
        table[b, : len(row)] = row
    return table, torch.tensor([len(row) - 1 for row in rows])


def pefl_rollout(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, *, num_steps: int, noise_level: int, grad_levels: tuple[int, int], generator: torch.Generator, prefix_steps: int = 0, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real latents → noised to level ``T_a`` → no-grad DDIM (``prefix_steps`` > 0: at most that many steps) →
    ``x0'`` with grad. Returns ``(x0', timesteps used)``."""
    timesteps = denoiser.timesteps(num_steps, "leading")
    start = int(levels_to_positions(torch.tensor(noise_level), num_steps))
    stops = levels_to_positions(draw_positions(*grad_levels, x0.shape[0], generator), num_steps)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x = denoiser.add_noise(x0, noise, timesteps[start].repeat(x0.shape[0]))
    table, positions = shortened_prefixes(timesteps, start, stops, prefix_steps)
    x = denoise_until(denoiser, x, cond, table, 0, positions, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, table, positions), timesteps[stops]


def aesthetic_rollout(denoiser: Denoiser, cond: Conditioning, latent_shape: tuple[int, ...], *, num_steps: int, grad_levels: tuple[int, int], generator: torch.Generator, spacing: str = "leading", prefix_steps: int = 0, guidance: Callable | None = None, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure noise → no-grad DDIM (``prefix_steps`` > 0: at most that many steps) → ``x0'`` with grad at a late
    level, guided throughout when ``guidance`` is given."""
    timesteps = denoiser.timesteps(num_steps, spacing)
    batch = latent_shape[0]
    stops = levels_to_positions(draw_positions(*grad_levels, batch, generator), num_steps)
    x = torch.randn(latent_shape, generator=generator).to(denoiser.device)
    table, positions = shortened_prefixes(timesteps, 0, stops, prefix_steps)
    x = denoise_until(denoiser, x, cond, table, 0, positions, guidance, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, table, positions, guidance), timesteps[stops]


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


def step_count_rollout(denoiser: Denoiser, cond: Conditioning, latent_shape: tuple[int, ...], *, step_counts: tuple[int, ...], spacing: str, generator: torch.Generator, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Several deployment schedules in one rollout: per sample a step count drawn uniformly from
    ``step_counts``, pure noise → that count's sampler (``spacing``) without grad → ``x0'`` with grad at
    a position drawn uniformly among its steps. Returns ``(x0', timesteps used, step counts)``.

    Drawn per sample, not per batch: samples on different schedules are denoised together (the UNet takes
    a timestep per sample), so one batch trains every count and no step is spent on one count alone.
    """
    batch = latent_shape[0]
    counts = torch.tensor(step_counts, dtype=torch.int64)[torch.randint(len(step_counts), (batch,), generator=generator)]
    stops = (torch.rand(batch, generator=generator, dtype=torch.float64) * counts).long()  # uniform in [0, count - 1]
    timesteps = step_count_schedules(denoiser, counts, spacing)
    x = torch.randn(latent_shape, generator=generator).to(denoiser.device)
    x = denoise_until(denoiser, x, cond, timesteps, 0, stops, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, timesteps, stops), at_positions(timesteps, stops), counts


def trajectory_rollout(denoiser: Denoiser, x0: torch.Tensor, cond: Conditioning, *, num_steps: int, spacing: str, start_level: int, generator: torch.Generator, before_step: StepHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's reading of adversarial feedback (§4.3: "take an image as input and execute the diffusion
    and denoising consecutively", t ∈ [0, 20]): real latents noised to position ``start_level`` of the
    ``num_steps`` schedule (position 0 too: the image's trace at t = 999 is kept), no-grad DDIM, ``x0'``
    with grad at a position drawn uniformly from ``start_level`` to the last step. Returns ``(x0', timesteps used)``."""
    timesteps = denoiser.timesteps(num_steps, spacing)
    stops = draw_positions(start_level, num_steps - 1, x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x = denoiser.add_noise(x0, noise, timesteps[start_level].repeat(x0.shape[0]))
    x = denoise_until(denoiser, x, cond, timesteps, start_level, stops, before_step=before_step)
    return grad_step_x0(denoiser, x, cond, timesteps, stops), timesteps[stops]
