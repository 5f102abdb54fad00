"""The denoiser seam over diffusers components, for SD1.x/2.x- and SDXL-architecture models.

SDXL differs only in conditioning: two text encoders whose penultimate hidden states are concatenated,
the second encoder's pooled projection, and "time ids" ``(original H, W, crop top, left, target H, W)``
that we take from the real latent resolution of every call, so non-square and non-1024 training sizes
condition the UNet correctly (a hard-coded 1024 is a known bug of other ReFL scripts).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import schedule as sched
from .denoiser import Conditioning, Denoiser


def alphas_cumprod_from_config(config: dict) -> torch.Tensor:
    """``ᾱ_t`` of a diffusers scheduler config, computed by diffusers' own ``DDIMScheduler`` (every beta
    schedule it knows, ``rescale_betas_zero_snr`` included), so training sees the ᾱ sampling uses."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(config).alphas_cumprod.clone()


class DiffusersDenoiser(Denoiser):
    """:class:`~unifl.core.diffusion.denoiser.Denoiser` over a diffusers UNet, VAE and CLIP text encoder(s).

    Args:
        unet: ``UNet2DConditionModel``; it receives the LoRA.
        vae: ``AutoencoderKL``. Kept in its own dtype (fp32 by default: the SDXL VAE overflows in fp16).
        text_encoders: one ``CLIPTextModel`` (SD1.x) or ``[CLIPTextModel, CLIPTextModelWithProjection]`` (SDXL).
        tokenizers: the matching ``CLIPTokenizer`` s.
        scheduler_config: the pipeline's scheduler config (beta schedule, prediction type).
        architecture: tag written into LoRA metadata: ``"sd15"``, ``"sd2"``, ``"sdxl"`` or ``"pocket"``.
    """

    module_naming = "diffusers"

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoders: Sequence[nn.Module], tokenizers: Sequence, scheduler_config: dict, architecture: str | None = None):
        self.unet, self.vae = unet, vae
        self.text_encoders, self.tokenizers = list(text_encoders), list(tokenizers)
        self.scheduler_config = dict(scheduler_config)
        self.alphas_cumprod = alphas_cumprod_from_config(self.scheduler_config)
        self.steps_offset = int(self.scheduler_config.get("steps_offset", 0))
        self.is_sdxl = getattr(unet.config, "addition_embed_type", None) == "text_time"
        if self.is_sdxl and len(self.text_encoders) != 2:
            raise ValueError("an SDXL-architecture UNet needs two text encoders (CLIP-L and CLIP-G)")
        self.architecture = architecture or ("sdxl" if self.is_sdxl else "sd15")
        self.latent_channels = int(unet.config.in_channels)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        for module in (unet, vae, *self.text_encoders):
            module.requires_grad_(False)

    @classmethod
    def from_pipeline(cls, pipe, architecture: str | None = None) -> "DiffusersDenoiser":
        """Wrap a loaded ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` (or any with the same parts)."""
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) is not None else [])
        tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if getattr(pipe, "tokenizer_2", None) is not None else [])
        return cls(pipe.unet, pipe.vae, encoders, tokenizers, dict(pipe.scheduler.config), architecture)

    # -- seam ---------------------------------------------------------------------------------------

    @property
    def lora_target(self) -> nn.Module:
        return self.unet

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()
        self.vae.enable_gradient_checkpointing()
        # diffusers < 0.33 (0.31 is what A1111 and Forge get) checkpoints a block only in train mode
        # (`if self.training and self.gradient_checkpointing`), and the trainer puts only the UNet, the
        # LoRA's host, in train mode: the decoder, loaded in eval mode, kept every activation. Newer
        # diffusers checkpoint whenever grad is enabled. The decoder has no dropout or batch norm, so
        # train mode changes nothing else about it.
        self.vae.decoder.train()

    def offload_text_encoders(self) -> None:
        if self.device.type != "cpu":
            for encoder in self.text_encoders:
                encoder.to("cpu", torch.float32)  # half-precision kernels are patchy on CPUs; RAM is cheap

    def predict_model_output(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        cond = cond.to(x_t.device)
        dtype = self.unet.dtype
        kwargs = {}
        if self.is_sdxl:
            height, width = (s * self.vae_scale_factor for s in x_t.shape[-2:])
            time_ids = torch.tensor([height, width, 0, 0, height, width], device=x_t.device, dtype=dtype)
            kwargs["added_cond_kwargs"] = {
                "text_embeds": cond.tensors["pooled_prompt_embeds"].to(dtype),
                "time_ids": time_ids.expand(x_t.shape[0], -1),
            }
        out = self.unet(
            x_t.to(dtype),
            timesteps.to(x_t.device),
            encoder_hidden_states=cond.tensors["prompt_embeds"].to(dtype),
            return_dict=False,
            **kwargs,
        )[0]
        return out.float()

    def predict_x0(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        output = self.predict_model_output(x_t, timesteps, cond)
        alpha_bar = sched.signal_level(self.alphas_cumprod, timesteps)
        return sched.x0_from_model_output(output, x_t.float(), alpha_bar, self.prediction_type)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode((images * 2 - 1).to(self.vae.device, self.vae.dtype)).latent_dist
        return ((posterior.mean - self.shift_factor) * self.scaling_factor).float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents / self.scaling_factor + self.shift_factor
        image = self.vae.decode(z.to(self.vae.device, self.vae.dtype), return_dict=False)[0]
        return (image.float() + 1) / 2

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        prompts = list(prompts)
        if not self.is_sdxl:
            tokenizer, encoder = self.tokenizers[0], self.text_encoders[0]
            ids = self._tokenize(tokenizer, prompts, encoder.device)
            return Conditioning({"prompt_embeds": encoder(ids, return_dict=False)[0].float()})

        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = self._tokenize(tokenizer, prompts, encoder.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            if hasattr(out, "text_embeds"):  # CLIPTextModelWithProjection: SDXL's pooled embedding
                pooled = out.text_embeds
        embeds = torch.cat(hidden, dim=-1).float()
        pooled = pooled.float()
        # SDXL was trained with zeroed conditioning for the empty prompt (force_zeros_for_empty_prompt).
        empty = torch.tensor([p == "" for p in prompts], device=embeds.device)
        embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
        pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return Conditioning({"prompt_embeds": embeds, "pooled_prompt_embeds": pooled})

    @staticmethod
    def _tokenize(tokenizer, prompts: list[str], device) -> torch.Tensor:
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids.to(device)
