"""What the builds of the pocket model's add-ons share: the pocket ControlNet (:mod:`.controlnet`) and the
pocket motion adapter (:mod:`.motion`).

Both train a new module beside a *frozen* pocket LDM with the plain ε-prediction loss the LDM itself was
pretrained with, so images are encoded and captions embedded once, before training (the frozen VAE and
text encoder give the same answer every epoch). Both are measured with plain diffusers pipelines, the way
a user runs them, and both write a ``BUILD.md`` in the style of :mod:`.ldm`'s.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ...core.diffusion import schedule as sched
from ...core.diffusion.diffusers_denoiser import alphas_cumprod_from_config
from ...core.diffusion.tiny import SD15_SCHEDULER
from ...core.machine import cpu_name
from .ldm import build_arguments, display_path, load_pocket_pipeline, pocket_model_dir

TRAINING_ALPHAS_CUMPROD = alphas_cumprod_from_config(SD15_SCHEDULER)
"""ᾱ of SD1.5's DDPM schedule, the one the pocket LDM was pretrained with."""


def sibling_ldm(out_dir: Path) -> Path | None:
    """The pocket LDM folder next to an add-on's output folder (``weights/ldm`` beside ``weights/controlnet``), if it holds one.

    ``unifl pocket build --out DIR`` builds ``DIR/ldm`` before the add-ons, and an add-on must be trained beside
    the LDM it will be used with; None (the shipped LDM) when there is no pipeline there.
    """
    folder = Path(out_dir).resolve().parent / "ldm"
    return folder if (folder / "model_index.json").is_file() else None


def unet_fingerprint(ldm_folder: str | Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of a pocket LDM's UNet weights: which LDM an add-on was trained beside."""
    folder = Path(ldm_folder) if ldm_folder is not None else pocket_model_dir()
    return hashlib.sha256((folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:16]


def trained_beside_line(ldm_folder: str | Path | None) -> str:
    """The report line naming the LDM an add-on was trained beside; tests compare its fingerprint with the shipped LDM's."""
    folder = Path(ldm_folder) if ldm_folder is not None else pocket_model_dir()
    return f"Trained beside the pocket LDM at `{display_path(folder.resolve())}` (UNet fingerprint `{unet_fingerprint(folder)}`)."


def frozen_pocket_pipeline(path: str | Path | None = None):
    """The pocket LDM (the shipped folder unless ``path`` names another) in eval mode, no gradients anywhere."""
    pipe = load_pocket_pipeline(path)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_latents(pipe, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 images ``[N, 3, H, W]`` → scaled posterior means ``[N, 4, H/4, W/4]``, the latents the UNet denoises."""
    chunks = [pipe.vae.encode(images[i : i + batch].float() / 127.5 - 1.0).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(chunks) * pipe.vae.config.scaling_factor


@torch.no_grad()
def caption_embeddings(pipe, captions: list[str], batch: int = 256) -> torch.Tensor:
    """The text encoder's last hidden states ``[N, tokens, width]``, padded exactly as the pipelines pad prompts."""
    tokenizer = pipe.tokenizer
    chunks = []
    for i in range(0, len(captions), batch):
        ids = tokenizer(captions[i : i + batch], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        chunks.append(pipe.text_encoder(ids, return_dict=False)[0])
    return torch.cat(chunks)


def noised(latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, noise, t)``: one uniformly drawn training timestep per sample (first dimension) and its noise."""
    timesteps = torch.randint(len(TRAINING_ALPHAS_CUMPROD), (len(latents),), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    alpha_bar = sched.signal_level(TRAINING_ALPHAS_CUMPROD, timesteps).float()
    alpha_bar = alpha_bar.view(-1, *([1] * (latents.dim() - 1)))
    return alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise, noise, timesteps


def seeded(seeds: list[int]) -> list[torch.Generator]:
    """One generator per image, so a seed gives the same initial noise in every pipeline and batch size."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def trailing_ddim(pipe):
    """The pipeline's DDIM scheduler with trailing spacing: 4 steps hit timesteps 999, 749, 499, 249 (stage 2's contract)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")


class PhaseClock:
    """Wall seconds per named build phase, and the machine's load at start and end (the machine is shared)."""

    def __init__(self):
        self.started = self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.load_before = os.getloadavg()[0]

    def phase(self, name: str) -> None:
        """Close the running phase under ``name``."""
        now = time.perf_counter()
        self.seconds[name] = now - self.mark
        self.mark = now

    def minutes(self, name: str) -> str:
        return f"{self.seconds[name] / 60:.1f} min"

    def total(self) -> str:
        return f"{(time.perf_counter() - self.started) / 60:.1f} min"

    def machine(self) -> str:
        """The ``Built with`` line of a report."""
        return (f"Built with torch {torch.__version__}, {torch.get_num_threads()} thread(s) on {os.cpu_count()} × {cpu_name()}\n"
                f"(shared machine: 1-minute load average {self.load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).")


def addon_main(argv: list[str] | None, *, module: str, doc: str, default_out: Path, what: str, build: Callable[..., Path]) -> Path:
    """The command line of an add-on build: the shared options plus ``--ldm``, the LDM to train beside."""
    parser = build_arguments(module, doc, default_out, what)
    parser.add_argument("--ldm", type=Path, default=None, help="pocket LDM folder to train beside (default: the ldm folder next to --out, else the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = build(args.out, seed=args.seed, quick=args.quick, ldm_path=args.ldm or sibling_ldm(args.out))
    print(f"wrote {folder}; see {folder / 'BUILD.md'}")
    return folder
