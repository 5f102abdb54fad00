"""Held-out evaluators of the pocket world: judges that UniFL never trains against.

A model optimised with perceptual feedback learns to please *its* perception models, so measuring it
with those same models would reward adversarial pleasing. The evaluators here differ in both data and
design from :mod:`.perception`'s: they are trained on dataset seed 101 (validated on seed 102) instead of
seed 1, with other architectures (a DeepLabV3+-style segmenter instead of the U-Net trunk with its
semantic and SOLO heads, a strided residual encoder instead of the VGG stack), and no gradient of
theirs ever reaches a generator.

* :class:`StructureEvaluator` – semantic segmenter (background + 7 shapes) behind :func:`structure_iou`.
* :class:`EmbeddingEvaluator` – a residual encoder trained to read every attribute of a scene
  (:data:`EVALUATOR_TASK`: per pixel the shape, colour and pattern of the object there, per image the
  object count, background and light; a wider task than the feature net's appearance-only one). Its
  128-d pooled last block (mean and max per channel), :meth:`EmbeddingEvaluator.embed`, plays
  Inception-pool3's part in a Fréchet distance (:func:`frechet_distance`); the texture attributes make
  it sensitive to lost detail.

**Structure IoU** (:func:`structure_iou`) asks, for each object the image was generated for, whether it
is there and well formed:

1. The evaluator labels every pixel (at 64 px, whatever the image size); for an object of shape class ``k`` the candidate regions are the
   8-connected components of the pixels labelled ``k`` with at least :data:`MIN_COMPONENT_PIXELS` pixels
   (the world never shows an object smaller than that).
2. A scene with ``n_k`` objects of class ``k`` takes the ``n_k`` largest components (one per object, so
   two circles are not both credited with one circle's blob); objects without a component score 0.
3. Each component is compared with the ideal shape: the world's own signed-distance template of class
   ``k`` placed at the component's centroid (every pocket shape's area centroid is its centre) with the
   radius that matches the component's area, refined over a few scales (±10 %) and rotations (±0.3 rad;
   the world draws ±0.2), clipped to the frame; the score is the best IoU of component and template.
4. The metric is the mean score over all objects of all images (NaN when there are none).

Position, size and colour are factored out (centroid, area matching): this is about *form* and
*presence*; layout, colour and detail have their own judges. Known limits, by design: it measures
recall, not precision (an extra, uncaptioned object costs nothing), and it sees shapes through a
segmenter that has a learned shape prior. Even perfect renders score below 1 (occlusion, frame
clipping, pixel staircase, segmenter error), so compare against the real-image value for the same
scenes: :func:`structure_iou` of ``render(scene)`` images.

Weights live in ``weights/evaluators/`` next to this module; :mod:`.build_perception` trains them.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Sequence

import numpy as np
import scipy.linalg
import torch
from scipy import ndimage
from torch import nn

from .perception import (
    OBJECT_ATTRIBUTES,
    SCENE_ATTRIBUTES,
    ReadingHeads,
    ReadingTask,
    conv_bn_relu,
    load_weights,
    mean_max_pool,
    model_input,
    shipped_weights,
    upsample_to,
)
from ..world.world import NUM_CLASSES, SHAPES, UNIT_AREA, UNIT_EXTENT, Scene, unit_sdf

MIN_COMPONENT_PIXELS = 8
"""At 64 px: the world's ``min_visible_pixels``, so a smaller blob is noise, not an object."""
_SCALES = (0.9, 1.0, 1.1)
_ROTATIONS = np.linspace(-0.3, 0.3, 7)
_ROTATION_FREE = ("circle", "ring")


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels, dilation=dilation),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class StructureEvaluator(nn.Module):
    """DeepLabV3+-style segmenter: dilated residual encoder to 16 px, ASPP, 32 px decoder, 64 px refinement."""

    kind = "pocket-structure-evaluator"

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 24, stride=2)  # 32 px
        self.low = conv_bn_relu(24, 24)
        self.encoder = nn.Sequential(conv_bn_relu(24, 40, stride=2), ResidualBlock(40), ResidualBlock(40, dilation=2))
        self.aspp = nn.ModuleList([
            nn.Sequential(nn.Conv2d(40, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU()),
            conv_bn_relu(40, 24, dilation=2),
            conv_bn_relu(40, 24, dilation=4),
        ])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(40, 24, 1), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(96, 40, 1, bias=False), nn.BatchNorm2d(40), nn.ReLU())
        self.decoder = conv_bn_relu(40 + 24, 24)
        self.refine = nn.Sequential(conv_bn_relu(24 + 3, 12), nn.Conv2d(12, NUM_CLASSES, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = model_input(images)
        low = self.low(self.stem(x))
        deep = self.encoder(low)
        pooled = self.image_pool(deep).expand(-1, -1, *deep.shape[-2:])
        context = self.project(torch.cat([branch(deep) for branch in self.aspp] + [pooled], 1))
        decoded = self.decoder(torch.cat([upsample_to(context, low), low], 1))
        return self.refine(torch.cat([upsample_to(decoded, x), x], 1))


EVALUATOR_TASK = ReadingTask(tuple(SCENE_ATTRIBUTES), tuple(OBJECT_ATTRIBUTES))
"""The embedding's task: every attribute the world has (shape too, unlike the style-only feature net)."""


class EmbeddingEvaluator(nn.Module):
    """Residual encoder to 8 px; ``embed`` pools its last block (mean and max per channel, 128-d).

    Trained on :data:`EVALUATOR_TASK`: scene attributes from the embedding itself, object attributes
    per pixel from the 16 px block, so the embedding is built on features that know shapes and textures.
    """

    kind = "pocket-embedding-evaluator"
    width = 64
    dimension = 2 * width

    def __init__(self):
        super().__init__()
        self.to16 = nn.Sequential(
            conv_bn_relu(3, 32, stride=2), conv_bn_relu(32, 32),  # 32 px
            conv_bn_relu(32, 48, stride=2), ResidualBlock(48),  # 16 px
        )
        self.to8 = nn.Sequential(conv_bn_relu(48, self.width, stride=2), ResidualBlock(self.width))
        self.reading = ReadingHeads(EVALUATOR_TASK, self.dimension, 48)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` → ``[B, 128]`` embedding for the Fréchet distance."""
        return mean_max_pool(self.to8(self.to16(model_input(images))))

    def read(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The training task: logits per group of :data:`EVALUATOR_TASK`."""
        middle = self.to16(model_input(images))
        return self.reading(mean_max_pool(self.to8(middle)), middle)

    forward = embed


def load_structure_evaluator(path: str = "") -> StructureEvaluator:
    """The structure evaluator from ``path`` (``''``: the shipped weights), frozen."""
    model = load_weights(StructureEvaluator(), path or shipped_weights("evaluators", "structure"))
    return model.requires_grad_(False)


def load_embedding_evaluator(path: str = "") -> EmbeddingEvaluator:
    """The embedding evaluator from ``path`` (``''``: the shipped weights), frozen."""
    model = load_weights(EmbeddingEvaluator(), path or shipped_weights("evaluators", "embedding"))
    return model.requires_grad_(False)


# ------------------------------------------------------------------------------------------------ metrics


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets ``[N, D]``, the FID formula.

    ``‖μa − μb‖² + tr(Σa) + tr(Σb) − 2 tr((Σa Σb)^½)`` in float64. When ``Σa Σb`` is singular enough that
    ``scipy.linalg.sqrtm`` fails (non-finite or inaccurate result), both covariances get ``1e-6 · I``
    added, as pytorch-fid does; a small imaginary part from round-off is dropped, a large one is an
    error. Round-off can push identical sets a hair below zero, so the result is clamped at 0.
    """
    a, b = (np.asarray(torch.as_tensor(f).detach().cpu().double().numpy()) for f in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs two [N, D] feature sets with one D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = _sqrtm_checked(sigma_a @ sigma_b)
    if covmean is None:
        offset = 1e-6 * np.eye(len(sigma_a))
        covmean = _sqrtm_checked((sigma_a + offset) @ (sigma_b + offset))
        if covmean is None:
            raise ValueError("frechet_distance: the covariance product has no accurate square root even with a 1e-6 offset")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: sqrtm has a large imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean)
    return float(max(value, 0.0))


def _sqrtm_checked(matrix: np.ndarray) -> np.ndarray | None:
    """``sqrtm`` or None when it is not finite or not accurate (checked here, so scipy's warning is muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(matrix)
    if not np.isfinite(root).all():
        return None
    error = np.linalg.norm(root @ root - matrix) / max(np.linalg.norm(matrix), 1e-300)
    return root if error < 1e-4 else None


@torch.no_grad()
def embed_images(images: torch.Tensor, evaluator: EmbeddingEvaluator | None = None, batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[N, 128]`` of images ``[N, 3, H, W]``, in batches (shipped evaluator by default)."""
    evaluator = evaluator or load_embedding_evaluator()
    return torch.cat([evaluator.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def structure_iou(
    images: torch.Tensor, scenes: Sequence[Scene], evaluator: StructureEvaluator | None = None
) -> float:
    """Mean template IoU over all captioned objects (0 for a missing one); see the module docstring."""
    scores = object_structure_scores(images, scenes, evaluator)
    return float(np.mean(scores)) if scores else float("nan")


@torch.no_grad()
def object_structure_scores(
    images: torch.Tensor, scenes: Sequence[Scene], evaluator: StructureEvaluator | None = None
) -> list[float]:
    """One score per object of each scene, grouped by class id (see :func:`structure_iou`)."""
    if len(images) != len(scenes):
        raise ValueError(f"structure_iou: {len(images)} images but {len(scenes)} scenes; give the scene of each image")
    evaluator = evaluator or load_structure_evaluator()
    label_maps = torch.cat([evaluator(images[i : i + 256]).argmax(1) for i in range(0, len(images), 256)]).cpu().numpy()
    scores = []
    for label_map, scene in zip(label_maps, scenes):
        for class_id, count in sorted(Counter(SHAPES.index(o.shape) + 1 for o in scene.objects).items()):
            components = _largest_components(label_map == class_id, count)
            scores += [_template_iou(component, SHAPES[class_id - 1]) for component in components]
            scores += [0.0] * (count - len(components))
    return scores


def _largest_components(mask: np.ndarray, count: int) -> list[np.ndarray]:
    labelled, found = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if found == 0:
        return []
    sizes = np.bincount(labelled.ravel())[1:]
    order = [i for i in np.argsort(-sizes, kind="stable")[:count] if sizes[i] >= MIN_COMPONENT_PIXELS]
    return [labelled == i + 1 for i in order]


def _template_iou(component: np.ndarray, shape: str) -> float:
    """Best IoU between a component and the world's template of ``shape`` at its centroid and area.

    Computed on a window holding the component and the largest template tried (clipped to the frame
    like the image itself), so the IoU is exact and the search costs little.
    """
    rows, cols = np.nonzero(component)
    cy, cx = rows.mean() + 0.5, cols.mean() + 0.5
    radius = math.sqrt(len(rows) / UNIT_AREA[shape])
    reach = max(_SCALES) * radius * UNIT_EXTENT[shape] + 1
    height, width = component.shape
    top, bottom = max(0, min(rows.min(), int(cy - reach))), min(height, max(rows.max() + 1, int(math.ceil(cy + reach))))
    left, right = max(0, min(cols.min(), int(cx - reach))), min(width, max(cols.max() + 1, int(math.ceil(cx + reach))))
    window = component[top:bottom, left:right]
    dy = (np.arange(top, bottom, dtype=np.float64) + 0.5 - cy)[:, None]
    dx = (np.arange(left, right, dtype=np.float64) + 0.5 - cx)[None, :]
    rotations = (0.0,) if shape in _ROTATION_FREE else _ROTATIONS
    best = 0.0
    for rotation in rotations:
        c, s = math.cos(rotation), math.sin(rotation)
        u, v = c * dx + s * dy, -s * dx + c * dy
        for scale in _SCALES:
            template = unit_sdf(shape, u / (scale * radius), v / (scale * radius)) < 0
            best = max(best, np.count_nonzero(template & window) / np.count_nonzero(template | window))
    return best
