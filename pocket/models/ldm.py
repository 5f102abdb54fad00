"""The pocket latent diffusion model: a tiny Stable-Diffusion-architecture pipeline pretrained on the pocket world.

UniFL fine-tunes a *pretrained* text-to-image model, and no real Stable Diffusion weights exist offline,
so this module pretrains one from scratch on CPU with the real diffusers/transformers classes:

1. an ``AutoencoderKL`` with downsampling factor 4 (64 px images ↔ 16×16×4 latents), so the 4 px
   stripes and checks of the pocket world can survive the round trip; trained with L1 + MSE and a
   small KL term, then its decoder alone fine-tuned against a patch discriminator (as SD's decoder is
   trained), which draws the patterns an L1/MSE decoder smears into flat tints. Its ``scaling_factor`` is
   1 / std of the training latents, SD's convention;
2. a ``UNet2DConditionModel`` and a ``CLIPTextModel``, trained jointly from scratch with SD1.5's DDPM
   noise schedule and epsilon prediction, 10 % of captions dropped to ``""`` so classifier-free
   guidance works, min-SNR loss weighting (γ = 5) with the high-noise steps weighted like x0 errors,
   and an EMA of both networks.

The result is saved as a standard ``StableDiffusionPipeline`` folder (SD1.5's DDIM scheduler config,
a word-level CLIP tokenizer over :data:`~.world.VOCABULARY`, no safety checker) that
``StableDiffusionPipeline.from_pretrained(folder)`` and :func:`unifl.core.diffusion.loading.load_pipeline`
read offline. It draws colour, shape, size, tone and light as its prompts ask at 20 steps, as SD1.5 does;
relations are mostly wrong, two images in five are right on every check, and few-step sampling is visibly
blurry and misshapen: what UniFL's feedback learning is meant to improve (``weights/ldm/TRIALS.md`` for how
it got there).

Build it with ``python -m unifl.pocket.models.ldm --out pocket/weights/ldm`` (about 4 hours on 2 cores, in parts of
``--part-hours`` continued with ``--resume``; ``--quick`` for a seconds-long smoke build). The shipped folder also
holds ``BUILD.md`` and a ``samples.png`` grid.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...core.diffusion import schedule as sched
from ...core.diffusion.diffusers_denoiser import DiffusersDenoiser, alphas_cumprod_from_config
from ...core.diffusion.loading import load_pipeline, prefer_torchvision_free_processors
from ...core.diffusion.sampling import generate
from ...core.diffusion.tiny import SD15_SCHEDULER, write_clip_tokenizer
from ...core.files import atomic_write_text
from ...core.images import grid, save_png
from ...core.machine import cpu_name
from ...core.progress import progress_bar
from .resumable import PartClock, PartFinished, load_training_state, save_training_state
from .. import WEIGHTS_DIR
from ..world.world import VOCABULARY, PocketDataset, WorldConfig

RESOLUTION = 64
MAX_TOKENS = 40
"""Tokenizer length: the longest caption is 29 words, plus start and end tokens, with room to spare."""
HOLDOUT_SEED = 2
"""The LDM trains on dataset stream ``seed`` (0 for the shipped model); stream 2 is held out for metrics."""

def vae_config(channels: tuple[int, ...] = (16, 32, 64)) -> dict:
    """The ``AutoencoderKL`` of a build whose blocks are ``channels`` wide (factor ``2 ** (len − 1)``)."""
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=RESOLUTION,
        block_out_channels=tuple(channels), layers_per_block=1,
        # Few, wide groups: with one or two channels per group, GroupNorm acts as instance norm and strips
        # each image's mean colour, which the VAE then relearns slowly (colours came out wrong in trials).
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
        mid_block_add_attention=False,  # attention over every latent pixel costs more than it gives at this size
    )


VAE_CONFIG = vae_config()
VAE_INITIAL_LOGVAR = -6.0
"""Start the posterior nearly deterministic (σ ≈ 0.05, not 1): unit noise on the small initial latents
drowns the signal, and the encoder needs many steps to shrink it (the KL weight is too small to care)."""
TEXT_CONFIG = dict(
    hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu", projection_dim=96, layer_norm_eps=1e-5,
)
def unet_config(channels: tuple[int, ...] = (32, 64, 128), latent_factor: int = 4, layers_per_block: int = 1) -> dict:
    """The ``UNet2DConditionModel`` of a build: ``channels`` per level, latents of ``RESOLUTION / latent_factor``."""
    return dict(
        sample_size=RESOLUTION // latent_factor, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
        block_out_channels=tuple(channels), norm_num_groups=8,
        # No attention at the finest level (the most expensive); cross-attention to the caption below it,
        # where objects (3–6 latent pixels across at 16×16) are still located to within a cell.
        down_block_types=("DownBlock2D", *("CrossAttnDownBlock2D",) * (len(channels) - 1)),
        up_block_types=(*("CrossAttnUpBlock2D",) * (len(channels) - 1), "UpBlock2D"),
        attention_head_dim=tuple(width // 32 for width in channels),  # diffusers reads this as the head *count*: 32-wide heads
        cross_attention_dim=TEXT_CONFIG["hidden_size"],
    )


UNET_CONFIG = unet_config()


@dataclass(frozen=True)
class BuildSettings:
    """Every knob of a build; :data:`FULL` made the shipped model, :data:`QUICK` is a smoke test."""

    num_images: int
    """Training images rendered once (uint8) from stream ``seed`` and reused every epoch."""
    num_holdout: int
    """Held-out images (stream 2) for the VAE's PSNR and the denoiser's validation loss."""
    vae_crop_steps: int
    """VAE steps on random crops: a 16 px crop costs 1/16 of an image and learning is step-limited."""
    vae_crop: int
    """Crop side in pixels, a multiple of the latent factor so crops align with the latent grid."""
    vae_crop_batch: int
    vae_full_steps: int
    """Final VAE steps on whole 64 px images, so GroupNorm statistics and borders match inference."""
    vae_full_batch: int
    vae_lr: float
    vae_kl_weight: float
    """Weight of the KL term per latent element, against L1 + MSE per pixel: small, as in SD."""
    unet_steps: int
    unet_batch: int
    unet_lr: float
    warmup_steps: int
    caption_dropout: float
    snr_gamma: float
    ema_decay: float
    report_prompts: int
    """Held-out captions sampled for the build report's sharpness numbers (the grid shows the first 8)."""
    vae_channels: tuple[int, ...] = (16, 32, 64)
    """VAE block widths; ``n`` blocks downsample by ``2 ** (n - 1)``: three give 16×16 latents at 64 px, two 32×32."""
    unet_channels: tuple[int, ...] = (32, 64, 128)
    """UNet block widths (the first level without attention, the others with cross-attention, 32-wide heads)."""
    unet_layers_per_block: int = 1
    high_noise_weight_cap: float | None = None
    """Where a timestep's signal is below its noise (SNR < 1), weight the ε-MSE by ``min(1 / SNR, cap)`` (the
    weight an x0 error would get, capped) instead of min-SNR-γ's 1. The lowest frequencies (the light ramp, the
    layout) are decided there, and plain ε-MSE pays almost nothing for taking them from the caption: with it a
    denoiser learns to draw the light direction at all (``weights/ldm/TRIALS.md``). None: min-SNR-γ alone (v1)."""
    decoder_adversarial_steps: int | None = None
    """Steps of a decoder-only fine-tune with a patch discriminator after the VAE's L1 + MSE training (None: none,
    v1). An L1/MSE decoder draws the mean of what a latent could be, so the world's 4 px stripes and dots come out
    as flat tints; SD's decoder is trained with a discriminator (taming's ``LPIPSWithDiscriminator``) and draws
    texture instead. The encoder is frozen, so the latents, and a denoiser trained on them, stay as they are."""
    decoder_adversarial_weight: float = 0.5
    """Scale of the adversarial term's adaptive weight (taming's ``disc_weight``: the reconstruction's gradient norm
    at the decoder's last layer over the adversarial term's)."""
    decoder_batch: int = 16
    """Whole 64 px images per decoder fine-tune step."""
    decoder_lr: float = 1e-4
    """Adam (β 0.5, 0.9) rate of the decoder and of its discriminator, as in taming's VQGAN/KL-VAE recipe."""

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    def fingerprint(self) -> str:
        """What a saved denoiser state must match to be resumed by these settings: every field that the denoiser's
        training depends on, as text. Optional fields left at None (off, the behaviour from before they existed)
        are left out, so adding one does not orphan the states that builds without it saved; so are the decoder
        fine-tune's, which leaves the latents the denoiser learns from as they are."""
        return repr(sorted((name, value) for name, value in asdict(self).items() if value is not None and name not in DECODER_FIELDS))


DECODER_FIELDS = ("decoder_adversarial_steps", "decoder_adversarial_weight", "decoder_batch", "decoder_lr")
"""The settings of the decoder-only fine-tune, which no denoiser state depends on."""


V1 = BuildSettings(
    num_images=20_000, num_holdout=512,
    vae_crop_steps=3_000, vae_crop=16, vae_crop_batch=32, vae_full_steps=300, vae_full_batch=8, vae_lr=2e-3, vae_kl_weight=1e-5,
    unet_steps=3_000, unet_batch=32, unet_lr=1e-3, warmup_steps=200,
    caption_dropout=0.1, snr_gamma=5.0, ema_decay=0.999, report_prompts=32,
)
"""The first shipped pocket model: it followed prompts at 0.47 and drew the light at chance (``TRIALS.md``)."""
# v1's VAE caps what any denoiser can draw (its round trip of real renders reads shape 0.73, colour 0.86 on
# validation, under the bars). Trained three times as long it clears them at v1's decoding cost.
LONG_VAE = replace(V1, vae_crop_steps=9_000, vae_full_steps=900, unet_steps=30_000, warmup_steps=500)
# long-vae drew colour, shape and size but never the light direction: the caption's word moved nothing, the
# initial noise decided. Weighting the high-noise ε-MSE like an x0 error (capped at 10) made a 3 000-step
# denoiser draw it from the caption (TRIALS.md). Its decoder averaged the world's stripes and dots away (round
# trip detail gap 2.68); fine-tuned against a patch discriminator, as SD's decoder is trained, the same latents
# decode with texture (detail gap −0.21).
FULL = replace(LONG_VAE, high_noise_weight_cap=10.0, decoder_adversarial_steps=1_500)
QUICK = replace(
    FULL, num_images=64, num_holdout=16, vae_crop_steps=4, vae_crop_batch=4, vae_full_steps=2, vae_full_batch=2,
    unet_steps=6, unet_batch=4, warmup_steps=2, ema_decay=0.9, report_prompts=2,
    decoder_adversarial_steps=2, decoder_batch=2,
)
#: Named build settings (``--preset``): ``full`` made the shipped pocket model, ``v1`` the one before it; the others
#: are the trials between them (measured with :mod:`.base_quality`, compared in ``TRIALS.md``).
PRESETS = {
    "full": FULL,
    "v1": V1,
    # the cheapest change first: the same networks, ten times the denoiser steps (v1's loss still fell at its end)
    "long": replace(V1, unet_steps=30_000, warmup_steps=500),
    # four times wider the VAE clears the bars too but triples the decoder's cost in every feedback term
    "wide-vae": replace(LONG_VAE, vae_channels=(32, 64, 128), vae_crop_steps=6_000, vae_full_steps=600),
    "long-vae": LONG_VAE,
    "long-vae-light": replace(LONG_VAE, high_noise_weight_cap=10.0),
    # the trial name of what became FULL (the `compass` build in TRIALS.md)
    "long-vae-light-gan": FULL,
    # no 16×16 latent carries the world's 4 px stripes and dots (the detail judge's gap stays > 2.5 on every VAE
    # above): two VAE blocks make 32×32 latents (round-trip detail gap 1.30), at about 2.5 times the UNet's cost per step
    "latent32": replace(LONG_VAE, vae_channels=(16, 32)),
}
GRID_PROMPTS = 8
GRID_CFG = 3.0
GRID_SAMPLERS = ((20, "leading"), (4, "trailing"))


def pocket_model_dir() -> Path:
    """The shipped pipeline folder, ``pocket/weights/ldm``."""
    return WEIGHTS_DIR / "ldm"


def load_pocket_pipeline(path: str | Path | None = None, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The pocket LDM as a ``StableDiffusionPipeline`` (the shipped folder unless ``path`` names another)."""
    folder = Path(path) if path is not None else pocket_model_dir()
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no pocket LDM there (model_index.json is missing). Build it with "
            f"`python -m unifl.pocket.models.ldm --out {folder}` (about half an hour on 2 CPU cores)."
        )
    return load_pipeline(folder, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------- data


def render_images(count: int, seed: int, desc: str) -> tuple[torch.Tensor, list[str]]:
    """``count`` pocket-world images of stream ``seed`` as uint8 ``[N, 3, 64, 64]``, and their captions.

    Rendered once and kept as bytes (12 KiB per image): training then costs no rendering at all.
    """
    dataset = PocketDataset(count, seed, WorldConfig(resolution=RESOLUTION))
    images = torch.empty((count, 3, RESOLUTION, RESOLUTION), dtype=torch.uint8)
    captions = []
    for i in progress_bar(range(count), desc=desc, unit="img", dynamic_ncols=True, mininterval=2):
        sample = dataset[i]
        images[i] = (sample.image * 255).round().to(torch.uint8)
        captions.append(sample.caption)
    return images, captions


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` → float ``[-1, 1]``, the VAE's input range."""
    return images.float() / 127.5 - 1.0


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Padded token ids ``[N, MAX_TOKENS]``, exactly as the pipeline and our denoiser tokenize at inference."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------- training


def warmup_cosine(warmup: int, total: int, floor: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then cosine decay to ``floor`` (short runs end on a calm LR)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class LossLog:
    """Mean training loss per tenth of a run: a compact loss curve for logs and ``BUILD.md``."""

    def __init__(self, total_steps: int):
        self.bucket = max(1, total_steps // 10)
        self.sums: list[float] = []
        self.counts: list[int] = []

    def add(self, step: int, loss: float) -> None:
        index = min(step // self.bucket, 9)
        while len(self.sums) <= index:
            self.sums.append(0.0)
            self.counts.append(0)
        self.sums[index] += loss
        self.counts[index] += 1

    def curve(self) -> list[float]:
        return [s / c for s, c in zip(self.sums, self.counts)]


def train_vae(images: torch.Tensor, settings: BuildSettings, seed: int):
    """An ``AutoencoderKL`` trained on ``images`` (uint8): crops first, whole images last; with its L1 curve."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    config = vae_config(settings.vae_channels)
    vae = AutoencoderKL(**config)
    with torch.no_grad():
        vae.quant_conv.bias[config["latent_channels"] :] = VAE_INITIAL_LOGVAR
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    total = settings.vae_crop_steps + settings.vae_full_steps
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, total))
    log = LossLog(total)
    vae.train()
    bar = progress_bar(range(total), desc="VAE", dynamic_ncols=True, mininterval=2)
    for step in bar:
        if step < settings.vae_crop_steps:
            grid_step = settings.latent_factor  # crops align with the latent grid
            top, left = (grid_step * torch.randint((RESOLUTION - settings.vae_crop) // grid_step + 1, (2,), generator=generator)).tolist()
            index = torch.randint(len(images), (settings.vae_crop_batch,), generator=generator)
            x = to_signed(images[index, :, top : top + settings.vae_crop, left : left + settings.vae_crop])
        else:
            x = to_signed(images[torch.randint(len(images), (settings.vae_full_batch,), generator=generator)])
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        l1 = (reconstruction - x).abs().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = l1 + ((reconstruction - x) ** 2).mean() + settings.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        log.add(step, l1.item())
        if step % 20 == 0:
            bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.1f}")
    return vae.eval().requires_grad_(False), log.curve()


def patch_discriminator():
    """A small PatchGAN (taming's ``NLayerDiscriminator``, two downsamplings at 64 px): one logit per ~22 px patch,
    so it judges texture and local structure, not the whole scene."""
    from torch import nn

    def block(channels_in: int, channels_out: int, stride: int, norm: bool = True) -> list:
        return [nn.Conv2d(channels_in, channels_out, 4 if stride == 2 else 3, stride, 1), *([nn.GroupNorm(8, channels_out)] if norm else []), nn.LeakyReLU(0.2)]

    return nn.Sequential(*block(3, 32, 2, norm=False), *block(32, 64, 2), *block(64, 128, 1), nn.Conv2d(128, 1, 3, 1, 1))


def finetune_decoder(vae, images: torch.Tensor, settings: BuildSettings, seed: int):
    """``vae`` with its decoder fine-tuned against a patch discriminator (hinge loss), and the reconstruction
    loss (L1 + MSE) per tenth of the run. Only ``post_quant_conv`` and the decoder train: the encoder's latents
    are unchanged. The adversarial term's weight adapts as in taming: the reconstruction's gradient norm at the
    decoder's last layer over the adversarial term's, times ``decoder_adversarial_weight``."""
    torch.manual_seed(seed)
    vae.requires_grad_(False)
    decoder_params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in decoder_params:
        p.requires_grad_(True)
    discriminator = patch_discriminator()
    decoder_optimizer = torch.optim.Adam(decoder_params, lr=settings.decoder_lr, betas=(0.5, 0.9))
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=settings.decoder_lr, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(seed)
    last_layer = vae.decoder.conv_out.weight
    log = LossLog(settings.decoder_adversarial_steps)
    vae.train()
    bar = progress_bar(range(settings.decoder_adversarial_steps), desc="VAE decoder (adversarial)", dynamic_ncols=True, mininterval=2)
    for step in bar:
        x = to_signed(images[torch.randint(len(images), (settings.decoder_batch,), generator=generator)])
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        reconstruction_loss = (reconstruction - x).abs().mean() + ((reconstruction - x) ** 2).mean()
        adversarial_loss = -discriminator(reconstruction).mean()
        reconstruction_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
        adversarial_grad = torch.autograd.grad(adversarial_loss, last_layer, retain_graph=True)[0]
        weight = (reconstruction_grad.norm() / (adversarial_grad.norm() + 1e-4)).clamp(0, 1e4).detach() * settings.decoder_adversarial_weight
        decoder_optimizer.zero_grad(set_to_none=True)
        (reconstruction_loss + weight * adversarial_loss).backward()
        decoder_optimizer.step()
        discriminator_loss = F.relu(1 - discriminator(x)).mean() + F.relu(1 + discriminator(reconstruction.detach())).mean()
        discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        discriminator_optimizer.step()
        log.add(step, reconstruction_loss.item())
        if step % 20 == 0:
            bar.set_postfix(reconstruction=f"{reconstruction_loss.item():.4f}", discriminator=f"{discriminator_loss.item():.3f}")
    return vae.eval().requires_grad_(False), log.curve()


@torch.no_grad()
def encode_means(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means of ``images`` (uint8), unscaled: what ``DiffusersDenoiser.encode_images`` uses."""
    chunks = [vae.encode(to_signed(images[i : i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(chunks)


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor, latents: torch.Tensor) -> float:
    """Mean per-image PSNR (dB, images in [0, 1]) of decoding the posterior means of ``images``."""
    decoded = torch.cat([vae.decode(latents[i : i + 256]).sample for i in range(0, len(latents), 256)])
    mse = (((decoded.clamp(-1, 1) + 1) / 2 - images.float() / 255) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def build_text_encoder(tokenizer):
    """A small, randomly initialised ``CLIPTextModel`` whose embedding table covers ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG,
    ))


def loss_weights(snr: torch.Tensor, snr_gamma: float, high_noise_weight_cap: float | None = None) -> torch.Tensor:
    """Per-sample weights of the ε-MSE: min-SNR-γ (Hang et al. 2023), ``min(1 / SNR, cap)`` below SNR 1 when a cap is given."""
    weights = snr.clamp(max=snr_gamma) / snr
    if high_noise_weight_cap is None:
        return weights
    return torch.where(snr < 1, (1 / snr).clamp(max=high_noise_weight_cap), weights)


def denoising_loss(unet, text_encoder, x0, ids, noise, timesteps, alphas_cumprod, snr_gamma: float | None, high_noise_weight_cap: float | None = None):
    """Epsilon-prediction MSE per sample, weighted by :func:`loss_weights` when ``snr_gamma`` is given."""
    alpha_bar = sched.signal_level(alphas_cumprod, timesteps).float()
    x_t = sched.add_noise(x0, noise, alpha_bar)
    prediction = unet(x_t, timesteps, text_encoder(ids, return_dict=False)[0], return_dict=False)[0]
    per_sample = ((prediction - noise) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample
    return per_sample * loss_weights(alpha_bar / (1 - alpha_bar), snr_gamma, high_noise_weight_cap)


@torch.no_grad()
def validation_loss(unet, text_encoder, latents: torch.Tensor, ids: torch.Tensor, alphas_cumprod, seed: int) -> float:
    """Unweighted epsilon MSE on held-out latents, timesteps evenly spread over [0, 1000), fixed noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.linspace(0, len(alphas_cumprod) - 1, len(latents)).round().long()
    losses = [
        denoising_loss(unet, text_encoder, latents[i : i + 128], ids[i : i + 128], noise[i : i + 128], timesteps[i : i + 128], alphas_cumprod, None)
        for i in range(0, len(latents), 128)
    ]
    return float(torch.cat(losses).mean())


def train_denoiser(latents, ids, empty_ids, holdout, tokenizer, settings: BuildSettings, seed: int, state: Path | None = None, clock: PartClock | None = None):
    """UNet + CLIP text encoder trained jointly on scaled latents; returns the better of raw and EMA weights.

    ``holdout`` is ``(latents, ids)`` of held-out images; both weight sets are scored on it and the one
    with the lower validation loss is kept, so EMA is used only where it measurably helps.
    ``state`` (a path without suffix) is where the training state is saved every ``clock.save_minutes``
    and when ``clock`` runs out (then :class:`PartFinished` is raised); if a state is there, training
    continues from it, exactly as if it had never stopped.
    """
    from diffusers import UNet2DConditionModel

    clock = clock or PartClock()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_config(settings.unet_channels, settings.latent_factor, settings.unet_layers_per_block))
    text_encoder = build_text_encoder(tokenizer)
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    alphas_cumprod = alphas_cumprod_from_config(SD15_SCHEDULER)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=0.01)
    log = LossLog(settings.unet_steps)
    parts = {"unet": unet, "text_encoder": text_encoder}
    first = 0
    # The settings do not say what the captions read; a state from an older world must not go on in this one.
    captions_signature = hashlib.sha256(ids.numpy().tobytes()).hexdigest()
    if state is not None and state.with_suffix(".json").is_file():
        info = load_training_state(state, modules=parts, ema=ema, optimizer=optimizer, generator=generator)
        if info["fingerprint"] != settings.fingerprint():
            raise ValueError(f"{state}.json was saved by a build with other settings; continue it with those, or move {state.parent} away to start over")
        if info.get("captions") != captions_signature:
            raise ValueError(f"{state}.json was trained on other captions (the world's captions or vocabulary changed since); move {state.parent} away to start over")
        first, log.sums, log.counts = info["step"], info["loss_sums"], info["loss_counts"]
        tqdm.write(f"UNet + text encoder: resuming at step {first} of {settings.unet_steps} from {state}")
    # The schedule is a pure function of the step: a resumed one starts where the state stopped.
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.unet_steps), last_epoch=first - 1)

    def save_state(step: int) -> None:
        info = {"step": step, "fingerprint": settings.fingerprint(), "captions": captions_signature, "loss_sums": log.sums, "loss_counts": log.counts}
        save_training_state(state, modules=parts, ema=ema, optimizer=optimizer, generator=generator, info=info)
        clock.saved()

    unet.train(), text_encoder.train()
    bar = progress_bar(range(first, settings.unet_steps), desc="UNet + text encoder", dynamic_ncols=True, mininterval=2, initial=first, total=settings.unet_steps)
    for step in bar:
        if state is not None and step > first and (clock.out_of_time() or clock.save_due()):
            save_state(step)
            if clock.out_of_time():
                raise PartFinished("UNet + text encoder", step, settings.unet_steps, state.parent)
        index = torch.randint(len(latents), (settings.unet_batch,), generator=generator)
        batch_ids = ids[index].clone()
        dropped = torch.rand(settings.unet_batch, generator=generator) < settings.caption_dropout
        batch_ids[dropped] = empty_ids
        timesteps = torch.randint(len(alphas_cumprod), (settings.unet_batch,), generator=generator)
        noise = torch.randn(latents[index].shape, generator=generator)
        loss = denoising_loss(unet, text_encoder, latents[index], batch_ids, noise, timesteps, alphas_cumprod, settings.snr_gamma, settings.high_noise_weight_cap).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        log.add(step, loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    if state is not None:
        save_state(settings.unet_steps)
    unet.eval(), text_encoder.eval()
    raw_loss = validation_loss(unet, text_encoder, *holdout, alphas_cumprod, seed)
    ema_unet, ema_text_encoder = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    with torch.no_grad():
        for target, value in zip([*ema_unet.parameters(), *ema_text_encoder.parameters()], ema):
            target.copy_(value)
    ema_loss = validation_loss(ema_unet, ema_text_encoder, *holdout, alphas_cumprod, seed)
    chosen = (ema_unet, ema_text_encoder) if ema_loss <= raw_loss else (unet, text_encoder)
    stats = {"loss_curve": log.curve(), "val_loss_raw": raw_loss, "val_loss_ema": ema_loss, "kept": "ema" if ema_loss <= raw_loss else "raw"}
    return chosen[0].requires_grad_(False), chosen[1].requires_grad_(False), stats


# ------------------------------------------------------------------------------------------------- build


def parts_folder(out_dir: Path) -> Path:
    """Where an unfinished build keeps its parts: beside ``out_dir``, hidden, never inside the shipped folder."""
    return out_dir.parent / f".{out_dir.name}.parts"


def build_pocket_pipeline(out_dir: str | Path, *, seed: int = 0, quick: bool = False, settings: BuildSettings | None = None,
                          resume: bool = False, part_hours: float | None = None) -> Path:
    """Pretrain the pocket LDM and save it (with ``BUILD.md`` and ``samples.png``) as a pipeline folder.

    ``out_dir`` is replaced only once the new folder is complete, so an interrupted build never leaves
    a half-written model behind. ``seed`` picks the training-data stream and every initialisation;
    ``settings`` overrides the :data:`FULL` / :data:`QUICK` presets.

    The build runs in parts (:mod:`.resumable`): the trained VAE and the denoiser's training state are kept
    in :func:`parts_folder`; a part stops after ``part_hours`` with :class:`PartFinished`, and ``resume=True``
    continues from what is there. Without ``resume`` an unfinished build in the way is refused, never deleted.
    """
    prefer_torchvision_free_processors()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if seed == HOLDOUT_SEED:
        raise ValueError(f"seed {HOLDOUT_SEED} is the held-out data stream of the build report; pick another --seed")
    settings = settings or (QUICK if quick else FULL)
    out_dir = Path(out_dir).resolve()
    parts = parts_folder(out_dir)
    if parts.exists() and not resume:
        raise FileExistsError(f"{parts}: an unfinished build of {out_dir} is there; add --resume to continue it, or move it away to start over")
    parts.mkdir(parents=True, exist_ok=True)
    clock = PartClock(hours=part_hours)
    started, times = time.perf_counter(), {}
    fold_killed_part(parts)
    load_before = os.getloadavg()[0]

    def phase(name: str, begun: float) -> float:
        times[name] = time.perf_counter() - begun
        return time.perf_counter()

    clock_start = time.perf_counter()
    images, captions = render_images(settings.num_images, seed, "render training set")
    holdout_images, holdout_captions = render_images(settings.num_holdout, HOLDOUT_SEED, "render held-out set")
    clock_start = phase("render", clock_start)

    vae_dir = parts / "vae"
    if (vae_dir / "config.json").is_file():
        vae = load_part(vae_dir)
        vae_curve = json.loads((parts / "vae_curve.json").read_text())
        if vae.config.block_out_channels != list(settings.vae_channels):
            raise ValueError(f"{vae_dir} was trained with other VAE widths than these settings; move {parts} away to start over")
        tqdm.write(f"VAE: taken from {vae_dir} (an earlier part)")
    else:
        vae, vae_curve = train_vae(images, settings, seed)
        atomic_write_text(parts / "vae_curve.json", json.dumps(vae_curve))
        save_part(vae, parts, vae_dir)
    decoder_curve = None
    if settings.decoder_adversarial_steps:
        decoder_dir = parts / "vae-decoder"
        # The denoiser's fingerprint leaves these settings out, so the decoder part records them itself.
        decoder_settings = {name: getattr(settings, name) for name in DECODER_FIELDS}
        if (decoder_dir / "config.json").is_file():
            record = json.loads((parts / "decoder_curve.json").read_text())
            if record["settings"] != decoder_settings:
                raise ValueError(f"{decoder_dir} was fine-tuned with other decoder settings ({record['settings']}); move it and {parts / 'decoder_curve.json'} away to fine-tune again")
            vae, decoder_curve = load_part(decoder_dir), record["curve"]
            tqdm.write(f"VAE decoder: taken from {decoder_dir} (an earlier part)")
        else:
            vae, decoder_curve = finetune_decoder(vae, images, settings, seed)
            atomic_write_text(parts / "decoder_curve.json", json.dumps({"settings": decoder_settings, "curve": decoder_curve}))
            save_part(vae, parts, decoder_dir)
    vae_unscaled = encode_means(vae, images)
    scaling_factor = float(1.0 / vae_unscaled.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    holdout_unscaled = encode_means(vae, holdout_images)
    psnr = reconstruction_psnr(vae, holdout_images, holdout_unscaled)
    tqdm.write(f"VAE: held-out PSNR {psnr:.2f} dB, scaling_factor {scaling_factor:.4f}")
    clock_start = phase("vae", clock_start)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))  # same filesystem: the final move is a rename
    try:
        tokenizer = write_clip_tokenizer(work / "tokenizer", VOCABULARY, model_max_length=MAX_TOKENS)
        ids, holdout_ids = tokenize(tokenizer, captions), tokenize(tokenizer, holdout_captions)
        empty_ids = tokenize(tokenizer, [""])[0]
        holdout = (holdout_unscaled * scaling_factor, holdout_ids)

        def record_part_so_far() -> None:  # at every save: a part killed later keeps its time up to here
            now = time.perf_counter()
            atomic_write_text(parts / PART_IN_PROGRESS, json.dumps(times | {"unet": now - clock_start, "total": now - started}))

        clock.on_save = record_part_so_far
        try:
            unet, text_encoder, unet_stats = train_denoiser(vae_unscaled * scaling_factor, ids, empty_ids, holdout, tokenizer, settings, seed, parts / "denoiser", clock)
        finally:  # a finished part adds its wall time to the earlier parts' (BUILD.md reports the sum)
            phase("unet", clock_start)
            times = add_part_times(parts / "times.json", times | {"total": time.perf_counter() - started})
            (parts / PART_IN_PROGRESS).unlink(missing_ok=True)
        clock_start = time.perf_counter()

        scheduler = DDIMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")})
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_pretrained(str(work))
        quality = write_samples(pipe, holdout_images, holdout_captions, settings, work / "samples.png")
        times["report"] = time.perf_counter() - clock_start
        times["total"] += times["report"]
        report = build_report(
            settings=settings, seed=seed, quick=quick, times=times, loads=(load_before, os.getloadavg()[0]), pipe=pipe, folder_mb=folder_megabytes(work),
            psnr=psnr, scaling_factor=scaling_factor, vae_curve=vae_curve, decoder_curve=decoder_curve, unet_stats=unet_stats, quality=quality,
            grid_prompts=holdout_captions[: grid_columns(settings)], out_dir=out_dir,
        )
        atomic_write_text(work / "BUILD.md", report)
        make_readable(work)
        replace_folder(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(parts)  # the build is complete: its parts are in out_dir now
    return out_dir


def save_part(vae, parts: Path, folder: Path) -> None:
    """Save ``vae`` as the part ``folder``, renamed into place when whole: a killed save leaves no half VAE."""
    saving = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parts))
    vae.save_pretrained(str(saving))
    os.replace(saving, folder)


def load_part(folder: Path):
    """The VAE saved as the part ``folder``, frozen. Built from its config and weights rather than with
    ``from_pretrained``, which records the folder it read as ``_name_or_path``: the shipped config would name the
    build machine's parts folder."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder)))
    vae.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")))
    return vae.eval().requires_grad_(False)


PART_IN_PROGRESS = "times.part.json"
"""The running part's seconds per phase as of its last save; a part that ends adds them to ``times.json`` itself."""


def fold_killed_part(parts: Path) -> None:
    """A part killed before its end (a machine stop) left its time as of its last save: count it as a part."""
    left = parts / PART_IN_PROGRESS
    if left.is_file():
        add_part_times(parts / "times.json", json.loads(left.read_text()))
        left.unlink()


def add_part_times(path: Path, part: dict[str, float]) -> dict[str, float]:
    """Add this part's seconds per phase to those of the earlier parts in ``path``; the sums, with ``parts`` counted."""
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    summed = {name: earlier.get(name, 0.0) + part.get(name, 0.0) for name in {*earlier, *part} - {"parts"}}
    summed["parts"] = earlier.get("parts", 0) + 1
    atomic_write_text(path, json.dumps(summed))
    return summed


def make_readable(folder: Path) -> None:
    """Temporary folders and atomic writes are private (0700/0600); a shipped model is for everyone to read."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def replace_folder(new: Path, target: Path) -> None:
    """Move the finished ``new`` folder to ``target``, removing an older build only after the move."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ report


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """Per-image variance of the luminance Laplacian: a blur-sensitive sharpness score."""
    luminance = (images * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(luminance, kernel).flatten(1).var(dim=1)


def grid_columns(settings: BuildSettings) -> int:
    """Captions shown in ``samples.png``: :data:`GRID_PROMPTS`, fewer in a quick build."""
    return min(GRID_PROMPTS, settings.report_prompts)


def write_samples(pipe, holdout_images: torch.Tensor, holdout_captions: list[str], settings: BuildSettings, path: Path) -> dict:
    """Sample held-out captions with our DDIM sampler; save the grid and return sharpness relative to real images.

    Grid rows: the real image of the caption, 20-step DDIM (leading), 4-step DDIM (trailing), all at
    CFG :data:`GRID_CFG` and one seed per column, tiles enlarged ×2 (nearest) to be readable.
    """
    denoiser = DiffusersDenoiser.from_pipeline(pipe, architecture="sd15")
    count, shown = settings.report_prompts, grid_columns(settings)
    prompts, seeds = holdout_captions[:count], list(range(count))
    real = holdout_images[:count].float() / 255
    rows, quality = [real[:shown]], {"real_sharpness": float(laplacian_variance(real).mean())}
    for steps, spacing in GRID_SAMPLERS:
        images = generate(denoiser, prompts, seeds, height=RESOLUTION, width=RESOLUTION, steps=steps, spacing=spacing, cfg=GRID_CFG, batch_size=16)
        rows.append(images[:shown])
        quality[f"sharpness_{steps}_{spacing}"] = float(laplacian_variance(images).mean())
    tiles = F.interpolate(torch.cat(rows), scale_factor=2, mode="nearest")
    save_png(grid(tiles, columns=shown), path)
    return quality


def millions(module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def folder_megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (how the command was typed), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build_report(*, settings, seed, quick, times, loads, pipe, folder_mb, psnr, scaling_factor, vae_curve, decoder_curve, unet_stats, quality, grid_prompts, out_dir) -> str:
    """``BUILD.md``: how the model was made and what it measured, in enough detail to rebuild it."""
    preset = next((name for name, value in PRESETS.items() if value == settings), "custom settings")
    command = f"python -m unifl.pocket.models.ldm --out {display_path(out_dir)} --seed {seed}" + (" --quick" if quick else f" --preset {preset}")
    minutes = {k: f"{v / 60:.1f} min" for k, v in times.items() if k != "parts"}
    parts = times.get("parts", 1)
    in_parts = f" — in {parts} parts, each run again with `--resume` (the times below are their sums)" if parts > 1 else ""
    curve = lambda values: ", ".join(f"{v:.4f}" for v in values)  # noqa: E731
    prompt_list = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(grid_prompts))
    sharp = {k: f"{v:.4f}" for k, v in quality.items()}
    decoder_phase = "" if decoder_curve is None else (
        f"; then the decoder alone {settings.decoder_adversarial_steps} steps × {settings.decoder_batch} images against a patch discriminator, adaptive weight × {settings.decoder_adversarial_weight:g}")
    decoder_line = "" if decoder_curve is None else f"\n- Decoder fine-tune's reconstruction loss (L1 + MSE) per tenth: {curve(decoder_curve)}"
    return f"""# Pocket LDM build

Command: `{command}`{' (quick smoke build: not a usable model)' if quick else ''}{in_parts}

Built with torch {torch.__version__}, {torch.get_num_threads()} thread(s) on {os.cpu_count()} × {cpu_name()}
(shared machine: 1-minute load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end).

| phase | wall time |
|---|---|
| render {settings.num_images} training + {settings.num_holdout} held-out images | {minutes['render']} |
| VAE ({settings.vae_crop_steps} steps × {settings.vae_crop_batch} crops of {settings.vae_crop} px, {settings.vae_full_steps} × {settings.vae_full_batch} images{decoder_phase}) + encoding all images | {minutes['vae']} |
| UNet + text encoder ({settings.unet_steps} steps × {settings.unet_batch}) | {minutes['unet']} |
| save + samples + report | {minutes['report']} |
| **total** | **{minutes['total']}** |

## Components

| component | parameters |
|---|---|
| VAE (`AutoencoderKL`, factor {settings.latent_factor}, {RESOLUTION // settings.latent_factor}×{RESOLUTION // settings.latent_factor}×4 latents) | {millions(pipe.vae)} |
| UNet (`UNet2DConditionModel`, sample size {RESOLUTION // settings.latent_factor}, widths {", ".join(map(str, settings.unet_channels))}) | {millions(pipe.unet)} |
| text encoder (`CLIPTextModel`, {TEXT_CONFIG['num_hidden_layers']} layers × {TEXT_CONFIG['hidden_size']}) | {millions(pipe.text_encoder)} |

Folder size: {folder_mb:.1f} MiB (fp32 safetensors).
Data: pocket world stream {seed} (training), stream {HOLDOUT_SEED} (held out), {RESOLUTION} px.

## Measurements

- VAE reconstruction PSNR on {settings.num_holdout} held-out images: **{psnr:.2f} dB**; `scaling_factor` = {scaling_factor:.4f} (1 / std of training latents).
- VAE L1 per tenth of training: {curve(vae_curve)}{decoder_line}
- Denoiser loss (min-SNR-{settings.snr_gamma:g} weighted ε-MSE{'' if settings.high_noise_weight_cap is None else f', below SNR 1 min(1/SNR, {settings.high_noise_weight_cap:g})'}) per tenth of training: {curve(unet_stats['loss_curve'])}
- Held-out ε-MSE: raw weights {unet_stats['val_loss_raw']:.4f}, EMA ({settings.ema_decay}) {unet_stats['val_loss_ema']:.4f}; shipped: **{unet_stats['kept']}**.
- Sharpness (luminance Laplacian variance) over {settings.report_prompts} held-out captions, CFG {GRID_CFG:g}: real {sharp['real_sharpness']},
  20-step DDIM leading {sharp['sharpness_20_leading']}, 4-step DDIM trailing {sharp['sharpness_4_trailing']}.

## samples.png

Columns: the first {len(grid_prompts)} held-out captions (seeds 0–{len(grid_prompts) - 1}). Rows: the real image, 20-step DDIM (leading
spacing), 4-step DDIM (trailing spacing), sampled with `unifl.core.diffusion.sampling.generate` at CFG {GRID_CFG:g}; tiles shown ×2.

{prompt_list}
"""


# -------------------------------------------------------------------------------------------------- CLI


def build_arguments(module: str, doc: str, default_out: Path, what: str) -> argparse.ArgumentParser:
    """The options every pocket build shares (``--out``, ``--seed``, ``--quick``, ``--threads``)."""
    parser = argparse.ArgumentParser(prog=f"python -m unifl.pocket.models.{module}", description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out, help=f"{what} folder to write (replaced when the build finishes)")
    parser.add_argument("--seed", type=int, default=0, help=f"training-data stream and initialisation seed (the shipped {what}: 0)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke build with tiny step counts (not a usable model)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    return parser


def add_part_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--part-hours``, for the builds that run in parts (:mod:`.resumable`)."""
    parser.add_argument("--resume", action="store_true", help="continue the unfinished build whose parts lie beside --out")
    parser.add_argument("--part-hours", type=float, default=2.0, help="stop and save after this many hours; --resume continues (default 2)")


def main(argv: list[str] | None = None) -> Path | None:
    """Build; ``None`` when a part finished before the build did (run again with ``--resume``)."""
    parser = build_arguments("ldm", __doc__, pocket_model_dir(), "pipeline")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full", help="named build settings (default: full, the shipped model's)")
    add_part_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else PRESETS[args.preset]
    try:
        folder = build_pocket_pipeline(args.out, seed=args.seed, quick=args.quick, settings=settings, resume=args.resume, part_hours=args.part_hours)
    except PartFinished as finished:
        print(finished)
        return None
    except FileExistsError as refusal:
        raise SystemExit(str(refusal)) from None
    print(f"wrote {folder}; see {folder / 'BUILD.md'}")
    return folder


if __name__ == "__main__":
    main()
