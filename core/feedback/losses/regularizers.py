"""Regularisers that keep the fine-tuned model close to what it was.

* The denoising (pre-training) loss on real data, Eq. 1 of the paper, keeps the model a denoiser
  while the feedback losses pull it elsewhere.
* A KL-style term against the base model (the same network with its LoRA switched off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mse(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} must have one shape")
    return F.mse_loss(pred.float(), target.float())


def denoising_loss(model_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean-squared error between the model's raw output and its regression target (float32).

    ``target`` is the noise, ``v`` or ``x0`` according to the model's prediction type; compute it with
    :func:`unifl.core.diffusion.schedule.model_target`.
    """
    return _mse(model_output, target, "denoising_loss")


def base_model_kl(pred: torch.Tensor, base_pred: torch.Tensor) -> torch.Tensor:
    """KL-style divergence from the base model: MSE between the fine-tuned and the base predictions.

    Each model's reverse step is a Gaussian whose mean is set by its prediction and whose variance is
    fixed by the schedule, the same for both. The KL between two Gaussians of equal fixed variance is
    proportional to the squared distance of their means, so up to a constant factor (folded into the
    loss weight) the KL is this MSE. ``base_pred`` is detached: the base model is a fixed reference.
    """
    return _mse(pred, base_pred.detach(), "base_model_kl")
