"""Tiny real models dressed as ComfyUI's ``MODEL`` / ``CLIP`` / ``VAE`` objects (CI stand-in).

The weights are those of ``unifl.core.diffusion.tiny.build_tiny_pipeline`` (real diffusers and
transformers classes at toy sizes); the wrappers expose the attributes ComfyUI's objects have and the
UniFL adapter uses: ``ModelPatcher.model`` (a ``BaseModel`` with ``diffusion_model``,
``model_sampling``, ``latent_format``, ``model_config``), ``CLIP.tokenize``/``encode_from_tokens``,
``VAE.first_stage_model``/``patcher``/``vae_dtype``. Build them under ``torch.inference_mode()`` to get
inference-tensor weights, as ComfyUI's loader nodes do.
"""

from __future__ import annotations

import torch
from comfy.model_patcher import ModelPatcher
from comfy.model_sampling import ModelSamplingDiscreteEPS
from torch import nn

CPU = torch.device("cpu")


class SD15:
    """Model config; the class name is what identifies the architecture (as ``comfy.supported_models.SD15``)."""

    def __init__(self, unet_config: dict):
        self.unet_config = unet_config


class LatentFormat:
    latent_channels = 4

    def __init__(self, scale_factor: float):
        self.scale_factor = scale_factor

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


class LDMUNet(nn.Module):
    """A diffusers UNet behind the LDM call signature ``(x, timesteps, context, y, control, transformer_options)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        return self.unet(x, timesteps, encoder_hidden_states=context, return_dict=False)[0]


class BaseModel(nn.Module):
    manual_cast_dtype = None

    def __init__(self, unet: nn.Module, scale_factor: float):
        super().__init__()
        self.diffusion_model = LDMUNet(unet)
        self.model_sampling = ModelSamplingDiscreteEPS()
        self.latent_format = LatentFormat(scale_factor)
        keys = [k for k in unet.state_dict()]
        # The width keys of ComfyUI's detected unet_config (model_detection.detect_unet_config), in LDM terms.
        widths = list(unet.config.block_out_channels)
        self.model_config = SD15({"in_channels": 4, "_diffusers_keys": keys, "model_channels": widths[0],
                                  "channel_mult": [w // widths[0] for w in widths], "context_dim": unet.config.cross_attention_dim})

    def get_dtype(self) -> torch.dtype:
        return self.diffusion_model.dtype

    def encode_adm(self, **kwargs):
        return None

    def process_timestep(self, timestep, **kwargs):
        return timestep

    def apply_model(self, x, t, c_crossattn=None, **kwargs):
        ms = self.model_sampling
        out = self.diffusion_model(ms.calculate_input(t, x), ms.timestep(t).float(), context=c_crossattn)
        return ms.calculate_denoised(t, out.float(), x)


class KLAutoencoder(nn.Module):
    """``first_stage_model``: encode → posterior mode, decode → image in [-1, 1] (unclamped)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    @property
    def decoder(self):
        return self.vae.decoder

    def encode(self, x):
        return self.vae.encode(x).latent_dist.mode()

    def decode(self, z):
        return self.vae.decode(z, return_dict=False)[0]


class VAE:
    def __init__(self, vae: nn.Module):
        self.first_stage_model = KLAutoencoder(vae)
        self.patcher = ModelPatcher(self.first_stage_model, CPU, CPU)
        self.vae_dtype = next(vae.parameters()).dtype
        self.latent_channels = 4
        self.downscale_ratio = 2 ** (len(vae.config.block_out_channels) - 1)

    def decode(self, samples):
        image = self.first_stage_model.decode(samples)
        return torch.clamp((image + 1) / 2, 0, 1).movedim(1, -1)


class CLIP:
    def __init__(self, tokenizer, text_encoder: nn.Module):
        self.tokenizer, self.cond_stage_model = tokenizer, text_encoder
        self.patcher = ModelPatcher(text_encoder, CPU, CPU)

    def tokenize(self, text: str):
        return self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        out = self.cond_stage_model(tokens, return_dict=False)
        cond, pooled = out[0], out[1]
        return (cond, pooled) if return_pooled else cond


def comfy_objects(pipe) -> tuple[ModelPatcher, CLIP, VAE]:
    """``(MODEL, CLIP, VAE)`` over a tiny SD1.5-architecture diffusers pipeline."""
    base = BaseModel(pipe.unet, float(pipe.vae.config.scaling_factor))
    return ModelPatcher(base, CPU, CPU), CLIP(pipe.tokenizer, pipe.text_encoder), VAE(pipe.vae)
