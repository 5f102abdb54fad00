"""Reward models: the contract every scorer satisfies, and the built-in weight-free scorers.

A reward model is an ``nn.Module`` called as ``model(images, prompts) -> scores``: ``images`` BCHW in
``[0, 1]`` (gradients must flow through any resizing/normalisation, so preprocessing is torch code,
never PIL), ``prompts`` a list of strings (ignored by image-only scorers), ``scores`` a float tensor
``[B]``, higher is better. A model may carry ``alpha`` (its hinge threshold α_d, derived from held-out
preference pairs), which the trainer uses when the config gives none.
"""

from .statistics import Colorfulness, Exposure, Sharpness

__all__ = ["Colorfulness", "Exposure", "Sharpness"]
