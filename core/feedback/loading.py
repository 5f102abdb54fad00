"""Loading a reward or perception model by registry kind and local path, frozen and in eval mode.

Importing this module imports :mod:`.builtin`, so the core's own kinds are always registered.
"""

from __future__ import annotations

import torch
from torch import nn

from . import builtin as _builtin  # noqa: F401  (registers the core's kinds)
from .registry import PERCEPTION_MODELS, REWARD_MODELS, Loader


class UnknownModelKind(ValueError):
    """No loader is registered under the kind a config or node names."""


def _load(registry: dict[str, Loader], what: str, kind: str, path: str) -> nn.Module:
    if kind not in registry:
        raise UnknownModelKind(f"unknown {what} kind {kind!r}; known: {', '.join(sorted(registry))}")
    # Weights a file does not hold (a fresh head, e.g. the one Sharpness grows as a discriminator) are
    # initialised from a fixed seed, not from whatever the global RNG holds, so the same kind and path
    # give the same model every time: two runs with one seed train the same discriminator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = registry[kind](path)
    model.requires_grad_(False)
    return model.eval()


def load_reward_model(kind: str, path: str = "") -> nn.Module:
    """A frozen reward model in eval mode (the trainer unfreezes its own discriminator copy)."""
    return _load(REWARD_MODELS, "reward model", kind, path)


def load_perception_model(kind: str, path: str = "") -> nn.Module:
    return _load(PERCEPTION_MODELS, "perception model", kind, path)
