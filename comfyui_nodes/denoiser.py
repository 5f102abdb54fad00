"""The denoiser seam over ComfyUI's own model objects (``MODEL``, ``CLIP``, ``VAE``).

How each :class:`~unifl.core.diffusion.denoiser.Denoiser` operation maps onto ComfyUI:

* ``predict_x0`` / ``predict_model_output``: the body of ``BaseModel._apply_model`` on a *structural
  copy* of ``model.diffusion_model`` (new module objects, the same weight tensors), so the LoRA that
  core's peft injection adds never changes the module tree ComfyUI's ``ModelPatcher`` manages. Core
  works in the variance-preserving convention at integer timesteps; ComfyUI in sigma space. The edge
  conversion is ``σ_t = model_sampling.sigmas[t]``, ``x_ve = x_vp · sqrt(1 + σ²)`` (= ``x_vp / sqrt(ᾱ)``);
  ``calculate_denoised`` returns ``x0``, which is the same in both conventions. The raw UNet output is
  ε (EPS models) or v (V_PREDICTION) in diffusers' convention already.
* ``alphas_cumprod``: ``1 / (1 + σ²)`` from the model's own sigma table (so ``ModelSamplingDiscrete``
  patches, zSNR included, are honoured).
* ``encode_images`` / ``decode_latents``: the VAE's ``first_stage_model`` ``encode`` (posterior mode)
  and ``decode`` *without* the clamp of ``VAE.decode`` (gradients must flow), scaled with the model's
  ``latent_format``.
* ``encode_prompts``: ``CLIP.tokenize`` + ``encode_from_tokens``, the first 77-token chunk (what the
  diffusers implementation uses too), computed *before* training for the first :data:`UPFRONT_PROMPTS`
  distinct prompts the run will use (the validation prompts first), so that usually the text encoder never
  has to be loaded while the UNet is training; a run with more prompts and captions encodes the rest when a
  step first uses them (core's ``PromptCache`` keeps them), so step 1 never waits for 200 000 encodings.
* Memory: ``comfy.model_management.load_models_gpu([model, vae], memory_required=1e20,
  force_full_load=True)`` (ComfyUI's own trainer does the same); nothing is moved by hand.
* Inference tensors: loader nodes create weights under ``torch.inference_mode()``. Before training,
  each such parameter is replaced (in place in ComfyUI's module, same values, no extra memory) by a
  normal tensor, so autograd can save it for backward.

Only SD1.x, SD2.x and SDXL (epsilon/v-prediction, 4 latent channels) are supported.
"""

from __future__ import annotations

import copy
import logging
from typing import Sequence

import comfy.model_management
import comfy.utils
import torch
from torch import nn

from ..core.diffusion.denoiser import Conditioning, Denoiser

log = logging.getLogger("unifl")

#: ComfyUI model-config class → UniFL architecture tag (LoRA metadata). SSD-1B, Segmind-Vega and KOALA are
#: SDXL with fewer transformer layers (``comfy/supported_models.py`` subclasses of ``SDXL``): same
#: conditioning, same LoRA key names.
ARCHITECTURES = {"SD15": "sd15", "SD20": "sd2", "SDXL": "sdxl", "SSD1B": "sdxl", "Segmind_Vega": "sdxl", "KOALA_700M": "sdxl", "KOALA_1B": "sdxl"}
TOKENS = 77
#: Distinct prompts encoded before training. The recipe's 20 000 COCO captions took minutes per thousand on a
#: busy CPU and 236 KB each in memory (fp32 77×768); 2000 steps × batch 4 use at most 8000 of them.
UPFRONT_PROMPTS = 1024


class UnsupportedModel(ValueError):
    """A MODEL/VAE UniFL cannot train or sample; the message names the model and the fix."""


def architecture_of(model) -> str:
    """UniFL's architecture tag of a ComfyUI ``MODEL`` (``ModelPatcher``), or :class:`UnsupportedModel`."""
    name = type(model.model.model_config).__name__
    if name not in ARCHITECTURES:
        raise UnsupportedModel(f"this MODEL is a {name}; UniFL supports Stable Diffusion 1.x/2.x and SDXL checkpoints ({', '.join(ARCHITECTURES)})")
    channels = model.model.model_config.unet_config.get("in_channels", 4)
    if channels != 4:
        raise UnsupportedModel(f"this {name} MODEL takes {channels} input channels (inpainting/instruct-pix2pix); UniFL trains text-to-image models with 4 latent channels")
    return ARCHITECTURES[name]


def prediction_type_of(model_sampling) -> str:
    import comfy.model_sampling as ms

    if isinstance(model_sampling, ms.V_PREDICTION):  # before EPS: V_PREDICTION subclasses EPS
        return "v_prediction"
    if isinstance(model_sampling, ms.X0):
        return "sample"
    if isinstance(model_sampling, ms.EPS):
        return "epsilon"
    raise UnsupportedModel(f"model sampling {type(model_sampling).__name__} is not a discrete epsilon/v model; UniFL supports SD1.x/2.x/SDXL")


def ldm_to_diffusers_map(unet_config: dict) -> dict[str, str]:
    """ComfyUI (LDM) module path → diffusers module path, inverted from ``comfy.utils.unet_to_diffusers``."""
    out = {}
    for diffusers_key, ldm_key in comfy.utils.unet_to_diffusers(unet_config).items():
        if diffusers_key.endswith(".weight") and ldm_key.endswith(".weight"):
            out[ldm_key[: -len(".weight")]] = diffusers_key[: -len(".weight")]
    return out


def make_trainable(module: nn.Module) -> None:
    """Replace inference-mode parameters/buffers of ``module`` by normal tensors with the same values.

    Must run under ``torch.inference_mode(False)``. The module keeps its structure; ComfyUI's model
    patching (``set_attr_param``/``copy_to_param``) works on the new tensors as on the old ones.
    """
    done: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.is_inference():
                if id(param) not in done:
                    done[id(param)] = nn.Parameter(param.detach().clone(), requires_grad=False)
                sub._parameters[name] = done[id(param)]
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_inference():
                if id(buf) not in done:
                    done[id(buf)] = buf.clone()
                sub._buffers[name] = done[id(buf)]


def structural_copy(module: nn.Module) -> nn.Module:
    """New module objects sharing ``module``'s parameters and buffers (no weight memory)."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def checkpoint_children(modules: Sequence[nn.Module]) -> None:
    """Recompute these modules' activations in backward (only ever applied to our structural copies)."""
    import torch.utils.checkpoint

    for m in modules:
        forward = m.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return torch.utils.checkpoint.checkpoint(lambda a, k: _forward(*a, **k), args, kwargs, use_reentrant=False)

        m.forward = checkpointed


class ComfyDenoiser(Denoiser):
    """:class:`~unifl.core.diffusion.denoiser.Denoiser` over ComfyUI's ``MODEL`` + ``CLIP`` + ``VAE``.

    Construct and use it inside ``torch.inference_mode(False)``; the calls into ComfyUI that patch
    weights in place (model loading, the text encoder) re-enter inference mode themselves.

    Args:
        model: the ``ModelPatcher`` to train on (cloned; upstream patches such as LoRAs apply).
        clip: the ``CLIP`` object whose encoder made ``prompts``' conditioning.
        vae: the ``VAE`` object (SD-family KL autoencoder).
        prompts: every prompt the run will encode (prompts, captions, validation prompts, ``""``).
    """

    host = "comfyui"

    module_naming = "ldm"

    def __init__(self, model, clip, vae, prompts: Sequence[str] = ()):
        self.patcher = model.clone()
        self.clip, self.vae = clip, vae
        self.architecture = architecture_of(model)
        base = self.patcher.model
        self.base = base
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.latent_format = self.patcher.get_model_object("latent_format")
        self.prediction = prediction_type_of(self.model_sampling)
        if getattr(vae, "latent_channels", 4) != 4 or not isinstance(vae.downscale_ratio, int):
            raise UnsupportedModel(f"this VAE has {vae.latent_channels} latent channels / downscale {vae.downscale_ratio}; UniFL needs the SD1.x/SDXL KL VAE (4 channels, 8x)")
        self.latent_channels = int(self.latent_format.latent_channels)
        self.vae_scale_factor = vae.downscale_ratio
        self._sigmas = self.model_sampling.sigmas.detach().clone().float().cpu()
        self.alphas_cumprod = 1.0 / (1.0 + self._sigmas.double() ** 2)
        self._prompts: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        distinct = list(dict.fromkeys(["", *prompts]))
        if len(distinct) > UPFRONT_PROMPTS:
            log.info("UniFL: %d distinct prompts and captions: %d encoded before training, the others when a step first uses one "
                     "(the text encoder then loads beside the UNet)", len(distinct), UPFRONT_PROMPTS)
        self.encode_prompts(distinct[:UPFRONT_PROMPTS])  # before the UNet/VAE claim the device

        with torch.inference_mode():  # ComfyUI patches weights in place: that needs inference mode
            comfy.model_management.load_models_gpu([self.patcher, vae.patcher], memory_required=1e20, force_full_load=True)
        make_trainable(base.diffusion_model)
        make_trainable(vae.first_stage_model)
        self.unet = structural_copy(base.diffusion_model).requires_grad_(False)
        self.vae_model = structural_copy(vae.first_stage_model).requires_grad_(False)
        self._ldm_to_diffusers = ldm_to_diffusers_map(base.model_config.unet_config)
        self._dtype = base.manual_cast_dtype or base.get_dtype()
        self._vae_dtype = vae.vae_dtype

    # -- naming ---------------------------------------------------------------------------------------

    def lora_name_map(self, host_path: str) -> str:
        """ComfyUI module path inside the UNet → diffusers module path (``KeyError`` if none)."""
        return self._ldm_to_diffusers[host_path]

    @property
    def unet_widths(self) -> tuple[list[int], int | None]:
        """``(block_out_channels, cross_attention_dim)`` in diffusers' terms, from ComfyUI's ``unet_config``
        (``model_channels × channel_mult``, ``context_dim``): the pre-run check reads the widths its activation
        figures were measured on from a diffusers UNet's ``config``, which ComfyUI's UNet does not have."""
        config = self.base.model_config.unet_config
        return [config["model_channels"] * m for m in config["channel_mult"]], config.get("context_dim")

    # -- seam -----------------------------------------------------------------------------------------

    @property
    def lora_target(self) -> nn.Module:
        return self.unet

    @property
    def prediction_type(self) -> str:
        return self.prediction

    def enable_gradient_checkpointing(self) -> None:
        # ComfyUI's UNet calls the layers *inside* each TimestepEmbedSequential, not the block itself.
        checkpoint_children([m for m in self.unet.modules() if type(m).__name__ in ("ResBlock", "SpatialTransformer")])
        checkpoint_children([m for m in self.vae_model.decoder.modules() if type(m).__name__ in ("ResnetBlock", "AttnBlock")])

    def _forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw UNet output, the sigma-space input and sigma (what ``BaseModel._apply_model`` computes)."""
        device = self.device
        sigma = self._sigmas[timesteps.long().cpu()].to(device)
        x_ve = x_t.float().to(device) * (1.0 + sigma.double() ** 2).sqrt().float().view(-1, *([1] * (x_t.ndim - 1)))
        ms = self.model_sampling
        xc = ms.calculate_input(sigma, x_ve)
        t = ms.timestep(sigma).float()
        context = cond.tensors["prompt_embeds"].to(device, self._dtype)
        extra = {}
        pooled = cond.tensors.get("pooled_output")
        height, width = x_t.shape[-2] * self.vae_scale_factor, x_t.shape[-1] * self.vae_scale_factor
        adm = self.base.encode_adm(pooled_output=pooled, width=width, height=height, crop_w=0, crop_h=0, target_width=width, target_height=height) if pooled is not None else None
        if adm is not None:
            extra["y"] = adm.to(device, self._dtype)
        t = self.base.process_timestep(t, x=x_ve, **extra)
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options.update(sigmas=sigma, cond_or_uncond=[0])
        out = self.unet(xc.to(self._dtype), t, context=context, control=None, transformer_options=options, **extra)
        return out.float(), x_ve, sigma

    def predict_model_output(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._forward(x_t, timesteps, cond)[0]

    def predict_x0(self, x_t: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        out, x_ve, sigma = self._forward(x_t, timesteps, cond)
        return self.model_sampling.calculate_denoised(sigma, out, x_ve).float()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.vae_model.parameters()).device
        with torch.no_grad():
            z = self.vae_model.encode((images * 2 - 1).to(device, self._vae_dtype))
        return self.latent_format.process_in(z.float()).to(self.device)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        device = next(self.vae_model.parameters()).device
        z = self.latent_format.process_out(latents.float())
        image = self.vae_model.decode(z.to(device, self._vae_dtype))
        return ((image.float() + 1) / 2).to(latents.device)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        training = hasattr(self, "unet")  # kept only before training: the trainer's PromptCache keeps the others
        encoded = dict(self._prompts)
        for prompt in [p for p in dict.fromkeys(prompts) if p not in self._prompts]:
            with torch.inference_mode():
                cond, pooled = self.clip.encode_from_tokens(self.clip.tokenize(prompt), return_pooled=True)
            # Cloned outside inference mode: autograd may save them (LoRA on to_k/to_v sees the context).
            encoded[prompt] = (cond[:, :TOKENS].float().cpu().clone(), None if pooled is None else pooled.float().cpu().clone())
            if not training:
                self._prompts[prompt] = encoded[prompt]
        if training and len(encoded) > len(self._prompts):  # bring the UNet and VAE back if the text encoder evicted them
            with torch.inference_mode():
                comfy.model_management.load_models_gpu([self.patcher, self.vae.patcher], force_full_load=True)
        embeds = torch.cat([encoded[p][0] for p in prompts])
        tensors = {"prompt_embeds": embeds}
        if self.architecture == "sdxl":
            tensors["pooled_output"] = torch.cat([encoded[p][1] for p in prompts])
        return Conditioning(tensors)


def release(denoiser: ComfyDenoiser | None) -> None:
    """Drop the training copies and the encoded prompts (the caller then hands the memory back)."""
    if denoiser is not None:
        denoiser.unet = denoiser.vae_model = None
        denoiser._prompts.clear()

