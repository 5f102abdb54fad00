"""Mixed precision for one run: autocast, fp16 loss scaling and the gradient checks around the step.

Accelerate keeps its mixed-precision setting in a process-wide singleton that refuses to change, but a
host (ComfyUI, the webui) runs many trainings with different settings in one long-lived process. So the
trainer asks Accelerate only for what it is for (devices, processes, collectives) and keeps the precision
of each run here, with torch's own autocast and ``GradScaler``: the same calls Accelerate would make.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _grad_scaler(device_type: str, enabled: bool):
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device_type == "cuda")  # pragma: no cover (A1111's torch 2.1)


class MixedPrecision:
    """Autocast to ``mixed_precision`` ('no', 'fp16' or 'bf16') on ``device``, with a loss scaler for fp16.

    Each optimizer gets its own scaler (the discriminator steps after the generator, so one scaler could
    not be updated once per iteration for both)."""

    def __init__(self, mixed_precision: str, device: torch.device):
        self.mode, self.device = mixed_precision, device
        self.dtype = DTYPES.get(mixed_precision.replace("no", "fp32"), torch.float32)
        self.scalers: dict[str, object] = {}

    @property
    def enabled(self) -> bool:
        return self.mode != "no"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """A region that autocast must not touch (an fp32 VAE decoding: SDXL's overflows in fp16)."""
        if not self.enabled:
            yield
            return
        with torch.autocast(self.device.type, enabled=False):
            yield

    def scaler(self, name: str):
        if name not in self.scalers:
            self.scalers[name] = _grad_scaler(self.device.type, self.mode == "fp16")
        return self.scalers[name]

    def backward(self, name: str, loss: torch.Tensor) -> None:
        self.scaler(name).scale(loss).backward()

    def unscaled_grad_norm(self, name: str, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], max_norm: float) -> float:
        """Unscale the gradients of ``optimizer`` and clip them to ``max_norm`` (0 = only measure); returns
        the total norm before clipping, which is ``inf``/``nan`` when a gradient is not finite."""
        params = [p for p in params if p.grad is not None]
        self.scaler(name).unscale_(optimizer)
        if not params:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))

    def step(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Apply the step. Under fp16 the scaler skips a step with non-finite gradients (its scale was too
        high) and lowers the scale; the trainer refuses non-finite gradients in every other mode first."""
        scaler = self.scaler(name)
        scaler.step(optimizer)
        scaler.update()

    @property
    def skips_non_finite_steps(self) -> bool:
        return self.mode == "fp16"

    def state_dict(self) -> dict[str, dict]:
        return {name: scaler.state_dict() for name, scaler in self.scalers.items() if scaler.is_enabled()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        for name, values in state.items():
            self.scaler(name).load_state_dict(values)
