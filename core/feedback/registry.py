"""Named registries of reward and perception model loaders (ddpo-pytorch style).

Configs name a model by ``kind`` plus a local ``path``; the loader registered under that kind builds
the ``nn.Module``. Other modules (the reward-model loaders, the pocket world, host adapters, a user's
own code) add kinds with the decorators below; :mod:`.loading` loads a model by kind.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

Loader = Callable[[str], nn.Module]

REWARD_MODELS: dict[str, Loader] = {}
PERCEPTION_MODELS: dict[str, Loader] = {}


def register_reward_model(kind: str) -> Callable[[Loader], Loader]:
    def decorator(loader: Loader) -> Loader:
        REWARD_MODELS[kind] = loader
        return loader

    return decorator


def register_perception_model(kind: str) -> Callable[[Loader], Loader]:
    def decorator(loader: Loader) -> Loader:
        PERCEPTION_MODELS[kind] = loader
        return loader

    return decorator
