"""Named registries of reward and perception model loaders (ddpo-pytorch style).

Configs name a model by ``kind`` plus a local ``path``; the loader registered under that kind builds
the ``nn.Module``. Other modules (the reward-model loaders, the pocket world, host adapters, a user's
own code) add kinds with the decorators below. ``module`` is always available: ``path =
"package.module:factory"`` calls ``factory()`` from an importable module, the escape hatch for any
model that satisfies the contract.
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

Loader = Callable[[str], nn.Module]

REWARD_MODELS: dict[str, Loader] = {}
PERCEPTION_MODELS: dict[str, Loader] = {}


class UnknownModelKind(ValueError):
    pass


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


def _load(registry: dict[str, Loader], what: str, kind: str, path: str) -> nn.Module:
    _import_builtin_kinds()
    if kind not in registry:
        raise UnknownModelKind(f"unknown {what} kind {kind!r}; known: {', '.join(sorted(registry))}")
    model = registry[kind](path)
    model.requires_grad_(False)
    return model.eval()


def load_reward_model(kind: str, path: str = "") -> nn.Module:
    """A frozen reward model in eval mode (the trainer unfreezes its own discriminator copy)."""
    return _load(REWARD_MODELS, "reward model", kind, path)


def load_perception_model(kind: str, path: str = "") -> nn.Module:
    return _load(PERCEPTION_MODELS, "perception model", kind, path)


def _from_module(path: str) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"kind 'module' needs path = 'package.module:factory', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)()


def _import_builtin_kinds() -> None:
    """Registration happens on import of the modules that define the kinds; import them lazily."""
    from . import builtin_models  # noqa: F401


register_reward_model("module")(_from_module)
register_perception_model("module")(_from_module)
