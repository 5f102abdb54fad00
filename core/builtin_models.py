"""Registers the kinds that need no weights file: statistic rewards and a random-feature style net."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_perception_model, register_reward_model
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
from . import perception_models as _perception_models  # noqa: F401,E402  (vgg16, efficientnet-lite0, deeplabv3-*, torchscript)
from .rewards import hps as _hps, imagereward as _imagereward, laion as _laion, pickscore as _pickscore  # noqa: F401,E402
from .pocket import rewards as _pocket_rewards  # noqa: F401,E402  (pocket-reward, pocket-evaluator)
from . import train_reward as _train_reward  # noqa: F401,E402  (clip-reward)
from .pocket import perception as _pocket_perception  # noqa: F401,E402  (pocket-features, pocket-instance, pocket-semantic)
