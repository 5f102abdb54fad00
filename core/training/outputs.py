"""What a training run gives back besides its weights: the sampler contract of its LoRA, the file's
training metadata, validation images made the way the LoRA will be used, and the run description
logged at start."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import torch

from ..config import TrainConfig
from ..diffusion.denoiser import Denoiser
from ..diffusion.sampling import generate
from ..lora.kohya import SamplerContract

#: Where the trainer writes the run description: the host's log (ComfyUI's console); the CLI shows it on stdout.
#: A record goes out at once, where a print() to a host's redirected, buffered stdout came out after the run's
#: end, or never for a cancelled run.
RUN_LOG = logging.getLogger("unifl.run")


def sampler_contract(config: TrainConfig) -> SamplerContract:
    """How a LoRA of this stage is meant to be sampled: stage 2 is the few-step model, without CFG, at
    ``adversarial.inference_steps`` by default and at every count it trained (``adversarial.step_counts``
    with ``schedule = "step-counts"``; the 'few-step' and 'trajectory' schedules train for the one count).
    Stage 1 trains for no particular count: its contract's default is the PeFL rollout's, and any count works."""
    if config.stage == "2":
        adv = config.adversarial
        counts = tuple(adv.step_counts) if adv.schedule == "step-counts" else (adv.inference_steps,)
        return SamplerContract(steps=adv.inference_steps, scheduler="ddim", timestep_spacing=adv.timestep_spacing, cfg=1.0, step_counts=counts)
    return SamplerContract(steps=config.pefl.inference_steps, scheduler="ddim", timestep_spacing="leading", cfg=config.logging.validation_cfg)


def training_metadata(config: TrainConfig, denoiser: Denoiser, steps_trained: int, started_at: float) -> dict[str, str]:
    """What the A1111 Lora card and kohya tools show about how the file was trained."""
    return {
        "unifl.stage": config.stage,
        "unifl.steps_trained": str(steps_trained),
        "unifl.host": denoiser.host,
        "ss_sd_model_name": Path(denoiser.source).name if denoiser.source else "",
        "ss_resolution": f"({config.data.resolution}, {config.data.resolution})",
        "ss_learning_rate": repr(config.optim.learning_rate),
        "ss_max_train_steps": str(config.optim.max_steps),
        "ss_training_started_at": repr(started_at),
        "ss_training_finished_at": repr(time.time()),
    }


def validation_images(denoiser: Denoiser, config: TrainConfig, prompts: Sequence[str]) -> torch.Tensor:
    """Images of ``prompts`` (seeds 0, 1, …) with the deployment sampler of this stage's LoRA."""
    contract = sampler_contract(config)
    res = config.data.resolution
    return generate(denoiser, prompts, list(range(len(prompts))), height=res, width=res, steps=contract.steps, spacing=contract.timestep_spacing, cfg=contract.cfg)


def describe_run(config: TrainConfig, *, architecture: str, device: torch.device, processes: int, terms: Sequence[str], real_images: int, prompts: int, lora_parameters: int) -> str:
    """The derived batch and step math, logged at start (ddpo-pytorch does this; people need it)."""
    o = config.optim
    per_step = o.batch_size * o.gradient_accumulation_steps * processes
    return "\n".join([
        f"UniFL stage {config.stage} on {architecture} ({processes} process(es), {device}, mixed precision {o.mixed_precision})",
        f"  feedback terms: {', '.join(terms) or 'none'}",
        f"  samples per optimizer step and term: {o.batch_size} per device × {o.gradient_accumulation_steps} accumulation × {processes} processes = {per_step}",
        f"  {o.max_steps} steps → {o.max_steps * per_step} samples per term; {real_images} real images, {prompts} prompts",
        f"  LoRA rank {config.lora.rank}, alpha {config.lora.alpha} ({config.lora.targets}): {lora_parameters:,} trainable parameters",
    ])
