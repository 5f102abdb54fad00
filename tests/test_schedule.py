import pytest
import torch
from diffusers import DDIMScheduler
from unifl.core.diffusion import schedule as sched
from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser, alphas_cumprod_from_config
from unifl.core.diffusion.tiny import SD15_SCHEDULER, build_tiny_pipeline


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 4, 20, 50])
def test_sampling_timesteps_match_diffusers(spacing, steps):
    reference = DDIMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")}, )
    reference.register_to_config(timestep_spacing=spacing)
    reference.set_timesteps(steps)
    assert torch.equal(sched.sampling_timesteps(1000, steps, spacing), reference.timesteps)


def test_alphas_cumprod_match_diffusers():
    reference = DDIMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")})
    assert torch.allclose(alphas_cumprod_from_config(SD15_SCHEDULER).float(), reference.alphas_cumprod, atol=1e-7)


def test_noise_and_x0_conversions_are_inverse():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    a = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
    x_t = sched.add_noise(x0, noise, a)
    assert torch.allclose(sched.epsilon_from_x0(x_t, x0, a), noise, atol=1e-4)
    for kind in ("epsilon", "v_prediction", "sample"):
        target = sched.model_target(x0, noise, a, kind)
        assert torch.allclose(sched.x0_from_model_output(target, x_t, a, kind), x0, atol=1e-3), kind
    assert torch.allclose(sched.ddim_step(x_t, x0, a, torch.ones(3, dtype=torch.float64)), x0, atol=1e-6)


def test_ddim_step_keeps_the_noise_direction():
    x0, noise = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    a, a_next = torch.tensor([0.25]), torch.tensor([0.64])
    x_next = sched.ddim_step(sched.add_noise(x0, noise, a), x0, a, a_next)
    assert torch.allclose(x_next, torch.full_like(x_next, 0.6))  # sqrt(1 - 0.64) · ε


def test_signal_level_of_minus_one_is_clean():
    levels = sched.signal_level(torch.tensor([0.5, 0.25], dtype=torch.float64), torch.tensor([1, -1]))
    assert levels.tolist() == [0.25, 1.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="spacing"):
        sched.sampling_timesteps(1000, 4, "karras")
    with pytest.raises(ValueError, match="num_steps"):
        sched.sampling_timesteps(1000, 0)


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
@pytest.mark.parametrize("spacing,steps", [("trailing", 4), ("leading", 20)])
def test_seam_ddim_equals_diffusers_pipeline(architecture, spacing, steps):
    """The seam's DDIM over the diffusers denoiser reproduces diffusers' own pipeline (ᾱ_final = 1)."""
    pipe = build_tiny_pipeline(architecture, seed=1)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing, set_alpha_to_one=True)
    denoiser = DiffusersDenoiser.from_pipeline(pipe)
    size = 32
    latents = torch.randn(1, 4, size // denoiser.vae_scale_factor, size // denoiser.vae_scale_factor, generator=torch.Generator().manual_seed(0))
    reference = pipe(["a red cat"], num_inference_steps=steps, guidance_scale=1.0, latents=latents.clone(), output_type="latent", height=size, width=size).images
    from unifl.core.diffusion.sampling import sample_latents

    ours = sample_latents(denoiser, denoiser.encode_prompts(["a red cat"]), latents.clone(), steps=steps, spacing=spacing)
    assert torch.allclose(ours, reference, atol=1e-3 * reference.abs().max().item())


def test_sdxl_conditioning_has_pooled_embeds_and_zeroes_the_empty_prompt():
    denoiser = DiffusersDenoiser.from_pipeline(build_tiny_pipeline("sdxl"))
    cond = denoiser.encode_prompts(["a cat", ""])
    assert set(cond.tensors) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert cond.tensors["prompt_embeds"][1].abs().sum() == 0 and cond.tensors["pooled_prompt_embeds"][1].abs().sum() == 0
    assert cond.tensors["prompt_embeds"][0].abs().sum() > 0


@pytest.mark.parametrize("extra", [{"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}, {"beta_schedule": "squaredcos_cap_v2"}, {"steps_offset": 0}])
def test_a_denoiser_trains_on_the_schedule_its_scheduler_samples_with(extra):
    """ᾱ and the leading offset come from diffusers' scheduler itself: a zero-terminal-SNR model trains on
    ᾱ_999 = 0, a cosine one on its cosine, and a config without the SD offset on unshifted timesteps."""
    config = {k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")} | extra
    pipe = build_tiny_pipeline("sd15", seed=0)
    denoiser = DiffusersDenoiser(pipe.unet, pipe.vae, [pipe.text_encoder], [pipe.tokenizer], config)
    reference = DDIMScheduler.from_config(config)
    torch.testing.assert_close(denoiser.alphas_cumprod.float(), reference.alphas_cumprod)
    reference.register_to_config(timestep_spacing="leading")
    reference.set_timesteps(20)
    assert torch.equal(denoiser.timesteps(20, "leading"), reference.timesteps)
    if extra.get("rescale_betas_zero_snr"):
        assert denoiser.alphas_cumprod[-1] < 1e-6
