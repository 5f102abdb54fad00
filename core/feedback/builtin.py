"""The core's own kinds: weight-free ones (statistic rewards, a random-feature style net) defined here, and
the loaders of public models (LAION aesthetic, PickScore, HPSv2, ImageReward, VGG16, DeepLabV3, Mask R-CNN, …) imported
so their decorators register them."""

from __future__ import annotations

import importlib

import torch
from torch import nn

# Imported for their registrations: vgg16, efficientnet-lite0, deeplabv3-*, torchscript, maskrcnn-* (which
# import torchvision only when loading); the reward loaders; clip-reward.
from .perception import loaders, maskrcnn  # noqa: F401
from .registry import register_perception_model, register_reward_model
from .rewards import clip_aspect, hps, imagereward, laion, pickscore  # noqa: F401
from .rewards.statistics import Colorfulness, Exposure, Sharpness

register_reward_model("colorfulness")(lambda path="": Colorfulness())
register_reward_model("sharpness")(lambda path="": Sharpness())
register_reward_model("exposure")(lambda path="": Exposure())


class RandomFeatureNet(nn.Module):
    """A fixed, seeded random conv net whose Gram matrices describe texture.

    Random-weight CNNs are known to carry enough texture statistics for Gram-based synthesis
    (Ustyuzhaninov et al., ICLR 2017), so this is a weight-free stand-in for VGG16 where no VGG weights
    exist. ``path`` may hold an integer seed.
    """

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers, channels = [], 3
        for width in widths:
            conv = nn.Conv2d(channels, width, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / (9 * channels)) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            channels = width
        self.convs = nn.ModuleList(layers)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], images * 2 - 1
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            features.append(x)
            if i + 1 < len(self.convs):
                x = nn.functional.avg_pool2d(x, 2)
        return features


register_perception_model("random-features")(lambda path="": RandomFeatureNet(int(path) if path else 0))


def _from_module(path: str) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"kind 'module' needs path = 'package.module:factory', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)()


# ``path = "package.module:factory"`` calls ``factory()`` from an importable module: the escape hatch for any
# model that satisfies the contract.
register_reward_model("module")(_from_module)
register_perception_model("module")(_from_module)
