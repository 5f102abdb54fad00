"""The denoiser seam: the one interface UniFL's losses, rollouts and trainer are written against.

A host (diffusers here, ComfyUI's ``ModelPatcher`` and A1111's LDM in the adapters) implements five
small things: predict ``x0`` from a noisy latent, encode/decode through the VAE with gradients, encode
prompts, and name the module that receives the LoRA. Everything else (noising to a schedule index,
DDIM steps, schedules, the base model through disabled adapters) is written once here in terms of
``alphas_cumprod``, so it is identical on every host.

Latents are the *model's* latent space: VAE latents already multiplied by the VAE scaling factor (what
diffusers' UNet and ComfyUI's ``process_latent_in`` both consume), in the variance-preserving
convention of :mod:`unifl.core.diffusion.schedule`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from . import schedule as sched


@dataclass
class Conditioning:
    """A batch of text conditioning: host-specific tensors by name, all batch-first.

    The diffusers denoiser stores ``prompt_embeds`` (and, for SDXL, ``pooled_prompt_embeds``). Core
    code never looks inside; it only selects, repeats, concatenates and moves batches, so each host
    may keep whatever its model consumes.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index) -> "Conditioning":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Conditioning({k: v[index] for k, v in self.tensors.items()})

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Conditioning":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)

        return Conditioning({k: move(v) for k, v in self.tensors.items()})

    def repeat(self, n: int) -> "Conditioning":
        """Each sample repeated ``n`` times in place (``[a, a, b, b]`` for n=2)."""
        return Conditioning({k: v.repeat_interleave(n, dim=0) for k, v in self.tensors.items()})

    @staticmethod
    def cat(items: Sequence["Conditioning"]) -> "Conditioning":
        keys = items[0].tensors.keys()
        return Conditioning({k: torch.cat([c.tensors[k] for c in items]) for k in keys})


class Denoiser(ABC):
    """A latent diffusion model seen through the operations UniFL needs.

    Subclasses set :attr:`alphas_cumprod`, :attr:`latent_channels` and :attr:`vae_scale_factor` and
    implement the abstract methods. Gradients flow wherever autograd is enabled; nothing here calls
    ``torch.no_grad`` on the caller's behalf.
    """

    #: ``ᾱ_t`` for every training timestep, float64 on the CPU, shape ``[num_train_timesteps]``.
    alphas_cumprod: torch.Tensor
    #: Channels of the model latent (4 for SD1.5/SDXL).
    latent_channels: int = 4
    #: Pixel size of one latent cell (8 for SD1.5/SDXL).
    vae_scale_factor: int = 8
    #: How the host names the LoRA-target module's submodules: ``"diffusers"`` or ``"ldm"``
    #: (ComfyUI/A1111). The kohya exporter maps either to ``lora_unet_…`` keys.
    module_naming: str = "diffusers"
    #: For ``module_naming = "ldm"``: maps a host module path to its diffusers path (kohya key names).
    lora_name_map = None
    #: A short architecture tag written into LoRA metadata (``"sd15"``, ``"sdxl"``, ``"pocket"``).
    architecture: str = "sd15"
    #: Which host's model objects this wraps (LoRA metadata ``unifl.host``).
    host: str = "diffusers"
    #: The base model's file or folder, when known (LoRA metadata ``ss_sd_model_name``).
    source: str = ""
    #: The scheduler's offset of "leading" timesteps (``steps_offset`` in a diffusers scheduler config).
    steps_offset: int = 1

    # -- what a host implements -------------------------------------------------------------------

    @abstractmethod
    def predict_x0(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The model's ``x0`` prediction at integer training ``timesteps`` (one per sample)."""

    @abstractmethod
    def predict_model_output(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The raw model output in its own parametrisation (for the denoising regulariser)."""

    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` (BCHW) → model latents (scaled). Deterministic (the posterior mean)."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Model latents → images around ``[0, 1]`` (BCHW), differentiable and *not* clamped."""

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Text conditioning for a list of prompts (the empty string is the unconditional prompt)."""

    @property
    @abstractmethod
    def lora_target(self) -> nn.Module:
        """The module that receives the LoRA (the UNet)."""

    @property
    @abstractmethod
    def prediction_type(self) -> str:
        """``"epsilon"``, ``"v_prediction"`` or ``"sample"``."""

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass of the UNet and the VAE decoder. Optional."""

    def offload_text_encoders(self) -> None:
        """Move the text encoders off the accelerator (they never train; prompts are encoded once each and
        cached). Optional: a host that pre-encodes its prompts has nothing to move."""

    @property
    def device(self) -> torch.device:
        return next(self.lora_target.parameters()).device

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    # -- written once, from alphas_cumprod ------------------------------------------------------------

    def timesteps(self, num_steps: int, spacing: str = "leading") -> torch.Tensor:
        """The training timesteps of a ``num_steps`` sampler, noisiest first."""
        return sched.sampling_timesteps(self.num_train_timesteps, num_steps, spacing, self.steps_offset)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Noise clean latents to ``timesteps`` (one per sample)."""
        return sched.add_noise(x0, noise, sched.signal_level(self.alphas_cumprod, timesteps))

    def ddim_step(self, x_t: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor, next_timesteps: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step; ``next_timesteps = -1`` lands on ``x0``."""
        return sched.ddim_step(
            x_t,
            x0,
            sched.signal_level(self.alphas_cumprod, timesteps),
            sched.signal_level(self.alphas_cumprod, next_timesteps),
        )

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The base model: every peft LoRA layer in :attr:`lora_target` switched off, then restored.

        This is how the KL-style regulariser and the "base" rows of evaluations get the original model
        without keeping a second UNet in memory.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.lora_target.modules() if isinstance(m, BaseTunerLayer)]
        previous = [m.disable_adapters for m in layers]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer, was_disabled in zip(layers, previous):
                layer.enable_adapters(not was_disabled)
