"""Loading a reward or perception model by registry kind and local path, frozen and in eval mode.

Importing this module imports :mod:`.builtin`, so the core's own kinds are always registered.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.loading import MODEL_BUILD_LOCK
from . import builtin as _builtin  # noqa: F401  (registers the core's kinds)
from .registry import PERCEPTION_MODELS, REWARD_MODELS, Loader

#: The config's dtype names (``ModelSpec.resolved_dtype``) as torch dtypes.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class UnknownModelKind(ValueError):
    """No loader is registered under the kind a config or node names."""


def _load(registry: dict[str, Loader], what: str, kind: str, path: str, dtype: str | torch.dtype | None) -> nn.Module:
    if kind not in registry:
        raise UnknownModelKind(f"unknown {what} kind {kind!r}; known: {', '.join(sorted(registry))}")
    # Weights a file does not hold (a fresh head, e.g. the one Sharpness grows as a discriminator) are
    # initialised from a fixed seed, not from whatever the global RNG holds, so the same kind and path
    # give the same model every time: two runs with one seed train the same discriminator. The lock:
    # loaders go through diffusers/transformers, which patch torch for the whole process while they build.
    with MODEL_BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = registry[kind](path)
    model.requires_grad_(False)
    return cast_frozen(model, dtype).eval()


def cast_frozen(model: nn.Module, dtype: str | torch.dtype | None) -> nn.Module:
    """Store a frozen model's floating-point weights in ``dtype`` (``"fp32"``/``"fp16"``/``"bf16"`` or a torch dtype).

    ``None`` leaves the model as its loader built it (fp32). Half-precision models are meant to run under
    the training autocast, which casts their fp32 inputs per operation. A model that sets
    ``keeps_fp32 = True`` (one computing box geometry, where bf16's 8-bit mantissa would move boxes by
    pixels) is left in fp32.
    """
    if dtype is None or getattr(model, "keeps_fp32", False):
        return model
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    return model.to(torch_dtype)


def load_reward_model(kind: str, path: str = "", dtype: str | torch.dtype | None = None) -> nn.Module:
    """A frozen reward model in eval mode (the trainer unfreezes its own discriminator copy), stored in ``dtype``."""
    return _load(REWARD_MODELS, "reward model", kind, path, dtype)


def load_perception_model(kind: str, path: str = "", dtype: str | torch.dtype | None = None) -> nn.Module:
    """A frozen perception model in eval mode, stored in ``dtype`` (see :func:`cast_frozen`)."""
    return _load(PERCEPTION_MODELS, "perception model", kind, path, dtype)
