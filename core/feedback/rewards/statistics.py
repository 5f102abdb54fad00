"""Weight-free, differentiable image statistics usable as aspect rewards.

They need no download and no training, which makes them the honest default wherever no learned reward
model exists (tests, the tiny demo), and a sanity baseline next to learned ones. Each returns one score
per image, higher is better.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class Colorfulness(nn.Module):
    """Hasler & Süsstrunk's colourfulness (2003) on ``[0, 1]`` images: spread and mean of the opponent channels."""

    alpha = 0.25

    def forward(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        r, g, b = images.float().unbind(dim=1)
        rg, yb = r - g, 0.5 * (r + g) - b
        spread = (rg.flatten(1).var(dim=1) + yb.flatten(1).var(dim=1) + 1e-8).sqrt()
        mean = (rg.flatten(1).mean(dim=1) ** 2 + yb.flatten(1).mean(dim=1) ** 2 + 1e-8).sqrt()
        return spread + 0.3 * mean


class Sharpness(nn.Module):
    """Log energy of the luminance Laplacian: blur and missing fine detail lower it.

    It also carries a small learnable residual head whose last layer starts at zero: as a frozen reward
    it is exactly the statistic, and as the stage-2 discriminator (initialised from the detail reward,
    as in the paper) it has parameters with which to adapt to the generator online.
    """

    alpha = -6.0

    def __init__(self):
        super().__init__()
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("kernel", kernel.view(1, 1, 3, 3), persistent=False)
        self.head = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(16, 1, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        images = images.float()
        lap = F.conv2d(luminance(images), self.kernel.to(images.device))
        statistic = (lap.pow(2).flatten(1).mean(dim=1) + 1e-8).log()
        return statistic + self.head(images * 2 - 1).flatten(1).mean(dim=1)


class Exposure(nn.Module):
    """Well-exposed and contrasted: penalises mean luminance far from mid-grey, rewards its spread."""

    alpha = 0.0

    def forward(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        y = luminance(images.float()).flatten(1)
        return y.std(dim=1) - (y.mean(dim=1) - 0.5).abs()
