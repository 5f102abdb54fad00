"""CLIP's image preprocessing in torch, so that a reward's gradient reaches the generated pixels.

The CLIP-based scorers were trained on images prepared by a PIL pipeline: OpenAI CLIP, the LAION
aesthetic predictor, PickScore and ImageReward resize the short side to 224 px (bicubic), centre-crop
224 × 224 and normalise with CLIP's mean/std; HPSv2 (OpenCLIP's ``resize_longest_max``) resizes the
long side to 224 and pads the rest with black. ``fit="crop"`` and ``fit="pad"`` reproduce the two.
For the square images Stable Diffusion makes, both are the same single resize.

Differences from PIL, on purpose: the resize is ``F.interpolate`` with ``antialias=True`` (torch's
antialiased bicubic uses PIL's kernel, a = -0.5, widened when downscaling, and has a backward pass);
bicubic overshoot is not clamped to ``[0, 1]`` as PIL's uint8 output is, because a clamp would zero the
gradient of exactly those pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FITS = ("crop", "pad")
MODES = ("bicubic", "bilinear")


def clip_preprocess(
    images: torch.Tensor,
    size: int = 224,
    *,
    fit: str = "crop",
    mode: str = "bicubic",
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """``[B, 3, H, W]`` images in ``[0, 1]`` → ``[B, 3, size, size]`` normalised float32 model input."""
    if fit not in FITS or mode not in MODES:
        raise ValueError(f"fit must be one of {FITS} and mode one of {MODES}, got fit={fit!r}, mode={mode!r}")
    images = images.float()
    height, width = images.shape[-2:]
    if fit == "crop":
        images = centre_crop(_resize(images, _short_side_size(height, width, size), mode), size)
    else:
        images = _pad_to_square(_resize(images, _long_side_size(height, width, size), mode), size)
    mean_t = images.new_tensor(mean).view(1, 3, 1, 1)
    std_t = images.new_tensor(std).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's ``CenterCrop``: the offset rounds half-pixels the same way."""
    height, width = images.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def _short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)``: the short side becomes ``size``, the long one is truncated."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _long_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """OpenCLIP's ``ResizeMaxSize``: the long side becomes ``size``, the short one is rounded."""
    scale = size / max(height, width)
    return round(height * scale), round(width * scale)


def _resize(images: torch.Tensor, target: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == target:
        return images
    return F.interpolate(images, size=target, mode=mode, align_corners=False, antialias=True)


def _pad_to_square(images: torch.Tensor, size: int) -> torch.Tensor:
    pad_h, pad_w = size - images.shape[-2], size - images.shape[-1]
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
