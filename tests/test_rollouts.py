"""Truncated rollouts on an analytic denoiser: where gradients flow and which steps run."""

import torch
from torch import nn
from unifl.core.diffusion.denoiser import Conditioning, Denoiser
from unifl.core.diffusion.rollouts import adversarial_rollout, aesthetic_rollout, levels_to_positions, pefl_rollout
from unifl.core.diffusion.schedule import sampling_timesteps


class ScaledDenoiser(Denoiser):
    """x0 = w · x_t with one trainable scalar w; records every call and whether grad was on."""

    def __init__(self):
        self.alphas_cumprod = torch.linspace(0.9999, 0.005, 1000, dtype=torch.float64)
        self.module = nn.Linear(1, 1)
        self.w = nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def predict_x0(self, x_t, timesteps, cond):
        self.calls.append((timesteps.tolist(), torch.is_grad_enabled(), cond.tensors["id"].flatten().tolist()))
        return self.w * x_t

    def predict_model_output(self, x_t, timesteps, cond):
        return self.predict_x0(x_t, timesteps, cond)

    def encode_images(self, images):
        return images

    def decode_latents(self, latents):
        return latents

    def encode_prompts(self, prompts):
        return Conditioning({"id": torch.arange(len(prompts)).float()[:, None]})

    @property
    def lora_target(self):
        return self.module

    @property
    def prediction_type(self):
        return "sample"


def test_only_the_last_step_carries_gradients():
    d = ScaledDenoiser()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=g)
    out, used = pefl_rollout(d, x0, d.encode_prompts(["a", "b", "c"]), num_steps=20, noise_level=10, grad_levels=(0, 5), generator=g)
    grad_calls = [c for c in d.calls if c[1]]
    assert len(grad_calls) == 1 and len(d.calls) > 1
    assert all(not c[1] for c in d.calls[:-1])
    out.sum().backward()
    assert d.w.grad is not None and torch.isfinite(d.w.grad)
    # the grad step happens at levels 0..5 of the 20-step leading schedule: timesteps 1..251
    assert set(used.tolist()) <= {1, 51, 101, 151, 201, 251}


def test_pefl_noises_to_level_ta_and_denoises_each_sample_to_its_own_stop():
    d = ScaledDenoiser()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 1, 2, 2)
    _, used = pefl_rollout(d, x0, d.encode_prompts(["a"] * 4), num_steps=20, noise_level=10, grad_levels=(0, 5), generator=g)
    timesteps = sampling_timesteps(1000, 20, "leading")
    start = int(levels_to_positions(torch.tensor(10), 20))
    assert timesteps[start] == 501  # T_a = 10 of 20: the middle of the trajectory
    prefix = [c for c in d.calls if not c[1]]
    assert prefix[0][0][0] == 501
    # each sample is stepped exactly from T_a down to its own grad position
    steps_per_sample = torch.zeros(4, dtype=torch.long)
    for _, _, ids in prefix:
        for i in ids:
            steps_per_sample[int(i)] += 1
    stops = [int((timesteps == t).nonzero()) for t in used]
    assert steps_per_sample.tolist() == [stop - start for stop in stops]


def test_truncation_point_is_drawn_once_per_sample_and_varies():
    d = ScaledDenoiser()
    seen = set()
    for seed in range(20):
        _, used = aesthetic_rollout(d, d.encode_prompts(["a", "b"]), (2, 1, 2, 2), num_steps=20, grad_levels=(0, 5), generator=torch.Generator().manual_seed(seed))
        seen.update(used.tolist())
    assert len(seen) == 6


def test_adversarial_rollout_covers_every_few_step_position():
    d = ScaledDenoiser()
    seen = set()
    for seed in range(20):
        _, used = adversarial_rollout(d, torch.randn(2, 1, 2, 2), d.encode_prompts(["a", "b"]), num_steps=4, spacing="trailing", start_level=0, grad_levels=(0, 3), generator=torch.Generator().manual_seed(seed))
        seen.update(used.tolist())
    assert seen == {999, 749, 499, 249}


def test_rollouts_are_deterministic_given_the_generator():
    d = ScaledDenoiser()
    a, _ = aesthetic_rollout(d, d.encode_prompts(["a"]), (1, 1, 3, 3), num_steps=8, grad_levels=(0, 3), generator=torch.Generator().manual_seed(7))
    b, _ = aesthetic_rollout(d, d.encode_prompts(["a"]), (1, 1, 3, 3), num_steps=8, grad_levels=(0, 3), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_a_guided_rollout_guides_the_grad_step_too():
    """With CFG the reward must score the x0 the guided trajectory leads to: the grad step is guided."""
    d = ScaledDenoiser()
    guided = []

    def guidance(x, t, cond):
        guided.append(torch.is_grad_enabled())
        return 2.0 * d.predict_x0(x, t, cond)

    cond = d.encode_prompts(["a", "b"])
    aesthetic_rollout(d, cond, (2, 1, 2, 2), num_steps=8, grad_levels=(0, 2), generator=torch.Generator().manual_seed(0), guidance=guidance)
    assert guided and guided[-1] is True and not any(guided[:-1])
    assert len(guided) == len(d.calls), "every step, the grad step included, goes through the guidance"


def test_the_adversarial_rollout_starts_from_pure_noise_like_the_sampler():
    """Position 0 (t = 999) holds no trace of the real latent: two different images give one rollout."""
    d = ScaledDenoiser()
    cond = d.encode_prompts(["a", "b"])
    kwargs = dict(num_steps=4, spacing="trailing", start_level=0, grad_levels=(1, 3))
    first, _ = adversarial_rollout(d, torch.zeros(2, 1, 4, 4), cond, generator=torch.Generator().manual_seed(5), **kwargs)
    second, _ = adversarial_rollout(d, torch.full((2, 1, 4, 4), 3.0), cond, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(first, second)
    later, _ = adversarial_rollout(d, torch.full((2, 1, 4, 4), 3.0), cond, generator=torch.Generator().manual_seed(5), **{**kwargs, "start_level": 1})
    assert not torch.equal(first, later)  # from position 1 on the real latent is part of the start


def test_a_stop_request_ends_a_rollout_before_its_next_model_call():
    class Stop(Exception):
        pass

    d = ScaledDenoiser()

    def before_step():
        if len(d.calls) >= 3:
            raise Stop

    try:
        pefl_rollout(d, torch.randn(1, 1, 2, 2), d.encode_prompts(["a"]), num_steps=20, noise_level=15, grad_levels=(0, 0), generator=torch.Generator().manual_seed(0), before_step=before_step)
    except Stop:
        pass
    assert len(d.calls) == 3


class FixedX0Denoiser(ScaledDenoiser):
    """Predicts the same clean latent whatever it is given: a full DDIM rollout must land on exactly it."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def predict_x0(self, x_t, timesteps, cond):
        super().predict_x0(x_t, timesteps, cond)
        return self.target[cond.tensors["id"].flatten().long()] + 0 * self.w


def test_each_step_count_runs_its_own_trailing_schedule_and_lands_on_the_clean_image():
    """Samples on 1, 2, 4 and 8 steps denoised together: each sees exactly its sampler's timesteps, in
    order, and its last step lands on ᾱ = 1 (the prediction itself, no leftover noise)."""
    from unifl.core.diffusion.rollouts import denoise_until, step_count_schedules

    counts = torch.tensor([1, 2, 4, 8])
    target = torch.randn(4, 1, 2, 2)
    d = FixedX0Denoiser(target)
    table = step_count_schedules(d, counts, "trailing")
    x = denoise_until(d, torch.randn(4, 1, 2, 2), d.encode_prompts(["a"] * 4), table, 0, counts)
    assert torch.allclose(x, target, atol=1e-6)
    seen = {i: [] for i in range(4)}
    for timesteps, _, ids in d.calls:
        for t, i in zip(timesteps, ids):
            seen[int(i)].append(t)
    assert seen == {i: sampling_timesteps(1000, int(n), "trailing").tolist() for i, n in enumerate(counts)}
    assert seen[3] == [999, 874, 749, 624, 499, 374, 249, 124] and seen[0] == [999]


def test_the_step_count_rollout_draws_every_count_and_every_position_of_it():
    from unifl.core.diffusion.rollouts import step_count_rollout

    d = ScaledDenoiser()
    pairs = set()
    for seed in range(40):
        _, used, counts = step_count_rollout(d, d.encode_prompts(["a", "b"]), (2, 1, 2, 2), step_counts=(1, 2, 4, 8), spacing="trailing", generator=torch.Generator().manual_seed(seed))
        for t, n in zip(used.tolist(), counts.tolist()):
            assert t in sampling_timesteps(1000, n, "trailing").tolist()
            pairs.add((n, t))
    assert {n for n, _ in pairs} == {1, 2, 4, 8}
    assert {t for n, t in pairs if n == 8} == set(sampling_timesteps(1000, 8, "trailing").tolist())


def test_the_step_count_rollout_takes_one_grad_step_per_sample_after_its_own_prefix():
    from unifl.core.diffusion.rollouts import step_count_rollout

    d = ScaledDenoiser()
    out, used, counts = step_count_rollout(d, d.encode_prompts(["a", "b", "c", "d"]), (4, 1, 2, 2), step_counts=(2, 8), spacing="trailing", generator=torch.Generator().manual_seed(1))
    assert [c[1] for c in d.calls].count(True) == 1 and d.calls[-1][1]
    assert d.calls[-1][0] == used.tolist()
    prefix_steps = torch.zeros(4, dtype=torch.long)
    for _, grad, ids in d.calls[:-1]:
        for i in ids:
            prefix_steps[int(i)] += 1
    positions = [sampling_timesteps(1000, int(n), "trailing").tolist().index(t) for n, t in zip(counts, used.tolist())]
    assert prefix_steps.tolist() == positions  # each sample is denoised exactly down to its grad position
    out.sum().backward()
    assert torch.isfinite(d.w.grad)


def test_the_trajectory_rollout_starts_from_the_noised_real_latent_and_may_take_its_grad_step_anywhere():
    """The paper's reading: even at t = 999 the real image is part of the start, and every position of
    the 20-step trajectory from the start on can take the grad step."""
    from unifl.core.diffusion.rollouts import trajectory_rollout

    d = ScaledDenoiser()
    cond = d.encode_prompts(["a", "b"])
    kwargs = dict(num_steps=20, spacing="trailing", start_level=0)
    first, _ = trajectory_rollout(d, torch.zeros(2, 1, 4, 4), cond, generator=torch.Generator().manual_seed(5), **kwargs)
    second, _ = trajectory_rollout(d, torch.full((2, 1, 4, 4), 3.0), cond, generator=torch.Generator().manual_seed(5), **kwargs)
    assert not torch.equal(first, second)
    seen = set()
    for seed in range(60):
        _, used = trajectory_rollout(d, torch.randn(2, 1, 2, 2), cond, generator=torch.Generator().manual_seed(seed), **{**kwargs, "start_level": 15})
        seen.update(used.tolist())
    assert seen == set(sampling_timesteps(1000, 20, "trailing")[15:].tolist())


def test_a_shortened_prefix_reaches_the_same_grad_step_in_fewer_evenly_spaced_steps():
    """prefix_steps = 3: each sample takes 3 no-grad steps from the schedule's first timestep to its own grad
    timestep (evenly spaced, no step past it), then the same grad step it would take on the full schedule."""
    d_full, d_short = ScaledDenoiser(), ScaledDenoiser()
    kwargs = dict(num_steps=20, grad_levels=(0, 5))
    _, full = aesthetic_rollout(d_full, d_full.encode_prompts(["a", "b", "c"]), (3, 1, 2, 2), generator=torch.Generator().manual_seed(4), **kwargs)
    _, short = aesthetic_rollout(d_short, d_short.encode_prompts(["a", "b", "c"]), (3, 1, 2, 2), generator=torch.Generator().manual_seed(4), prefix_steps=3, **kwargs)
    assert torch.equal(full, short)
    assert len([c for c in d_full.calls if not c[1]]) >= 14 and len([c for c in d_short.calls if not c[1]]) == 3
    assert d_short.calls[-1][0] == short.tolist() and d_short.calls[-1][1]
    for position, (timesteps, _, _) in enumerate(d_short.calls[:-1]):
        expected = [round(951 + (t - 951) * position / 3) for t in short.tolist()]
        assert timesteps == expected


def test_a_pefl_prefix_shorter_than_asked_keeps_every_step():
    d = ScaledDenoiser()
    _, used = pefl_rollout(d, torch.randn(2, 1, 2, 2), d.encode_prompts(["a", "b"]), num_steps=20, noise_level=10, grad_levels=(8, 9), generator=torch.Generator().manual_seed(0), prefix_steps=4)
    prefix = [c for c in d.calls if not c[1]]
    assert len(prefix) <= 2 and prefix[0][0][0] == 501  # one or two steps from T_a: fewer than 4, all kept
