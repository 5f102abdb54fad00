"""Adversarial feedback: a reward model doubles as the discriminator of the one-step generator.

The reward model ``r_a`` scores the (few-step) prediction ``x0'``; the generator maximises that score
while the reward model is trained, as a logistic discriminator, to tell real images from predictions.
That keeps the reward from being hacked (it moves with the generator) and sharpens few-step samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``−mean(r_a(x0', c))``: the generator pushes the raw reward of its predictions up.

    The paper uses the raw reward here, not the non-saturating ``softplus(−r)`` of a standard GAN; kept
    as published. Its gradient does not vanish when the discriminator is confident, and its scale is the
    reward model's own.
    """
    return -fake_scores.float().mean()


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss ``−[log σ(r_real) + log(1 − σ(r_fake))]``, each term batch-averaged.

    Written as ``softplus(−r_real) + softplus(r_fake)``, the same value without the ``log(0)`` that
    the naive form hits for scores of large magnitude. Pass ``fake_scores`` of detached predictions so
    the discriminator step does not reach the generator.
    """
    return discriminator_real_loss(real_scores) + discriminator_fake_loss(fake_scores)


def discriminator_real_loss(real_scores: torch.Tensor) -> torch.Tensor:
    """The real half of :func:`discriminator_loss`, ``mean softplus(−r_real)``."""
    return F.softplus(-real_scores.float()).mean()


def discriminator_fake_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The fake half of :func:`discriminator_loss`, ``mean softplus(r_fake)``: on its own when the
    discriminator step reuses the generator's scores of its predictions."""
    return F.softplus(fake_scores.float()).mean()
