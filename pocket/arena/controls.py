"""Post-filter controls: a row's own test images through the cheap filter that best moves them toward real renders.

A sharpen node is free to a user, so a realism claim against a row holds only when it also holds against that
row's control, "<row> + best post-filter" (:func:`.plan.control_name`): the filter and its strength are chosen
*per row* on the validation split (the row's first training seed sampled on the validation prompts, judged
against the validation split's real images), then applied unchanged to the row's test images of every seed.

The filters and the choosing belong to the judges (:class:`PostFilters`: the post-filter registry and
``choose_post_filter``); this module only runs them in the arena's jobs. A checkout whose judges have no
registry runs no controls, and says so in the console and the report.
"""

from __future__ import annotations

from typing import Protocol

import torch


class PostFilters(Protocol):
    """The judges' post-filters, as the arena uses them."""

    def choose(self, images: torch.Tensor, real_images: torch.Tensor) -> dict:
        """The filter and strength that move ``images`` (``[N, 3, H, W]`` in [0, 1]) closest to ``real_images`` on
        the judges' realism: ``{"filter": name, "strength": value, ...}`` (any further keys are reported)."""
        ...

    def apply(self, images: torch.Tensor, choice: dict) -> torch.Tensor:
        """``images`` through the filter ``choice`` names, at its strength."""
        ...


def judge_post_filters() -> PostFilters | None:
    """The judges' post-filter registry, or None where this checkout's judges have none (then no control runs)."""
    from .. import judges

    choose, apply = getattr(judges, "choose_post_filter", None), getattr(judges, "apply_post_filter", None)
    if choose is None or apply is None:
        return None

    class JudgePostFilters:
        def choose(self, images, real_images):
            return choose(images, real_images)

        def apply(self, images, choice):
            return apply(images, choice)

    return JudgePostFilters()
