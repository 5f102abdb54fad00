"""The recipe configs (recipes/*.toml) load, name registered kinds, and are what docs/recipes.md tells to download."""

from __future__ import annotations

from pathlib import Path

import pytest
from unifl.core.config import load_config
from unifl.core.feedback.registry import PERCEPTION_MODELS, REWARD_MODELS
from unifl.core.training.preflight import preflight

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


def test_there_is_a_recipe_per_architecture_and_stage():
    assert [p.name for p in RECIPES] == ["sd15-stage1.toml", "sd15-stage2.toml", "sdxl-stage1.toml", "sdxl-stage2.toml"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_a_recipe_uses_the_public_models_the_docs_name(recipe):
    config = load_config(recipe)
    docs = (ROOT / "docs" / "recipes.md").read_text()
    assert config.model.dtype == "bf16" and config.optim.gradient_checkpointing
    assert {r.aspect for r in config.rewards} == {"color", "layout", "detail", "lighting"}
    assert all(r.kind in REWARD_MODELS and r.threshold is not None for r in config.rewards)
    assert not {r.kind for r in config.rewards} & {"colorfulness", "sharpness", "exposure"}, "the statistics are not the recipe"
    if config.stage == "1":
        assert [(p.aspect, p.kind) for p in config.perception] == [("style", "vgg16"), ("structure", "maskrcnn-resnet50-fpn-v2"), ("layout", "deeplabv3-resnet50")]
        assert all(p.kind in PERCEPTION_MODELS for p in config.perception)
    for spec in [*config.rewards, *config.perception]:
        for part in spec.path.split(";"):
            name = Path(part.split("=", 1)[-1]).name
            assert name in docs, f"{recipe.name}: {name} is not in docs/recipes.md"


def test_checking_a_recipe_without_the_files_names_each_missing_one():
    report = preflight(load_config(ROOT / "recipes" / "sd15-stage1.toml"), device="cpu")
    failed = {c.subject for c in report.errors}
    rewards = [f"rewards[{i}] {k}" for i, k in enumerate(["hpsv2 (color)", "pickscore (layout)", "imagereward (detail)", "laion-aesthetic (lighting)"])]
    perception = [f"perception[{i}] {k}" for i, k in enumerate(["vgg16 (style)", "maskrcnn-resnet50-fpn-v2 (structure)", "deeplabv3-resnet50 (layout)"])]
    assert failed == {"model.path", "data.images", *rewards, *perception}
    assert report.memory is not None and "UNet (bf16)" in report.memory.parts  # predicted from the preset's architecture all the same


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_the_ui_defaults_are_the_recipes_models(recipe):
    """The A1111 tab's defaults (core.feedback.public_models) and the recipe files name the same models."""
    from unifl.core.feedback.public_models import PUBLIC_REWARDS

    config = load_config(recipe)
    assert [(r.aspect, r.kind, r.threshold, r.weight) for r in config.rewards] == [(m.aspect, m.kind, m.threshold, m.weight) for m in PUBLIC_REWARDS]
