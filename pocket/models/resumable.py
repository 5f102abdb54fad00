"""Long pocket builds in resumable parts: a training state saved to disk, and a time limit per part.

A pocket model that can draw its world takes longer to pretrain than one sitting should hold the machine
(hours on 2 CPU cores), so a build runs in *parts*: each part trains until its time limit, saves the whole
training state (weights, EMA, optimizer moments, learning-rate step, the data-order generator, the loss
log) and stops; ``--resume`` loads that state and continues bit for bit where the part stopped, so a build
in five parts gives the same weights as one uninterrupted run. States are safetensors plus a JSON file,
written atomically (a temporary file renamed), so a part killed mid-save leaves the previous state whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save

from ...core.files import atomic_write_bytes, atomic_write_text


class PartFinished(Exception):
    """A part reached its time limit and saved its state; rerun with ``--resume`` to continue."""

    def __init__(self, what: str, step: int, total: int, folder: Path):
        self.step, self.total, self.folder = step, total, folder
        super().__init__(f"{what}: part finished at step {step} of {total}; the state is in {folder}. Run the same command with --resume to continue.")


@dataclass
class PartClock:
    """When the current part must stop (``hours=None``: never) and how often to save in between, so that a
    killed process loses at most ``save_minutes`` of training."""

    hours: float | None = None
    save_minutes: float = 15.0
    started: float = field(default_factory=time.monotonic)
    last_save: float = field(default_factory=time.monotonic)
    on_save: Callable[[], None] | None = None
    """Called after every save (the build records the part's wall time so far: a killed part keeps it)."""

    def out_of_time(self) -> bool:
        return self.hours is not None and time.monotonic() - self.started >= self.hours * 3600

    def save_due(self) -> bool:
        return time.monotonic() - self.last_save >= self.save_minutes * 60

    def saved(self) -> None:
        self.last_save = time.monotonic()
        if self.on_save is not None:
            self.on_save()


def save_training_state(path: Path, *, modules: dict[str, torch.nn.Module], ema: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                        generator: torch.Generator, info: dict) -> None:
    """Everything needed to continue a training loop exactly: ``path.safetensors`` and ``path.json``.

    ``info`` (JSON-able: the step, the loss log, the settings' fingerprint) is written last, so a state whose
    JSON names a step always has the tensors of that step.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{key}": value.detach().contiguous() for key, value in module.state_dict().items()})
    tensors.update({f"ema.{index}": value.contiguous() for index, value in enumerate(ema)})
    optimizer_state = optimizer.state_dict()
    for index, moments in optimizer_state["state"].items():
        tensors.update({f"optimizer.{index}.{key}": torch.as_tensor(value).contiguous() for key, value in moments.items()})
    tensors["generator"] = generator.get_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".safetensors"), save(tensors))
    atomic_write_text(path.with_suffix(".json"), json.dumps({**info, "optimizer_groups": optimizer_state["param_groups"]}, indent=1))


def load_training_state(path: Path, *, modules: dict[str, torch.nn.Module], ema: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                        generator: torch.Generator) -> dict:
    """Restore what :func:`save_training_state` wrote into freshly built objects; returns its ``info``."""
    info = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict({key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)})
    with torch.no_grad():
        for index, value in enumerate(ema):
            value.copy_(tensors[f"ema.{index}"])
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, moment = key.split(".", 2)
            state.setdefault(int(index), {})[moment] = value
    optimizer.load_state_dict({"state": state, "param_groups": info.pop("optimizer_groups")})
    generator.set_state(tensors["generator"])
    return info
