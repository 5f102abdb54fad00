"""A UniFL LoRA beside ControlNet and AnimateDiff, on the pocket model, with nothing but plain diffusers.

A UniFL LoRA is an ordinary kohya LoRA of the UNet (:mod:`unifl.core.lora.kohya`), so any pipeline built on
that UNet can load it with ``pipe.load_lora_weights(path)``. :func:`downstream_grids` shows it on the
pocket world: the pocket LDM with the pocket ControlNet (:mod:`.controlnet`) in a
``StableDiffusionControlNetPipeline``, and with the pocket motion adapter (:mod:`.motion`) in an
``AnimateDiffPipeline``, each sampled without and with the LoRA at stage 2's contract (DDIM, trailing
spacing, CFG 1), on held-out scenes (world stream 2), same seeds in both rows. It also measures what the
LoRA does to each add-on's job: how well images follow their control (control IoU) and how steady clips are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from ...core.images import grid, save_png
from ..models.addons import frozen_pocket_pipeline, trailing_ddim
from ..models.controlnet import control_images, control_iou, controlnet_pipeline, generate_images, load_pocket_controlnet, render_scenes
from ..models.evaluators import load_structure_evaluator
from ..models.ldm import HOLDOUT_SEED
from ..models.motion import FRAMES, animatediff_pipeline, consecutive_difference, consecutive_object_iou, generate_clips, load_pocket_motion_adapter

CONTROL_SCENES = 16
"""Held-out scenes whose control IoU is measured; the grid shows the first ``num_prompts``."""
MEASURED_CLIPS = 4
"""Held-out captions whose clips' steadiness is measured; the grid shows the first ``num_clips``."""


@dataclass
class DownstreamResult:
    """What :func:`downstream_grids` wrote and measured."""

    grids: dict[str, Path]
    """``"controlnet"`` and ``"animatediff"`` → PNG path."""
    metrics: dict[str, float]
    """``control_class_iou_{without,with}_lora``, ``control_foreground_iou_…``, ``frame_change_…``, ``frame_object_iou_…``."""
    prompts: dict[str, list[str]] = field(default_factory=dict)
    """The prompts of each grid's columns (ControlNet) or row pairs (AnimateDiff), in order."""
    seconds: float = 0.0


def lora_modules_in_file(path: str | Path) -> int:
    """How many layers a kohya LoRA file adapts (one ``lora_down.weight`` each)."""
    with safe_open(str(path), framework="pt") as handle:
        return sum(key.endswith(".lora_down.weight") for key in handle.keys())


def adapted_layers(module: torch.nn.Module) -> int:
    """How many layers of ``module`` carry a loaded peft LoRA."""
    return sum(1 for layer in module.modules() if getattr(layer, "lora_A", None) and len(layer.lora_A) > 0)


def load_lora_checked(pipe, lora_path: str | Path) -> None:
    """``pipe.load_lora_weights(lora_path)``, then a check that every layer in the file found its UNet layer."""
    pipe.load_lora_weights(str(lora_path))
    expected, applied = lora_modules_in_file(lora_path), adapted_layers(pipe.unet)
    if applied != expected:
        raise RuntimeError(f"{lora_path}: {type(pipe).__name__} applied {applied} of the {expected} LoRA layers in the file")


def downstream_grids(lora_path: str | Path, out_dir: str | Path, *, steps: int = 4, seed: int = 0, num_prompts: int = 4, num_clips: int = 2) -> DownstreamResult:
    """Sample the pocket ControlNet and AnimateDiff pipelines without and with the LoRA at ``lora_path``; write two grids.

    ``grid_controlnet.png``: columns are ``num_prompts`` held-out scenes; rows their control image, without
    the LoRA, with the LoRA. ``grid_animatediff.png``: for each of ``num_clips`` held-out captions a row
    without and a row with the LoRA, :data:`~.motion.FRAMES` frames left to right. Tiles are shown ×2. All
    sampling is ``steps``-step DDIM with trailing spacing and CFG 1; image ``i`` uses seed ``seed + i``.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = frozen_pocket_pipeline()
    scheduler = trailing_ddim(pipe)
    controlled = controlnet_pipeline(pipe, load_pocket_controlnet(), scheduler)
    animated = animatediff_pipeline(pipe, load_pocket_motion_adapter(), scheduler)  # converts the UNet before any LoRA is loaded

    _, masks, captions = render_scenes(max(CONTROL_SCENES, num_prompts), HOLDOUT_SEED, "held-out scenes")
    controls = control_images(masks)
    clip_prompts = captions[: max(MEASURED_CLIPS, num_clips)]
    image_seeds = [seed + i for i in range(len(captions))]
    evaluator = load_structure_evaluator()
    images, clips, metrics = {}, {}, {}
    for lora in ("without", "with"):
        if lora == "with":
            load_lora_checked(controlled, lora_path)
            load_lora_checked(animated, lora_path)
        images[lora] = generate_images(controlled, captions, image_seeds, steps=steps, cfg=1.0, controls=controls)
        clips[lora] = generate_clips(animated, clip_prompts, image_seeds[: len(clip_prompts)], steps=steps, cfg=1.0)
        iou = control_iou(images[lora], masks, evaluator)
        metrics[f"control_class_iou_{lora}_lora"] = iou["class_iou"]
        metrics[f"control_foreground_iou_{lora}_lora"] = iou["foreground_iou"]
        metrics[f"frame_change_{lora}_lora"] = consecutive_difference(clips[lora])
        metrics[f"frame_object_iou_{lora}_lora"] = consecutive_object_iou(clips[lora], evaluator)

    control_rows = torch.cat([controls[:num_prompts], images["without"][:num_prompts], images["with"][:num_prompts]])
    clip_rows = torch.cat([clips[lora][i] for i in range(num_clips) for lora in ("without", "with")])
    grids = {
        "controlnet": save_png(grid(_enlarged(control_rows), columns=num_prompts), out / "grid_controlnet.png"),
        "animatediff": save_png(grid(_enlarged(clip_rows), columns=FRAMES), out / "grid_animatediff.png"),
    }
    prompts = {"controlnet": captions[:num_prompts], "animatediff": clip_prompts[:num_clips]}
    return DownstreamResult(grids, metrics, prompts, round(time.perf_counter() - started, 1))


def _enlarged(tiles: torch.Tensor) -> torch.Tensor:
    return F.interpolate(tiles, scale_factor=2, mode="nearest")
