"""The pocket world's perception models for PeFL: what UniFL's perceptual feedback trains *against*.

The paper's experts are VGG16 (style), SOLO (structure) and DeepLabV3 (layout), trained on real data.
Here three CPU-sized counterparts are trained on the pocket world (dataset seed 1, validated on seed 2)
by :mod:`.build_perception` and registered as perception kinds:

* ``"pocket-features"`` – :class:`PocketFeatureNet`, a VGG-style stack (conv-BN-ReLU, max-pool)
  trained to read a scene's *appearance* (:data:`STYLE_TASK`): per pixel, the colour and fill pattern of
  the object there (or background), and per image the background's colour, tone and texture and the
  light direction. Those are style facts, so its three ReLU maps (64, 32 and 16 px) carry Gram
  statistics that tell a crisp striped object on a hatched background from a blurred or recoloured one.
* ``"pocket-instance"`` – :class:`PocketInstanceSegmenter`, SOLOv2-style: an S×S = 8×8 grid of
  instance slots over the image (one slot per 8 px cell at 64 px), a category branch giving sigmoid
  scores for the 7 shapes per cell, and a kernel branch giving each cell a dynamic 1×1 kernel that is
  applied to shared mask features (learned features plus a fixed Fourier basis of the coordinates, so a
  linear kernel can localise). :meth:`PocketInstanceSegmenter.assign` is SOLO's centre-cell rule.
* ``"pocket-semantic"`` – :class:`PocketSemanticSegmenter`, a small U-Net: background + 7 shape classes.

The two segmenters share one :class:`SegmentationTrunk` architecture and are trained jointly (one
trunk, two heads, see :class:`~.build_perception.JointSegmenters`), as Panoptic-FPN-style models are:
on two CPU cores a shape classifier needs ~10k images before it clicks, and one joint run pays that
once. Each ships as a self-contained file.

Every model takes ``[B, 3, H, W]`` images in ``[0, 1]`` of any size, resizes them to 64 px and centres
them with torch ops (:func:`model_input`), so PeFL's gradient reaches the pixels.

**Instance label convention.** :func:`~unifl.core.feedback.losses.pefl.instance_segmentation_loss` indexes the
segmenter's class scores with the target labels, so labels are 0-based class indices in ``[0, 7)``:
``SHAPES.index(shape)``. The world's ``instance_labels`` are ``1 + SHAPES.index`` (0 is the semantic
background), so targets built from world samples subtract one: :func:`instance_targets` does that.
Semantic masks keep the world ids (``0`` background, ``k`` = ``SHAPES[k − 1]``), matching the 8 logits.

Weights are safetensors under ``weights/perception/`` next to this module (fp16 on disk, fp32 in
memory); ``path = ""`` loads those, any other path a file written by the same architecture.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ...core.feedback.perception import InstancePrediction
from ...core.feedback.registry import register_perception_model
from .. import WEIGHTS_DIR
from ..world.world import (
    BACKGROUND_COLOURS,
    BACKGROUND_PATTERNS,
    BACKGROUND_TONES,
    LIGHT_DIRECTIONS,
    NUM_CLASSES,
    PALETTE,
    PATTERNS,
    SHAPES,
    Sample,
    Scene,
)

MODEL_RESOLUTION = 64
"""Every pocket perception model sees the image at this size (the world's native training resolution)."""
GRID = 8
"""SOLO's S: instance slots per image side (8 px cells at 64 px, about one cell per small object)."""
NUM_SHAPES = len(SHAPES)
BUILD_COMMAND = "python -m unifl.pocket.models.build_perception --out pocket/weights"

# Fixed input centring: pocket images have mean ≈ 0.5 and spread ≈ 0.25 per channel.
_INPUT_MEAN, _INPUT_SCALE = 0.5, 0.25
BACKGROUND_WEIGHT = 0.2
"""Cross-entropy weight of background pixels when training dense heads: they are ~90 % of the pixels and
easy, so at full weight "background everywhere" is a long plateau; at 0.2 the gradient goes to telling
objects apart (segmenter mIoU 0.35 instead of 0.27 after 4000 training images)."""
# SOLO's centre region: the central ε share of the instance's box decides its positive cells.
_CENTRE_REGION = 0.2

SCENE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "count": ("one", "two", "three"),
    "background_colour": tuple(BACKGROUND_COLOURS),
    "background_tone": tuple(BACKGROUND_TONES),
    "background_pattern": BACKGROUND_PATTERNS,
    "light": LIGHT_DIRECTIONS,
}
"""Scene-reading, image level: one value per scene, read from pooled features (cross-entropy)."""
OBJECT_ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(PALETTE), "pattern": PATTERNS}
"""Scene-reading, per pixel: the value of the object owning the pixel, class ``1 + index`` (0 = background).
Dense labels teach a small CPU-trained net in ~1000 steps what image-level presence labels do not."""


@dataclass(frozen=True)
class ReadingTask:
    """Which scene and object attributes a network learns to read from an image."""

    scene_groups: tuple[str, ...]
    object_groups: tuple[str, ...]


STYLE_TASK = ReadingTask(("background_colour", "background_tone", "background_pattern", "light"), ("colour", "pattern"))
"""The feature net's task: appearance only (colour, texture, light), what Gram statistics should describe."""


# ------------------------------------------------------------------------------------------ shared pieces


def model_input(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` → 64 px, centred, float32; torch ops only, so gradients reach the pixels."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"pocket perception models take RGB images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
    images = images.float()
    if tuple(images.shape[-2:]) != (MODEL_RESOLUTION, MODEL_RESOLUTION):
        shrinking = min(images.shape[-2:]) > MODEL_RESOLUTION
        images = F.interpolate(images, size=MODEL_RESOLUTION, mode="bilinear", align_corners=False, antialias=shrinking)
    return (images - _INPUT_MEAN) / _INPUT_SCALE


def conv_bn_relu(channels_in: int, channels_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def mean_max_pool(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w] → [B, 2C]``: the mean says how much of something there is, the max whether it is
    there at all (a small object is 2 % of the image; its mean activation alone drowns in background)."""
    return torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)


def coordinates(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, 2, h, w]`` pixel-centre coordinates (x, y) in ``(−1, 1)``: CoordConv channels."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width * 2 - 1
    grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)])
    return grid[None].expand(batch, -1, -1, -1)


def reading_targets(
    task: ReadingTask, scene: Scene, instance_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A scene's targets: scene values ``[G_s]`` and object-attribute maps ``[G_o, H, W]``.

    ``instance_masks`` are the world's, one per object in scene order (as :func:`~.world.render` makes them).
    """
    facts = {
        "count": ("one", "two", "three")[len(scene.objects) - 1],
        "background_colour": scene.background.colour,
        "background_tone": scene.background.tone,
        "background_pattern": scene.background.pattern,
        "light": scene.lighting.direction,
    }
    scene_target = torch.tensor([SCENE_ATTRIBUTES[g].index(facts[g]) for g in task.scene_groups])
    maps = torch.zeros(len(task.object_groups), *instance_masks.shape[-2:], dtype=torch.int64)
    for obj, mask in zip(scene.objects, instance_masks.bool()):
        for g, group in enumerate(task.object_groups):
            maps[g][mask] = 1 + OBJECT_ATTRIBUTES[group].index(getattr(obj, group))
    return scene_target, maps


class ReadingHeads(nn.Module):
    """Linear scene head on pooled features, 1×1 object head on a feature map; logits per group."""

    def __init__(self, task: ReadingTask, pooled_channels: int, map_channels: int):
        super().__init__()
        self.task = task
        self.scene_sizes = [len(SCENE_ATTRIBUTES[g]) for g in task.scene_groups]
        self.object_sizes = [1 + len(OBJECT_ATTRIBUTES[g]) for g in task.object_groups]
        self.scene = nn.Linear(pooled_channels, sum(self.scene_sizes))
        self.objects = nn.Conv2d(map_channels, sum(self.object_sizes), 1)

    def forward(self, pooled: torch.Tensor, feature_map: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.scene(pooled).split(self.scene_sizes, 1)), list(self.objects(feature_map).split(self.object_sizes, 1))


def background_weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy with class 0 (background) weighted by :data:`BACKGROUND_WEIGHT`."""
    weights = torch.ones(logits.shape[1], device=logits.device)
    weights[0] = BACKGROUND_WEIGHT
    return F.cross_entropy(upsample_to(logits, labels), labels, weight=weights)


def reading_loss(prediction, scene_targets: torch.Tensor, object_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over groups; object maps are upsampled to the labels and background-weighted."""
    scene_logits, object_logits = prediction
    total = sum(F.cross_entropy(logits, scene_targets[:, g]) for g, logits in enumerate(scene_logits))
    for g, logits in enumerate(object_logits):
        total = total + background_weighted_cross_entropy(logits, object_targets[:, g])
    return total


def reading_accuracy(prediction, scene_targets: torch.Tensor, object_targets: torch.Tensor, task: ReadingTask) -> dict[str, float]:
    """Top-1 per scene group; per object group, pixel accuracy over the pixels of objects."""
    scene_logits, object_logits = prediction
    accuracy = {
        group: float((logits.argmax(1) == scene_targets[:, g]).float().mean())
        for g, (group, logits) in enumerate(zip(task.scene_groups, scene_logits))
    }
    for g, (group, logits) in enumerate(zip(task.object_groups, object_logits)):
        labels, predicted = object_targets[:, g], upsample_to(logits, object_targets).argmax(1)
        accuracy[f"{group}_pixels"] = float((predicted == labels)[labels > 0].float().mean())
    return accuracy


def instance_targets(masks: torch.Tensor, world_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """A world sample's instances as a PeFL structure target: labels shifted to 0-based shape indices."""
    if world_labels.numel() and int(world_labels.min()) < 1:
        raise ValueError("instance_targets expects the world's class ids 1..7 (1 + SHAPES index), got a 0")
    return {"masks": masks, "labels": world_labels.long() - 1}


def sample_instance_targets(samples: Sequence[Sample]) -> list[dict[str, torch.Tensor]]:
    return [instance_targets(s.instance_masks, s.instance_labels) for s in samples]


# -------------------------------------------------------------------------------------------- the models


class PocketFeatureNet(nn.Module):
    """VGG-style stack (conv-BN-ReLU, max-pool); ``forward`` gives the style layers, ``read`` the task."""

    kind = "pocket-features"

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48)):
        super().__init__()
        w1, w2, w3 = widths
        self.block1 = conv_bn_relu(3, w1)  # 64 px
        self.block2 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(w1, w2), conv_bn_relu(w2, w2))  # 32 px
        self.block3 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(w2, w3), conv_bn_relu(w3, w3))  # 16 px
        self.reading = ReadingHeads(STYLE_TASK, 2 * w3, w2 + w3)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        first = self.block1(model_input(images))
        second = self.block2(first)
        return [first, second, self.block3(second)]

    def read(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The supervised task the features were trained for (:data:`STYLE_TASK`): logits per group.

        Object attributes are read at 32 px from the 32 and 16 px layers together: a 4 px stripe
        period survives one max-pool, not two."""
        _, middle, last = self.forward(images)
        return self.reading(mean_max_pool(last), torch.cat([middle, upsample_to(last, middle)], 1))


class SegmentationTrunk(nn.Module):
    """Encoder–decoder shared by the pocket segmenters: centred 64 px input → features at 32 and 8 px.

    The input is pixel-unshuffled (2×2 pixels → 12 channels at 32 px): lossless, and 4× cheaper than
    convolving at 64 px. Encoder to 8 px (dilated, so a cell sees whole large objects), top-down
    decoder with skips back to 32 px.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(12, 24), conv_bn_relu(24, 24))  # 32 px
        self.down1 = nn.Sequential(conv_bn_relu(24, 48, stride=2), conv_bn_relu(48, 48))  # 16 px
        self.down2 = nn.Sequential(conv_bn_relu(48, 64, stride=2), conv_bn_relu(64, 64, dilation=2), conv_bn_relu(64, 64))
        self.up1 = conv_bn_relu(64 + 48, 32)  # 16 px
        self.up2 = conv_bn_relu(32 + 24, 24)  # 32 px

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s32 = self.stem(F.pixel_unshuffle(x, 2))
        s16 = self.down1(s32)
        s8 = self.down2(s16)
        y = self.up1(torch.cat([upsample_to(s8, s16), s16], 1))
        return self.up2(torch.cat([upsample_to(y, s32), s32], 1)), s8


class PocketSemanticSegmenter(nn.Module):
    """Trunk + a 1×1 classifier at 64 px over the upsampled 32 px features and the pixel itself."""

    kind = "pocket-semantic"

    def __init__(self):
        super().__init__()
        self.trunk = SegmentationTrunk()
        self.classifier = nn.Conv2d(24 + 3, NUM_CLASSES, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = model_input(images)
        return self.decode(x, *self.trunk(x))

    def decode(self, x: torch.Tensor, features: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Logits from the centred input and the trunk's outputs (joint training runs the trunk once)."""
        return self.classifier(torch.cat([upsample_to(features, x), x], 1))


class PocketInstanceSegmenter(nn.Module):
    """SOLOv2-style head on the trunk: an 8×8 grid of slots (the trunk's 8 px map), masks at 32 px.

    Slot ``k = row · GRID + col`` is the grid cell ``(row, col)`` and answers for the instance whose
    centre lies in it (:meth:`assign`). Each cell predicts 7 sigmoid class scores and a dynamic 1×1
    kernel; its mask is that kernel applied to shared mask features (learned, with CoordConv inputs,
    plus a fixed Fourier basis of the coordinates so that a linear kernel can localise).
    """

    kind = "pocket-instance"

    def __init__(self, mask_channels: int = 16, fourier_frequencies: tuple[float, ...] = (1.0, 2.0, 4.0)):
        super().__init__()
        self.trunk = SegmentationTrunk()
        self.grid_tower = nn.Sequential(conv_bn_relu(64 + 2, 64), conv_bn_relu(64, 64))
        self.category = nn.Conv2d(64, NUM_SHAPES, 1)
        self.register_buffer("frequencies", torch.tensor(fourier_frequencies) * math.pi, persistent=False)
        self.kernel = nn.Conv2d(64, mask_channels + 4 * len(fourier_frequencies), 1)
        self.mask_tower = nn.Sequential(conv_bn_relu(24 + 2, 24), nn.Conv2d(24, mask_channels, 1))
        nn.init.constant_(self.category.bias, -math.log((1 - 0.01) / 0.01))  # SOLO/RetinaNet prior p = 0.01

    def fourier_basis(self, coords: torch.Tensor) -> torch.Tensor:
        """sin/cos of x and y at a few frequencies: a linear kernel over them can peak anywhere."""
        angles = coords[:, :, None] * self.frequencies[None, None, :, None, None]  # [B, 2, F, h, w]
        return torch.cat([angles.sin(), angles.cos()], 1).flatten(1, 2)

    def forward(self, images: torch.Tensor) -> InstancePrediction:
        x = model_input(images)
        return self.decode(x, *self.trunk(x))

    def decode(self, x: torch.Tensor, features: torch.Tensor, grid: torch.Tensor) -> InstancePrediction:
        """The prediction from the trunk's outputs (joint training runs the trunk once)."""
        batch = features.shape[0]
        tower = self.grid_tower(torch.cat([grid, coordinates(batch, GRID, GRID, grid)], 1))
        class_logits = self.category(tower).flatten(2).transpose(1, 2)  # [B, S·S, 7]
        kernels = self.kernel(tower).flatten(2).transpose(1, 2)  # [B, S·S, D]
        coords = coordinates(batch, *features.shape[-2:], features)
        learned = self.mask_tower(torch.cat([features, coords], 1))
        mask_features = torch.cat([learned, self.fourier_basis(coords)], 1)  # [B, D, 32, 32]
        return InstancePrediction(class_logits, torch.einsum("bkd,bdhw->bkhw", kernels, mask_features))

    @staticmethod
    def assign(targets: Sequence[Mapping]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """SOLO's centre-cell assignment: which grid slots answer for which target instance, per image.

        An instance's candidate cells are those its centre region (the central ``ε = 0.2`` of its box,
        around its mask's centre of mass) touches, kept within the 3×3 cells around the centre cell.
        Every (instance, cell) pair is ranked by the distance of the centre of mass to the cell centre and
        a cell goes to the nearest instance, so no slot is asked for two instances; an instance that
        lost all its cells that way takes the nearest free cell. Empty masks are left unassigned.
        """
        assignments = []
        for target in targets:
            masks = torch.as_tensor(target["masks"]).detach()
            candidates = []  # (distance in cells, cell, instance)
            centres = {}
            for index, mask in enumerate(masks):
                rows, cols = mask.nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                height, width = mask.shape
                cy, cx = (rows.double().mean().item() + 0.5) / height * GRID, (cols.double().mean().item() + 0.5) / width * GRID
                half_h = _CENTRE_REGION * (rows.max().item() + 1 - rows.min().item()) / height * GRID / 2
                half_w = _CENTRE_REGION * (cols.max().item() + 1 - cols.min().item()) / width * GRID / 2
                centre_row, centre_col = min(int(cy), GRID - 1), min(int(cx), GRID - 1)
                centres[index] = (cy, cx)
                row_range = range(max(int(cy - half_h), centre_row - 1, 0), min(int(cy + half_h), centre_row + 1, GRID - 1) + 1)
                col_range = range(max(int(cx - half_w), centre_col - 1, 0), min(int(cx + half_w), centre_col + 1, GRID - 1) + 1)
                for row in row_range:
                    for col in col_range:
                        candidates.append((math.hypot(row + 0.5 - cy, col + 0.5 - cx), row * GRID + col, index))
            owner: dict[int, int] = {}
            for _, cell, index in sorted(candidates):
                owner.setdefault(cell, index)
            for index, (cy, cx) in centres.items():
                if index not in owner.values():
                    free = [c for c in range(GRID * GRID) if c not in owner]
                    owner[min(free, key=lambda c: math.hypot(c // GRID + 0.5 - cy, c % GRID + 0.5 - cx))] = index
            cells = sorted(owner)
            assignments.append((
                torch.tensor(cells, dtype=torch.int64),
                torch.tensor([owner[c] for c in cells], dtype=torch.int64),
            ))
        return assignments


# ------------------------------------------------------------------------------------------ weights files


def save_weights(model: nn.Module, path: str | Path) -> None:
    """fp16 safetensors (floating tensors only; counters stay int64), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (t.half() if t.is_floating_point() else t).detach().contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={"kind": model.kind})
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Fill ``model`` from a file written by :func:`save_weights`; errors say which file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the pocket perception weights with `{BUILD_COMMAND}`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            kind = (handle.metadata() or {}).get("kind")
    except Exception as error:  # safetensors raises its own error types for a foreign or truncated file
        raise ValueError(f"{path} is not a readable safetensors file ({error}); rebuild it with `{BUILD_COMMAND}`") from error
    if kind != model.kind:
        raise ValueError(f"{path} holds a {kind!r} model, not {model.kind!r}; pass the file of the right kind")
    state = load_file(str(path))
    reference = model.state_dict()
    if set(state) != set(reference) or any(state[k].shape != reference[k].shape for k in state):
        raise ValueError(
            f"{path} does not match the current {model.kind} architecture; rebuild it with `{BUILD_COMMAND}`"
        )
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()})
    return model.eval()


def shipped_weights(folder: str, name: str) -> Path:
    return WEIGHTS_DIR / folder / f"{name}.safetensors"


def _loader(model_class: type[nn.Module], name: str):
    def load(path: str = "") -> nn.Module:
        return load_weights(model_class(), path or shipped_weights("perception", name))

    load.__doc__ = f"The {model_class.kind} model from ``path`` (``''``: the shipped weights)."
    return load


load_feature_net = register_perception_model("pocket-features")(_loader(PocketFeatureNet, "features"))
load_instance_segmenter = register_perception_model("pocket-instance")(_loader(PocketInstanceSegmenter, "instance"))
load_semantic_segmenter = register_perception_model("pocket-semantic")(_loader(PocketSemanticSegmenter, "semantic"))


# ------------------------------------------------------------------------------------------------ quality


def mean_iou(pred_logits: torch.Tensor, gt: torch.Tensor, num_classes: int = NUM_CLASSES) -> float:
    """Dataset-level mean IoU: intersections and unions summed over the batch, averaged over the classes
    that occur (in the prediction or the ground truth). Logits are upsampled to the label map's size."""
    if pred_logits.shape[-2:] != gt.shape[-2:]:
        pred_logits = F.interpolate(pred_logits.float(), size=gt.shape[-2:], mode="bilinear", align_corners=False)
    pred = pred_logits.argmax(1).flatten()
    gt = gt.to(pred.device).flatten()
    intersections = torch.bincount(gt[pred == gt], minlength=num_classes)[:num_classes].double()
    unions = (torch.bincount(pred, minlength=num_classes) + torch.bincount(gt, minlength=num_classes))[:num_classes]
    unions = unions.double() - intersections
    occurring = unions > 0
    return float((intersections[occurring] / unions[occurring]).mean())


@torch.no_grad()
def instance_quality(model: PocketInstanceSegmenter, images: torch.Tensor, targets: Sequence[Mapping]) -> dict[str, float]:
    """Over every assigned (slot, GT instance) pair: mask IoU at threshold 0.5 and top-1 class accuracy."""
    prediction = model(images)
    ious, correct = [], []
    for image, (target, (cells, gts)) in enumerate(zip(targets, model.assign(targets))):
        masks = torch.as_tensor(target["masks"]).bool()
        logits = F.interpolate(
            prediction.mask_logits[image, cells][None], size=masks.shape[-2:], mode="bilinear", align_corners=False
        )[0]
        for cell, gt, mask_logits in zip(cells.tolist(), gts.tolist(), logits):
            predicted, truth = mask_logits > 0, masks[gt]
            ious.append(float((predicted & truth).sum()) / max(1.0, float((predicted | truth).sum())))
            correct.append(int(prediction.class_logits[image, cell].argmax()) == int(target["labels"][gt]))
    return {"mask_iou": float(np.mean(ious)), "class_accuracy": float(np.mean(correct))}
