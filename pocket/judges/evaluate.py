"""Measuring a pocket model with the held-out judges: Fréchet distance, structure IoU, aspect scores.

Every model in a comparison is sampled on the same prompts with the same seeds. The prompts are the
captions of scenes from a seed that no model was trained on (:data:`PROMPT_SEED`); the Fréchet distance
compares against *real* renders of yet another seed (:data:`REAL_SEED`); structure IoU checks each
generated image against the objects of the scene its prompt describes; aspect scores come from the
held-out aspect evaluators. None of these judges is a model UniFL trains against (those use seeds 1/2).
The arena's judges (:mod:`.judges`) are measured too: prompt accuracy against each prompt's scene spec,
and FD/KID in the prompt judge's own feature space (``judge_fd``, ``judge_kid``), version 2 of prompt
accuracy (``prompt_accuracy_v2``: extra objects cost) and the power-spectrum distance to the real renders
(``spectrum``, :mod:`.spectrum`: a blur or a sharpen moves it away from real).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.feedback.loading import load_reward_model
from ..world.degrade import ASPECTS
from ..models.evaluators import embed_images, frechet_distance, structure_iou
from .judges import (
    embed,
    load_prompt_judge,
    prompt_accuracy_from_readings,
    read_scenes,
    realism,
)
from .spectrum import spectrum_distance
from ..world.world import PocketDataset, Scene, WorldConfig

PROMPT_SEED = 202
REAL_SEED = 103


@dataclass
class EvaluationSet:
    """Prompts, seeds and target scenes for generation, and the real-image reference for the FD."""

    prompts: list[str]
    seeds: list[int]
    scenes: list[Scene]
    real_images: torch.Tensor
    real_features: torch.Tensor
    judge_real_features: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def evaluation_set(num_prompts: int = 64, images_per_prompt: int = 4, num_real: int = 1024, resolution: int = 64) -> EvaluationSet:
    """``num_prompts × images_per_prompt`` generations (seed ``i`` for the ``i``-th image) and ``num_real`` real renders."""
    config = WorldConfig(resolution=resolution)
    prompt_world = PocketDataset(num_prompts, PROMPT_SEED, config)
    scenes = [prompt_world.scene(i) for i in range(num_prompts) for _ in range(images_per_prompt)]
    prompts = [prompt_world[i].caption for i in range(num_prompts) for _ in range(images_per_prompt)]
    real_world = PocketDataset(num_real, REAL_SEED, config)
    real_images = torch.stack([real_world[i].image for i in range(num_real)])
    return EvaluationSet(prompts, list(range(len(prompts))), scenes, real_images, embed_images(real_images), embed(real_images, load_prompt_judge()))


class AspectJudges:
    """The four held-out aspect evaluators, loaded once (and the arena's prompt judge beside them)."""

    def __init__(self):
        self.models = {aspect: load_reward_model("pocket-evaluator", aspect) for aspect in ASPECTS}
        self._prompt_judge = None

    @property
    def prompt_judge(self):
        if self._prompt_judge is None:
            self._prompt_judge = load_prompt_judge()
        return self._prompt_judge

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str], batch_size: int = 256) -> dict[str, float]:
        scores = {}
        for aspect, model in self.models.items():
            values = torch.cat([model(images[i : i + batch_size], prompts[i : i + batch_size]) for i in range(0, len(images), batch_size)])
            scores[aspect] = float(values.mean())
        return scores


def measure(images: torch.Tensor, eval_set: EvaluationSet, judges: AspectJudges) -> dict:
    """``{"fd", "structure_iou", "aesthetic": {aspect: mean score}, "prompt_accuracy", "prompt_accuracy_v2",
    "judge_fd", "judge_kid", "spectrum"}`` of images generated for ``eval_set``."""
    if len(images) != len(eval_set):
        raise ValueError(f"{len(images)} images for an evaluation set of {len(eval_set)} prompts")
    judged = realism(embed(images, judges.prompt_judge), eval_set.judge_real_features)
    readings = read_scenes(judges.prompt_judge, images)
    return {
        "fd": frechet_distance(embed_images(images), eval_set.real_features),
        "structure_iou": structure_iou(images, eval_set.scenes),
        "aesthetic": judges(images, eval_set.prompts),
        "prompt_accuracy": prompt_accuracy_from_readings(readings, eval_set.scenes, version=1)["prompt_accuracy"],
        "prompt_accuracy_v2": prompt_accuracy_from_readings(readings, eval_set.scenes, version=2)["prompt_accuracy"],
        "judge_fd": judged["fd"],
        "judge_kid": judged["kid"],
        "spectrum": spectrum_distance(images, eval_set.real_images),
    }


def measure_real(eval_set: EvaluationSet, judges: AspectJudges) -> dict:
    """The same metrics on real renders of the evaluation scenes: the ceiling a perfect model would reach."""
    from ..world.world import render

    config = WorldConfig(resolution=eval_set.real_images.shape[-1])
    real = torch.stack([render(scene, config).image for scene in eval_set.scenes])
    return measure(real, eval_set, judges)
