"""Decoupled aesthetic feedback: one reward model per aesthetic aspect, each pushed up to a threshold.

UniFL splits "aesthetics" into aspects (colour, layout, lighting, detail, …) with a reward model each,
and penalises an aspect only while its reward is below a threshold ``α_d``:
``Σ_d w_d · ReLU(α_d − r_d(x0, c))``. The hinge stops the generator from chasing one reward model
without bound (reward hacking) once a sample is already good enough in that aspect.
"""

from __future__ import annotations

from typing import Mapping

import torch


def decoupled_aesthetic_loss(
    rewards: Mapping[str, torch.Tensor],
    thresholds: Mapping[str, float],
    weights: Mapping[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``Σ_d w_d · mean_b ReLU(α_d − r_d)`` over the aspects in ``rewards`` (each a ``[B]`` tensor).

    Every aspect needs a threshold; an aspect missing from ``weights`` has weight 1. Entries of
    ``thresholds``/``weights`` for aspects not in ``rewards`` are ignored, so one configuration can
    list every aspect while a step scores only some. Returns the total (float32) and, for logging, each
    aspect's unweighted mean hinge, detached.
    """
    if not rewards:
        raise ValueError("decoupled_aesthetic_loss: no rewards given; pass at least one aspect's reward tensor")
    weights = weights or {}
    total = None
    per_aspect: dict[str, torch.Tensor] = {}
    for aspect, reward in rewards.items():
        if aspect not in thresholds:
            raise ValueError(
                f"decoupled_aesthetic_loss: no threshold for aspect {aspect!r}; add it to thresholds "
                f"(known: {sorted(thresholds)})"
            )
        if reward.ndim != 1:
            raise ValueError(
                f"decoupled_aesthetic_loss: reward for aspect {aspect!r} must have shape [B], got {tuple(reward.shape)}"
            )
        hinge = torch.relu(thresholds[aspect] - reward.float()).mean()
        per_aspect[aspect] = hinge.detach()
        weighted = weights.get(aspect, 1.0) * hinge
        total = weighted if total is None else total + weighted
    return total, per_aspect
