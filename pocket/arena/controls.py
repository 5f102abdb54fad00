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

import importlib.util
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


def post_filters_available() -> bool:
    """Whether this checkout's judges have the post-filter registry (``unifl.pocket.judges.post_filters``)."""
    return importlib.util.find_spec("..judges.post_filters", __package__) is not None


class JudgePostFilters:
    """The judges' registry (:mod:`unifl.pocket.judges.post_filters`) as :class:`PostFilters`: the choice ranks each
    candidate filter and strength by realism in the prompt judge's features (and the spectrum) against the split's
    real images; the candidates' numbers are kept in the choice for the report."""

    def __init__(self, judge_path: str = ""):
        from ..judges.judges import load_prompt_judge

        self.judge = load_prompt_judge(judge_path)

    def choose(self, images: torch.Tensor, real_images: torch.Tensor) -> dict:
        from ..judges.judges import embed
        from ..judges.post_filters import choose_post_filter

        name, strength, table = choose_post_filter(images, lambda x: embed(x, self.judge), embed(real_images, self.judge), real_images=real_images)
        return {"filter": name, "strength": strength, "candidates": table}

    def apply(self, images: torch.Tensor, choice: dict) -> torch.Tensor:
        from ..judges.post_filters import apply_post_filter

        return apply_post_filter(choice["filter"], images, choice["strength"])


def judge_post_filters(judge_path: str = "") -> PostFilters | None:
    """The judges' post-filters, or None where this checkout's judges have none (then no control runs)."""
    return JudgePostFilters(judge_path) if post_filters_available() else None
