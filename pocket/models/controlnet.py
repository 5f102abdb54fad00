"""The pocket ControlNet: a diffusers ``ControlNetModel`` that makes the pocket LDM put objects where a segmentation map says.

UniFL LoRAs are meant to work beside ControlNet; on the pocket model that needs a pocket ControlNet, so this
module trains one the standard way (Zhang et al., 2023): ``ControlNetModel.from_unet(pocket unet)`` copies
the UNet's encoder and middle block, its zero convolutions start as a no-op, and it is trained with the
plain ε-prediction MSE of the frozen UNet fed with its residuals, while the UNet, VAE and text encoder stay
frozen. The data are the pocket world's renders of dataset stream ``seed`` (0 for the shipped one), each
with its caption and its control image.

**Control image: the semantic mask, coloured** (:func:`control_images`; black background, one corner of the
RGB cube per shape class), i.e. a segmentation ControlNet. Instance-mask edges were the alternative; at
64 px an outline is a 1 px line, and the conditioning embedding brings the control to the 16×16 latent
grid with strided convolutions, where such a line aliases and a ring's two outlines merge. A filled map
keeps every object's region and its shape class at every scale, and it is what the held-out structure
evaluator predicts (:mod:`.evaluators`), so whether an image follows its control is measured directly:
:func:`control_iou`, the IoU per shape class between the evaluator's map of the generated image and the
control map, on held-out scenes (stream 2), with and without the ControlNet, same prompts and seeds.

The result is saved as a plain diffusers folder (``ControlNetModel.from_pretrained(folder)`` offline) with
``BUILD.md`` and ``samples.png``. Build it with ``python -m unifl.pocket.models.controlnet --out
pocket/weights/controlnet`` (``--quick`` for a seconds-long smoke build), or ``unifl pocket build
--only controlnet``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...core.files import atomic_write_text
from ...core.images import grid, save_png
from ...core.progress import progress_bar
from .addons import PhaseClock, addon_main, caption_embeddings, encode_latents, frozen_pocket_pipeline, noised, seeded, trained_beside_line
from .evaluators import load_structure_evaluator
from .ldm import GRID_CFG, HOLDOUT_SEED, RESOLUTION, LossLog, display_path, folder_megabytes, make_readable, millions, replace_folder, warmup_cosine
from .. import WEIGHTS_DIR
from ..world.world import SHAPES, PocketDataset, WorldConfig

CONTROL_PALETTE = torch.tensor([
    (0.0, 0.0, 0.0),  # background
    (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 1.0),
])
"""Control colour per semantic class id (0 = background, ``k`` = ``SHAPES[k − 1]``): the corners of the RGB cube, far apart."""

CONDITIONING_CHANNELS = (16, 32, 64)
"""The conditioning embedding's widths: two stride-2 convolutions take the 64 px control to the 16 px latent grid (the VAE's factor 4)."""

SAMPLERS = ((20, "leading", GRID_CFG), (4, "trailing", 1.0))
"""(steps, spacing, CFG) measured: the pocket model's usual sampler, and stage 2's 4-step contract."""


@dataclass(frozen=True)
class BuildSettings:
    """Every knob of a build; :data:`FULL` made the shipped ControlNet, :data:`QUICK` is a smoke test."""

    num_images: int
    """Training scenes rendered once from stream ``seed``, with their control images."""
    steps: int
    batch: int
    lr: float
    warmup_steps: int
    caption_dropout: float
    """Share of captions replaced by ``""`` (half, as in the ControlNet paper): with no caption to lean on, the
    ControlNet must read the scene from its control, and it steers the unconditional half of CFG too."""
    num_holdout: int
    """Held-out scenes (stream 2) for the control IoU; the grid shows the first 8."""


FULL = BuildSettings(num_images=4_000, steps=600, batch=16, lr=2e-3, warmup_steps=20, caption_dropout=0.5, num_holdout=64)
QUICK = replace(FULL, num_images=16, steps=3, batch=4, warmup_steps=1, num_holdout=4)
GRID_COLUMNS = 8


def pocket_controlnet_dir() -> Path:
    """The shipped ControlNet folder, ``pocket/weights/controlnet``."""
    return WEIGHTS_DIR / "controlnet"


def load_pocket_controlnet(path: str | Path | None = None):
    """The pocket ControlNet as a diffusers ``ControlNetModel`` (the shipped folder unless ``path`` names another)."""
    from diffusers import ControlNetModel

    folder = Path(path) if path is not None else pocket_controlnet_dir()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no pocket ControlNet there. Build it with `python -m unifl.pocket.models.controlnet --out {folder}`.")
    return ControlNetModel.from_pretrained(str(folder)).eval()


def control_images(semantic_masks: torch.Tensor) -> torch.Tensor:
    """Semantic masks ``[N, H, W]`` (class ids) → control images ``[N, 3, H, W]`` in ``[0, 1]``."""
    return CONTROL_PALETTE[semantic_masks.long()].permute(0, 3, 1, 2).contiguous()


def render_scenes(count: int, seed: int, desc: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (uint8 ``[N, 3, 64, 64]``), semantic masks (uint8 ``[N, 64, 64]``) and captions of stream ``seed``."""
    dataset = PocketDataset(count, seed, WorldConfig(resolution=RESOLUTION))
    images = torch.empty((count, 3, RESOLUTION, RESOLUTION), dtype=torch.uint8)
    masks = torch.empty((count, RESOLUTION, RESOLUTION), dtype=torch.uint8)
    captions = []
    for i in progress_bar(range(count), desc=desc, unit="img", dynamic_ncols=True, mininterval=2):
        sample = dataset[i]
        images[i] = (sample.image * 255).round().to(torch.uint8)
        masks[i] = sample.semantic_mask.to(torch.uint8)
        captions.append(sample.caption)
    return images, masks, captions


# ---------------------------------------------------------------------------------------------- training


def train_controlnet(pipe, latents: torch.Tensor, embeddings: torch.Tensor, masks: torch.Tensor, settings: BuildSettings, seed: int):
    """A ControlNet initialised from ``pipe.unet`` and trained beside it (frozen); returns it and its loss curve."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    empty = caption_embeddings(pipe, [""])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=settings.lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.steps))
    log = LossLog(settings.steps)
    controlnet.train()
    bar = progress_bar(range(settings.steps), desc="ControlNet", dynamic_ncols=True, mininterval=2)
    for step in bar:
        index = torch.randint(len(latents), (settings.batch,), generator=generator)
        context = embeddings[index].clone()
        context[torch.rand(settings.batch, generator=generator) < settings.caption_dropout] = empty
        x_t, noise, timesteps = noised(latents[index], generator)
        down, middle = controlnet(x_t, timesteps, context, controlnet_cond=control_images(masks[index]), return_dict=False)
        prediction = pipe.unet(x_t, timesteps, context, down_block_additional_residuals=down, mid_block_additional_residual=middle, return_dict=False)[0]
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        log.add(step, loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return controlnet.eval().requires_grad_(False), log.curve()


# ----------------------------------------------------------------------------------------------- measure


@torch.no_grad()
def control_iou(images: torch.Tensor, semantic_masks: torch.Tensor, evaluator=None) -> dict[str, float]:
    """How well images ``[N, 3, 64, 64]`` follow their control maps, read by the held-out structure evaluator.

    ``class_iou``: per image, the mean over the shape classes in its map of IoU(evaluator says ``k``, map says
    ``k``), averaged over images. ``foreground_iou``: the same for "any object" against background, which
    credits an object in the right place even when its shape is wrong.
    """
    evaluator = evaluator or load_structure_evaluator()
    predicted = torch.cat([evaluator(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)]).numpy()
    target = semantic_masks.numpy()
    per_class, foreground = [], []
    for labels, truth in zip(predicted, target):
        classes = [k for k in np.unique(truth) if k != 0]
        per_class.append(np.mean([_iou(labels == k, truth == k) for k in classes]) if classes else np.nan)
        foreground.append(_iou(labels != 0, truth != 0))
    return {"class_iou": float(np.nanmean(per_class)), "foreground_iou": float(np.mean(foreground))}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def controlnet_pipeline(pipe, controlnet, scheduler=None):
    """A ``StableDiffusionControlNetPipeline`` sharing the pocket pipeline's components (``scheduler`` replaces its own)."""
    from diffusers import StableDiffusionControlNetPipeline

    components = {**pipe.components, "controlnet": controlnet}
    if scheduler is not None:
        components["scheduler"] = scheduler
    controlled = StableDiffusionControlNetPipeline(**components, requires_safety_checker=False)
    controlled.set_progress_bar_config(disable=True)
    return controlled


def plain_pipeline(pipe, scheduler):
    """A ``StableDiffusionPipeline`` of the pocket pipeline's components with ``scheduler``: the "without ControlNet" side."""
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline(**{**pipe.components, "scheduler": scheduler}, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    return plain


@torch.no_grad()
def generate_images(pipe, prompts: list[str], seeds: list[int], *, steps: int, cfg: float, controls: torch.Tensor | None = None, batch: int = 32) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in ``[0, 1]`` from a plain diffusers pipeline; ``controls`` for a ControlNet pipeline."""
    out = []
    for i in range(0, len(prompts), batch):
        extra = {"image": controls[i : i + batch]} if controls is not None else {}
        result = pipe(prompt=prompts[i : i + batch], num_inference_steps=steps, guidance_scale=cfg, generator=seeded(seeds[i : i + batch]), output_type="pt", **extra)
        out.append(result.images.float().cpu())
    return torch.cat(out)


def measure(pipe, controlnet, images: torch.Tensor, masks: torch.Tensor, captions: list[str]) -> tuple[dict, dict]:
    """Control IoU of real renders (the ceiling), and per sampler of :data:`SAMPLERS` without and with the ControlNet.

    Returns ``(numbers, generated)``, the images keyed like the numbers, for the samples grid.
    """
    from diffusers import DDIMScheduler

    evaluator = load_structure_evaluator()
    controls = control_images(masks)
    seeds = list(range(len(captions)))
    numbers, generated = {"real": control_iou(images.float() / 255, masks, evaluator)}, {}
    for steps, spacing, cfg in progress_bar(SAMPLERS, desc="measure", dynamic_ncols=True):
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing)
        for name, sampler, extra in (("without", plain_pipeline(pipe, scheduler), None), ("with", controlnet_pipeline(pipe, controlnet, scheduler), controls)):
            key = f"{name}_{steps}_{spacing}"
            generated[key] = generate_images(sampler, captions, seeds, steps=steps, cfg=cfg, controls=extra)
            numbers[key] = control_iou(generated[key], masks, evaluator)
    return numbers, generated


def write_samples(images: torch.Tensor, masks: torch.Tensor, generated: dict, path: Path) -> int:
    """``samples.png``: real render, control, then each generated row of :func:`measure`; tiles ×2. Returns the column count."""
    columns = min(GRID_COLUMNS, len(images))
    rows = [images[:columns].float() / 255, control_images(masks[:columns])]
    rows += [generated[f"{name}_{steps}_{spacing}"][:columns] for steps, spacing, _ in SAMPLERS for name in ("without", "with")]
    tiles = F.interpolate(torch.cat(rows), scale_factor=2, mode="nearest")
    save_png(grid(tiles, columns=columns), path)
    return columns


# ------------------------------------------------------------------------------------------------- build


def build_pocket_controlnet(out_dir: str | Path, *, seed: int = 0, quick: bool = False, settings: BuildSettings | None = None, ldm_path: str | Path | None = None) -> Path:
    """Train the pocket ControlNet beside the pocket LDM (``ldm_path``, default the shipped one) and save its folder.

    ``out_dir`` is replaced only once the new folder is complete (``BUILD.md`` and ``samples.png`` included).
    """
    if seed == HOLDOUT_SEED:
        raise ValueError(f"seed {HOLDOUT_SEED} is the held-out data stream of the build report; pick another --seed")
    settings = settings or (QUICK if quick else FULL)
    out_dir = Path(out_dir).resolve()
    clock = PhaseClock()
    pipe, trained_beside = frozen_pocket_pipeline(ldm_path), trained_beside_line(ldm_path)
    images, masks, captions = render_scenes(settings.num_images, seed, "render training set")
    holdout_images, holdout_masks, holdout_captions = render_scenes(settings.num_holdout, HOLDOUT_SEED, "render held-out set")
    latents, embeddings = encode_latents(pipe, images), caption_embeddings(pipe, captions)
    clock.phase("data")

    controlnet, curve = train_controlnet(pipe, latents, embeddings, masks, settings, seed)
    clock.phase("train")

    numbers, generated = measure(pipe, controlnet, holdout_images, holdout_masks, holdout_captions)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))  # same filesystem: the final move is a rename
    try:
        controlnet.save_pretrained(str(work))
        shown = write_samples(holdout_images, holdout_masks, generated, work / "samples.png")
        clock.phase("measure")
        report = build_report(settings=settings, seed=seed, quick=quick, clock=clock, pipe=pipe, controlnet=controlnet, folder_mb=folder_megabytes(work),
                              trained_beside=trained_beside, curve=curve, numbers=numbers, grid_prompts=holdout_captions[:shown], out_dir=out_dir)
        atomic_write_text(work / "BUILD.md", report)
        make_readable(work)
        replace_folder(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def build_report(*, settings, seed, quick, clock, pipe, controlnet, folder_mb, trained_beside, curve, numbers, grid_prompts, out_dir) -> str:
    """``BUILD.md``: how the ControlNet was made and how well generated images follow their control."""
    command = f"python -m unifl.pocket.models.controlnet --out {display_path(out_dir)} --seed {seed}" + (" --quick" if quick else "")
    rows = [f"| real renders of the scenes (ceiling) | – | {numbers['real']['class_iou']:.3f} | {numbers['real']['foreground_iou']:.3f} |"]
    for steps, spacing, cfg in SAMPLERS:
        for name, label in (("without", "pocket LDM alone"), ("with", "pocket LDM + ControlNet")):
            m = numbers[f"{name}_{steps}_{spacing}"]
            rows.append(f"| {label}, {steps}-step DDIM {spacing}, CFG {cfg:g} | {name} | {m['class_iou']:.3f} | {m['foreground_iou']:.3f} |")
    prompt_list = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(grid_prompts))
    sampler_rows = ", ".join(f"{name} ControlNet at {steps}-step DDIM {spacing} CFG {cfg:g}" for steps, spacing, cfg in SAMPLERS for name in ("without", "with"))
    return f"""# Pocket ControlNet build

Command: `{command}`{' (quick smoke build: not a usable model)' if quick else ''}

{clock.machine()}

| phase | wall time |
|---|---|
| load the pocket LDM, render {settings.num_images} training + {settings.num_holdout} held-out scenes, encode images and captions | {clock.minutes('data')} |
| ControlNet ({settings.steps} steps × {settings.batch}, AdamW lr {settings.lr:g}, {settings.caption_dropout:.0%} empty captions) | {clock.minutes('train')} |
| measure + save + samples | {clock.minutes('measure')} |
| **total** | **{clock.total()}** |

## Model

`ControlNetModel.from_unet(pocket unet, conditioning_embedding_out_channels={CONDITIONING_CHANNELS})`: {millions(controlnet)} parameters
(the frozen pocket UNet: {millions(pipe.unet)}). Folder size: {folder_mb:.1f} MiB (fp32 safetensors).
Control image: the scene's semantic mask coloured by shape class (background black; {', '.join(f'{s} {tuple(int(c) for c in CONTROL_PALETTE[i + 1].tolist())}' for i, s in enumerate(SHAPES))}).
Use it with `StableDiffusionControlNetPipeline(**pocket_pipeline.components, controlnet=ControlNetModel.from_pretrained(folder))`.
{trained_beside}
Data: pocket world stream {seed} (training), stream {HOLDOUT_SEED} (held out), {RESOLUTION} px.

## Measurements

- Training loss (ε-MSE) per tenth of training: {', '.join(f'{v:.4f}' for v in curve)}
- Control IoU on {settings.num_holdout} held-out scenes (their captions as prompts, seeds 0–{settings.num_holdout - 1}, the same in every row),
  read by the held-out structure evaluator: per shape class present (class IoU) and object-vs-background (foreground IoU):

| images | ControlNet | class IoU ↑ | foreground IoU ↑ |
|---|---|---|---|
{chr(10).join(rows)}

## samples.png

Columns: the first {len(grid_prompts)} held-out scenes. Rows: the real render, its control image, then {sampler_rows}; tiles shown ×2.

{prompt_list}
"""


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> Path:
    return addon_main(argv, module="controlnet", doc=__doc__, default_out=pocket_controlnet_dir(), what="ControlNet", build=build_pocket_controlnet)


if __name__ == "__main__":
    main()
