"""TRL's AlignProp step (``trl==0.23.1``, the last release with ``AlignPropTrainer``) on the benchmark's model.

Imported by ``bench/real_size.py`` in a Python that has trl 0.23.1 (its own venv; trl is no dependency
of UniFL). The glue follows the team's peer notes (shared/notes/peers.md): a ``DefaultDDPOStableDiffusionPipeline``
subclass that takes our pipeline instead of downloading one and adds the same LoRA as UniFL (rank 16
on the attention projections, fp32), ``accelerate.PartialState()`` first, no checkpoint saving.
AlignProp's own settings are kept (CFG 5, its per-step UNet checkpointing, the VAE decode and the
rewards with gradients, bf16 mixed precision) except the schedule: 20 DDIM steps with the last 10
carrying gradients (its defaults draw that cut at random; fixed here so runs compare).
"""

from __future__ import annotations

import os


def build_alignprop(run, args, scratch: str, random_denoiser, prompts, rewards):
    """``(step, keep)``: one AlignProp optimizer step as a callable, and what it keeps on the device."""
    import torch
    from accelerate import PartialState
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from trl import AlignPropConfig, AlignPropTrainer
    from trl.models.modeling_sd_base import DefaultDDPOStableDiffusionPipeline
    from unifl.core.feedback.loading import load_reward_model
    from unifl.core.lora.peft import LoRASettings, add_lora

    PartialState()
    denoiser = random_denoiser(run.architecture, torch.bfloat16, torch.bfloat16, args.device, args.quick)
    denoiser.unet.register_to_config(sample_size=run.resolution // denoiser.vae_scale_factor)  # AlignProp samples at the UNet's sample_size
    pipe = StableDiffusionPipeline(
        vae=denoiser.vae, text_encoder=denoiser.text_encoders[0], tokenizer=denoiser.tokenizers[0], unet=denoiser.unet,
        scheduler=DDIMScheduler.from_config(denoiser.scheduler_config), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )

    class OurPipeline(DefaultDDPOStableDiffusionPipeline):
        def __init__(self, sd_pipeline):  # noqa: D107  (no download: the pipeline is ours)
            self.sd_pipeline, self.use_lora = sd_pipeline, True
            self.pretrained_model, self.pretrained_revision = "random-sd15", "main"
            for module in (sd_pipeline.vae, sd_pipeline.text_encoder, sd_pipeline.unet):
                module.requires_grad_(False)

        def get_trainable_layers(self):
            add_lora(self.sd_pipeline.unet, LoRASettings(rank=16, alpha=16.0, targets="attention"))
            return self.sd_pipeline.unet

    models = [(load_reward_model(kind, "bf16").to(args.device), weight) for _, kind, weight, _ in rewards]

    def reward_fn(images, prompt_batch, metadata):
        # The same bf16 reward models as UniFL's run, under autocast as UniFL's trainer runs them (AlignProp
        # trains its LoRA without autocast).
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):
            total = sum(weight * model(images.float().clamp(0, 1), list(prompt_batch)) for model, weight in models)
        return total.float(), {}

    config = AlignPropConfig(
        num_epochs=1, save_freq=10**6, sample_num_steps=20, truncated_backprop_rand=False, truncated_backprop_timestep=10,
        train_batch_size=1, mixed_precision="bf16", log_with=None, seed=0,
        project_kwargs={"project_dir": os.path.join(scratch, "alignprop"), "automatic_checkpoint_naming": True},
    )
    trainer = AlignPropTrainer(config, reward_fn, lambda: (prompts[0], {}), OurPipeline(pipe))
    counter = iter(range(10**6))
    keep = [pipe.unet, pipe.vae, pipe.text_encoder, *(m for m, _ in models), trainer.optimizer]
    return (lambda: trainer.step(0, next(counter))), keep
