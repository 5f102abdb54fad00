"""The pocket motion adapter: a diffusers ``MotionAdapter`` (AnimateDiff) that turns the pocket LDM into a tiny video model.

UniFL LoRAs are meant to work beside AnimateDiff; on the pocket model that needs pocket motion modules, so
this module trains them the AnimateDiff way (Guo et al., 2024): temporal transformer layers after every
block of the *frozen* image UNet, attending across frames at each latent pixel, trained alone with the
plain ε-prediction MSE on short clips (one timestep per clip, independent noise per frame).

**The adapter's config matches the pocket UNet** (:func:`motion_adapter_config` of the UNet it is built beside), as
``UNetMotionModel.from_unet2d`` requires: the same ``block_out_channels`` and one motion layer per block
(its ``layers_per_block``; up blocks get one more, as the UNet's do). ``UNetMotionModel`` builds its temporal
layers with the UNet's ``norm_num_groups`` whatever the adapter says, so the adapter declares the same 8
groups, or its config would describe another network than the one that runs. Heads are 32 channels wide at
every level, like the UNet's own attention. There is no motion module in the middle block (AnimateDiff v1
had none either): the 4×4 level already has one in ``down_blocks.2`` and ``up_blocks.0``, and leaving it out
keeps the file at 5.8 MB. Every motion module's ``proj_out`` starts at zero (AnimateDiff's
``zero_initialize``), so the untrained adapter *is* the image model applied frame by frame, which is the
"without" of the measurement.

**Pocket clips** (:func:`pocket_clip`): a scene of the world's stream ``seed`` whose objects each translate at
their own constant velocity (:data:`SPEED_PX` pixels per frame in a random direction, slowed where needed so
that every object stays inside the frame), background and lighting fixed, every frame drawn by
``world.render`` with exact masks; the caption is the scene's, which describes the middle of the clip.

**Measured**: temporal consistency of clips generated for held-out captions (stream 2) with the trained
adapter and with the zero one, same prompts and seeds: the mean absolute change between consecutive frames
(real clips move a little; independent frames flicker a lot), and the IoU of consecutive frames' object
masks as read by the held-out structure evaluator (objects that stay themselves while they move).

The result is a plain diffusers folder (``MotionAdapter.from_pretrained(folder)`` offline; use it with
``AnimateDiffPipeline(**pocket_pipeline.components, motion_adapter=adapter)``) with ``BUILD.md`` and
``samples.png``. Build it with ``python -m unifl.pocket.models.motion --out pocket/weights/motion_adapter``
(``--quick`` for a seconds-long smoke build), or ``unifl pocket build --only motion``.
"""

from __future__ import annotations

import math
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
from .ldm import GRID_CFG, HOLDOUT_SEED, RESOLUTION, UNET_CONFIG, LossLog, display_path, folder_megabytes, make_readable, millions, replace_folder, warmup_cosine
from .. import WEIGHTS_DIR
from ..world.world import PocketDataset, Scene, WorldConfig, caption, render

FRAMES = 8
"""Frames per training clip, and per clip the build measures."""
SPEED_PX = (0.5, 1.5)
"""Object speed range in pixels per frame at 64 px: 3.5–10.5 px over a clip, a third of the smallest object to a large one's radius."""
def motion_adapter_config(unet_config) -> dict:
    """The adapter of a pocket UNet of ``unet_config`` (a dict or a diffusers config): its widths, layers and groups,
    so an adapter built beside a rebuilt base with other widths still fits it."""
    return dict(
        block_out_channels=tuple(unet_config["block_out_channels"]),
        motion_layers_per_block=unet_config["layers_per_block"],
        motion_transformer_layers_per_block=1,
        motion_norm_num_groups=unet_config["norm_num_groups"],
        motion_num_attention_heads=tuple(width // 32 for width in unet_config["block_out_channels"]),
        motion_max_seq_length=16,  # trained on 8-frame clips; the sinusoidal frame positions go to 16 (AnimateDiffPipeline's default)
        use_motion_mid_block=False,
    )


MOTION_ADAPTER_CONFIG = motion_adapter_config(UNET_CONFIG)
"""The adapter of the v1 pocket UNet (the shipped one)."""
SAMPLERS = ((20, "leading", GRID_CFG), (4, "trailing", 1.0))
"""(steps, spacing, CFG) measured: the pocket model's usual sampler, and stage 2's 4-step contract."""


@dataclass(frozen=True)
class BuildSettings:
    """Every knob of a build; :data:`FULL` made the shipped adapter, :data:`QUICK` is a smoke test."""

    num_clips: int
    """Training clips of :data:`FRAMES` frames, rendered once from stream ``seed``."""
    steps: int
    batch: int
    """Clips per step (each of :data:`FRAMES` frames)."""
    lr: float
    warmup_steps: int
    caption_dropout: float
    num_holdout: int
    """Held-out clips (stream 2) measured; the grid shows the first 3."""


FULL = BuildSettings(num_clips=800, steps=450, batch=4, lr=2e-3, warmup_steps=20, caption_dropout=0.1, num_holdout=12)
QUICK = replace(FULL, num_clips=4, steps=3, batch=2, warmup_steps=1, num_holdout=1)
GRID_CLIPS = 3


def pocket_motion_adapter_dir() -> Path:
    """The shipped adapter folder, ``pocket/weights/motion_adapter``."""
    return WEIGHTS_DIR / "motion_adapter"


def load_pocket_motion_adapter(path: str | Path | None = None):
    """The pocket motion adapter as a diffusers ``MotionAdapter`` (the shipped folder unless ``path`` names another)."""
    from diffusers import MotionAdapter

    folder = Path(path) if path is not None else pocket_motion_adapter_dir()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no pocket motion adapter there. Build it with `python -m unifl.pocket.models.motion --out {folder}`.")
    return MotionAdapter.from_pretrained(str(folder)).eval()


def new_motion_adapter(seed: int = 0, unet_config=None):
    """An untrained adapter for a UNet of ``unet_config`` (default: the v1 pocket UNet, :data:`MOTION_ADAPTER_CONFIG`)
    whose motion modules are exact no-ops (zero ``proj_out``)."""
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter = MotionAdapter(**(MOTION_ADAPTER_CONFIG if unet_config is None else motion_adapter_config(unet_config)))
    with torch.no_grad():
        for name, module in adapter.named_modules():
            if name.endswith("proj_out"):
                module.weight.zero_()
                module.bias.zero_()
    return adapter


# ------------------------------------------------------------------------------------------------- clips


def pocket_clip(scene: Scene, rng: np.random.Generator, frames: int = FRAMES, resolution: int = RESOLUTION) -> list[Scene]:
    """``frames`` scenes in which each object of ``scene`` moves at its own constant velocity; ``scene`` is the middle.

    Each velocity is drawn uniformly from :data:`SPEED_PX` (pixels per frame at ``resolution``) in a random
    direction, then scaled down, if needed, so the object's bounding circle stays inside the frame over the
    whole clip (the world places objects that way too).
    """
    half = (frames - 1) / 2
    velocities = []
    for obj in scene.objects:
        speed, angle = rng.uniform(*SPEED_PX) / resolution, rng.uniform(0.0, 2 * math.pi)
        velocity = np.array([speed * math.cos(angle), speed * math.sin(angle)])
        reach = obj.extent + 0.02
        room = np.array([min(c - reach, 1.0 - reach - c) for c in obj.centre]).clip(min=0.0)
        travel = np.abs(velocity) * half
        velocities.append(velocity * min([1.0] + [r / t for r, t in zip(room, travel) if t > 0]))
    return [
        replace(scene, objects=tuple(replace(obj, centre=tuple(float(c + v * (f - half)) for c, v in zip(obj.centre, velocity)))
                                     for obj, velocity in zip(scene.objects, velocities)))
        for f in range(frames)
    ]


def render_clips(count: int, seed: int, desc: str, frames: int = FRAMES) -> tuple[torch.Tensor, list[str]]:
    """Clips of stream ``seed`` as uint8 ``[N, frames, 3, 64, 64]``, and their captions.

    Clip ``i`` moves the scene of item ``i`` of the stream, its velocities drawn from a generator of its own
    (``[seed, i, 1]``, independent of the scene's ``[seed, i]``), so a clip depends only on ``(seed, i)``.
    """
    config = WorldConfig(resolution=RESOLUTION)
    dataset = PocketDataset(count, seed, config)
    clips = torch.empty((count, frames, 3, RESOLUTION, RESOLUTION), dtype=torch.uint8)
    captions = []
    for i in progress_bar(range(count), desc=desc, unit="clip", dynamic_ncols=True, mininterval=2):
        scene = dataset.scene(i)
        for f, moved in enumerate(pocket_clip(scene, np.random.default_rng([seed, i, 1]), frames)):
            clips[i, f] = (render(moved, config).image * 255).round().to(torch.uint8)
        captions.append(caption(scene, config))
    return clips, captions


# ---------------------------------------------------------------------------------------------- training


def train_motion_adapter(pipe, latents: torch.Tensor, embeddings: torch.Tensor, settings: BuildSettings, seed: int):
    """An adapter trained inside ``UNetMotionModel.from_unet2d(pipe.unet)`` with the UNet frozen; returns it and its loss curve.

    ``latents`` are clips ``[N, frames, 4, 16, 16]``, ``embeddings`` their captions' text-encoder states.
    """
    from diffusers import UNetMotionModel

    adapter = new_motion_adapter(seed, pipe.unet.config)
    model = UNetMotionModel.from_unet2d(pipe.unet, adapter)
    model.freeze_unet2d_params()
    params = [p for p in model.parameters() if p.requires_grad]
    empty = caption_embeddings(pipe, [""])
    frames = latents.shape[1]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.steps))
    log = LossLog(settings.steps)
    model.train()
    bar = progress_bar(range(settings.steps), desc="motion adapter", dynamic_ncols=True, mininterval=2)
    for step in bar:
        index = torch.randint(len(latents), (settings.batch,), generator=generator)
        context = embeddings[index].clone()
        context[torch.rand(settings.batch, generator=generator) < settings.caption_dropout] = empty
        x_t, noise, timesteps = noised(latents[index], generator)  # one timestep per clip
        prediction = model(x_t.transpose(1, 2), timesteps, context.repeat_interleave(frames, 0), return_dict=False)[0].transpose(1, 2)
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        log.add(step, loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    for ours, theirs in ((adapter.down_blocks, model.down_blocks), (adapter.up_blocks, model.up_blocks)):
        for block, trained in zip(ours, theirs):
            block.motion_modules.load_state_dict(trained.motion_modules.state_dict())
    return adapter.eval().requires_grad_(False), log.curve()


# ----------------------------------------------------------------------------------------------- measure


def consecutive_difference(clips: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames of clips ``[N, F, 3, H, W]`` in ``[0, 1]``."""
    return float((clips[:, 1:] - clips[:, :-1]).abs().mean())


@torch.no_grad()
def consecutive_object_iou(clips: torch.Tensor, evaluator=None) -> float:
    """Mean IoU of consecutive frames' object masks (any shape class vs background), read by the structure evaluator."""
    evaluator = evaluator or load_structure_evaluator()
    frames = clips.flatten(0, 1)
    objects = torch.cat([evaluator(frames[i : i + 256]).argmax(1) != 0 for i in range(0, len(frames), 256)]).view(*clips.shape[:2], *clips.shape[-2:])
    before, after = objects[:, :-1], objects[:, 1:]
    union = (before | after).flatten(2).sum(-1)
    iou = torch.where(union > 0, (before & after).flatten(2).sum(-1) / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))
    return float(iou.mean())


def animatediff_pipeline(pipe, adapter, scheduler=None):
    """An ``AnimateDiffPipeline`` over the pocket pipeline's components (``scheduler`` replaces its own)."""
    from diffusers import AnimateDiffPipeline

    animated = AnimateDiffPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                                   motion_adapter=adapter, scheduler=scheduler or pipe.scheduler)
    animated.set_progress_bar_config(disable=True)
    return animated


@torch.no_grad()
def generate_clips(animated, prompts: list[str], seeds: list[int], *, steps: int, cfg: float, frames: int = FRAMES, batch: int = 8) -> torch.Tensor:
    """Clips ``[N, frames, 3, H, W]`` in ``[0, 1]`` from an ``AnimateDiffPipeline``, one seed per clip."""
    out = []
    for i in range(0, len(prompts), batch):
        result = animated(prompt=prompts[i : i + batch], num_frames=frames, num_inference_steps=steps, guidance_scale=cfg,
                          generator=seeded(seeds[i : i + batch]), output_type="pt")
        out.append(result.frames.float().cpu())
    return torch.cat(out)


def measure(pipe, adapter, real_clips: torch.Tensor, captions: list[str]) -> tuple[dict, dict]:
    """Consistency of real clips, and per sampler of :data:`SAMPLERS` without (zero adapter) and with the trained adapter.

    Returns ``(numbers, generated)``, the clips keyed like the numbers, for the samples grid.
    """
    from diffusers import DDIMScheduler

    evaluator = load_structure_evaluator()
    real = real_clips.float() / 255
    numbers = {"real": {"difference": consecutive_difference(real), "object_iou": consecutive_object_iou(real, evaluator)}}
    generated, seeds = {}, list(range(len(captions)))
    for steps, spacing, cfg in progress_bar(SAMPLERS, desc="measure", dynamic_ncols=True):
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing)
        for name, candidate in (("without", new_motion_adapter(unet_config=pipe.unet.config)), ("with", adapter)):
            key = f"{name}_{steps}_{spacing}"
            generated[key] = generate_clips(animatediff_pipeline(pipe, candidate, scheduler), captions, seeds, steps=steps, cfg=cfg, frames=real.shape[1])
            numbers[key] = {"difference": consecutive_difference(generated[key]), "object_iou": consecutive_object_iou(generated[key], evaluator)}
    return numbers, generated


def write_samples(real_clips: torch.Tensor, generated: dict, path: Path) -> int:
    """``samples.png``: per clip, the real clip then each generated row of :func:`measure`, frames left to right; tiles ×2."""
    count = min(GRID_CLIPS, len(real_clips))
    rows = []
    for i in range(count):
        rows.append(real_clips[i].float() / 255)
        rows += [generated[f"{name}_{steps}_{spacing}"][i] for steps, spacing, _ in SAMPLERS for name in ("without", "with")]
    tiles = F.interpolate(torch.cat(rows), scale_factor=2, mode="nearest")
    save_png(grid(tiles, columns=real_clips.shape[1]), path)
    return count


# ------------------------------------------------------------------------------------------------- build


def build_pocket_motion_adapter(out_dir: str | Path, *, seed: int = 0, quick: bool = False, settings: BuildSettings | None = None, ldm_path: str | Path | None = None) -> Path:
    """Train the pocket motion adapter beside the pocket LDM (``ldm_path``, default the shipped one) and save its folder.

    ``out_dir`` is replaced only once the new folder is complete (``BUILD.md`` and ``samples.png`` included).
    """
    if seed == HOLDOUT_SEED:
        raise ValueError(f"seed {HOLDOUT_SEED} is the held-out data stream of the build report; pick another --seed")
    settings = settings or (QUICK if quick else FULL)
    out_dir = Path(out_dir).resolve()
    clock = PhaseClock()
    pipe, trained_beside = frozen_pocket_pipeline(ldm_path), trained_beside_line(ldm_path)
    clips, captions = render_clips(settings.num_clips, seed, "render training clips")
    holdout_clips, holdout_captions = render_clips(settings.num_holdout, HOLDOUT_SEED, "render held-out clips")
    latents = encode_latents(pipe, clips.flatten(0, 1)).unflatten(0, clips.shape[:2])
    embeddings = caption_embeddings(pipe, captions)
    clock.phase("data")

    adapter, curve = train_motion_adapter(pipe, latents, embeddings, settings, seed)
    clock.phase("train")

    numbers, generated = measure(pipe, adapter, holdout_clips, holdout_captions)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))  # same filesystem: the final move is a rename
    try:
        adapter.save_pretrained(str(work))
        shown = write_samples(holdout_clips, generated, work / "samples.png")
        clock.phase("measure")
        report = build_report(settings=settings, seed=seed, quick=quick, clock=clock, adapter=adapter, folder_mb=folder_megabytes(work),
                              trained_beside=trained_beside, curve=curve, numbers=numbers, grid_prompts=holdout_captions[:shown], out_dir=out_dir)
        atomic_write_text(work / "BUILD.md", report)
        make_readable(work)
        replace_folder(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def build_report(*, settings, seed, quick, clock, adapter, folder_mb, trained_beside, curve, numbers, grid_prompts, out_dir) -> str:
    """``BUILD.md``: how the adapter was made and how consistent the clips it generates are."""
    command = f"python -m unifl.pocket.models.motion --out {display_path(out_dir)} --seed {seed}" + (" --quick" if quick else "")
    rows = [f"| real clips of the captions' scenes | – | {numbers['real']['difference']:.4f} | {numbers['real']['object_iou']:.3f} |"]
    for steps, spacing, cfg in SAMPLERS:
        for name, label in (("without", "zero adapter (frames independent)"), ("with", "trained adapter")):
            m = numbers[f"{name}_{steps}_{spacing}"]
            rows.append(f"| {label}, {steps}-step DDIM {spacing}, CFG {cfg:g} | {name} | {m['difference']:.4f} | {m['object_iou']:.3f} |")
    prompt_list = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(grid_prompts))
    sampler_rows = ", ".join(f"{name} the adapter at {steps}-step DDIM {spacing} CFG {cfg:g}" for steps, spacing, cfg in SAMPLERS for name in ("without", "with"))
    config = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in adapter.config.items() if k in MOTION_ADAPTER_CONFIG)
    return f"""# Pocket motion adapter build

Command: `{command}`{' (quick smoke build: not a usable model)' if quick else ''}

{clock.machine()}

| phase | wall time |
|---|---|
| load the pocket LDM, render {settings.num_clips} training + {settings.num_holdout} held-out clips of {FRAMES} frames, encode frames and captions | {clock.minutes('data')} |
| motion modules ({settings.steps} steps × {settings.batch} clips × {FRAMES} frames, AdamW lr {settings.lr:g}, UNet frozen) | {clock.minutes('train')} |
| measure + save + samples | {clock.minutes('measure')} |
| **total** | **{clock.total()}** |

## Model

`MotionAdapter({config})`: {millions(adapter)} parameters. Folder size: {folder_mb:.1f} MiB (fp32 safetensors).
Use it with `AnimateDiffPipeline(vae, text_encoder, tokenizer, unet=pocket unet, motion_adapter=MotionAdapter.from_pretrained(folder), scheduler)`.
{trained_beside}
Data: pocket clips ({FRAMES} frames, objects moving {SPEED_PX[0]}–{SPEED_PX[1]} px per frame) of world stream {seed} (training), stream {HOLDOUT_SEED} (held out), {RESOLUTION} px.

## Measurements

- Training loss (ε-MSE) per tenth of training: {', '.join(f'{v:.4f}' for v in curve)}
- Temporal consistency of {settings.num_holdout} clips generated for held-out captions (seeds 0–{settings.num_holdout - 1}, the same in every row):
  mean absolute change between consecutive frames (pixels in [0, 1]; the real clips' value is the target, more is flicker)
  and IoU of consecutive frames' object masks read by the held-out structure evaluator:

| clips | adapter | frame-to-frame change | frame-to-frame object IoU ↑ |
|---|---|---|---|
{chr(10).join(rows)}

## samples.png

Per held-out caption below, {2 * len(SAMPLERS) + 1} rows: the real clip, then {sampler_rows}; frames left to right, tiles shown ×2.

{prompt_list}
"""


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> Path:
    return addon_main(argv, module="motion", doc=__doc__, default_out=pocket_motion_adapter_dir(), what="adapter", build=build_pocket_motion_adapter)


if __name__ == "__main__":
    main()
