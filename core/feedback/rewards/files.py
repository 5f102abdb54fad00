"""The reward-model file: a safetensors state dict with its hinge threshold α_d and provenance in the
metadata (``unifl.kind``, ``unifl.alpha``, ``unifl.aspect``, ``unifl.config``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from ...files import atomic_write_bytes


def save_reward_model(
    model: nn.Module,
    path: str | Path,
    *,
    kind: str,
    alpha: float,
    aspect: str,
    config: Mapping | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write ``model``'s state dict (float32) with its α_d and provenance, atomically.

    ``config`` is JSON-serialisable constructor arguments (stored as ``unifl.config``); ``metadata``
    adds ``unifl.<key>`` entries (numbers and strings, e.g. validation accuracy).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: reward model files are safetensors; name it '*.safetensors'")
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"unifl.kind": kind, "unifl.alpha": repr(float(alpha)), "unifl.aspect": aspect, "unifl.config": json.dumps(dict(config or {}), sort_keys=True)}
    meta |= {f"unifl.{key}": value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()}
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def load_reward_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a reward model file; errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reward model file {path} does not exist; train one (`unifl train-reward`) or fix the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); re-create it") from error
    if "unifl.alpha" not in metadata:
        raise ValueError(f"{path} has no 'unifl.alpha' metadata; it was not written by save_reward_model — re-save it with an alpha")
    return tensors, metadata
