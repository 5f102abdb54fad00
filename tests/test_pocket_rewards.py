"""Pocket-world aspect rewards: shipped files load through the registry and judge fresh pairs; the build runs."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from unifl.core.config import TrainConfig
from unifl.core.feedback.discriminator import make_discriminator
from unifl.core.feedback.loading import load_reward_model
from unifl.core.feedback.losses import discriminator_loss
from unifl.core.feedback.rewards.files import load_reward_file
from unifl.core.training.reward_models import PreferencePairs, derive_alpha, pair_accuracy, score_pairs
from unifl.pocket.models import rewards as pocket
from unifl.pocket.world.degrade import ASPECTS, preference_pair
from unifl.pocket.world.world import WorldConfig

CONFIG = WorldConfig(resolution=64)
FRESH_PAIRS = 48
# Floors well above chance (50 %) and below what the shipped build measures (rewards/BUILD.md); layout
# is the hardest aspect (its caption-relation variant needs binding words to positions).
FLOORS = {"color": 0.85, "layout": 0.75, "detail": 0.95, "lighting": 0.9}


def fresh_pairs(aspect: str, seed: int, n: int = FRESH_PAIRS) -> PreferencePairs:
    """Pairs from the world's own :func:`preference_pair` on streams the build never drew."""
    triples = [preference_pair(np.random.default_rng([seed, 7919, ASPECTS.index(aspect), i]), CONFIG, aspect) for i in range(n)]
    return PreferencePairs([c for c, _, _ in triples], torch.stack([b for _, b, _ in triples]), torch.stack([w for _, _, w in triples]))


@pytest.fixture(scope="module")
def held_out():
    return {aspect: fresh_pairs(aspect, pocket.HELD_OUT_SEED) for aspect in ASPECTS}


@pytest.mark.parametrize("name", [*ASPECTS, "global"])
def test_shipped_rewards_load_through_the_registry(name):
    model = load_reward_model("pocket-reward", name)
    assert isinstance(model, pocket.AspectReward)
    assert isinstance(model.alpha, float) and np.isfinite(model.alpha)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    _, meta = load_reward_file(pocket.model_file("pocket-reward", name))
    assert float(meta["unifl.alpha"]) == model.alpha and meta["unifl.aspect"] == name


@pytest.mark.parametrize("aspect", ASPECTS)
def test_shipped_rewards_beat_the_floor_on_fresh_held_out_pairs(aspect, held_out):
    assert pair_accuracy(load_reward_model("pocket-reward", aspect), held_out[aspect]) >= FLOORS[aspect]


def test_aspect_rewards_are_decoupled(held_out):
    """Each aspect model's mean margin on another aspect's pairs is under half its margin on its own."""
    for name in ASPECTS:
        model = load_reward_model("pocket-reward", name)
        margins = {aspect: (lambda w, l: (w - l).mean().item())(*score_pairs(model, held_out[aspect])) for aspect in ASPECTS}
        for aspect in ASPECTS:
            if aspect != name:
                assert abs(margins[aspect]) < 0.5 * margins[name], (name, margins)


def test_global_reward_judges_every_aspect(held_out):
    model = load_reward_model("pocket-reward", "global")
    for aspect in ASPECTS:
        assert pair_accuracy(model, held_out[aspect]) >= 0.6, aspect


@pytest.mark.parametrize("aspect", ASPECTS)
def test_shipped_evaluators_are_a_different_architecture_and_judge_validation_pairs(aspect):
    evaluator = load_reward_model("pocket-evaluator", aspect)
    assert isinstance(evaluator, pocket.AspectEvaluator) and isinstance(evaluator.alpha, float)
    assert pair_accuracy(evaluator, fresh_pairs(aspect, pocket.EVALUATOR_VALIDATION_SEED, 32)) >= FLOORS[aspect] - 0.1


def test_alpha_is_near_the_mean_preferred_reward_of_fresh_held_out_pairs(held_out):
    for aspect in ASPECTS:
        model = load_reward_model("pocket-reward", aspect)
        spread = derive_alpha(model, held_out[aspect], 0.9) - derive_alpha(model, held_out[aspect], 0.1)
        assert abs(model.alpha - derive_alpha(model, held_out[aspect])) < 0.5 * spread, aspect


def test_gradients_reach_the_images_at_any_resolution():
    model = load_reward_model("pocket-reward", "lighting")
    pair = fresh_pairs("lighting", 5, 1)
    caption, image = pair.prompts[0], pair.better[:1]
    for side in (32, 64, 96):
        images = torch.nn.functional.interpolate(image, size=(side, side), mode="bilinear").repeat(2, 1, 1, 1).requires_grad_(True)
        scores = model(images, [caption, ""])
        assert scores.shape == (2,)
        scores.sum().backward()
        assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0, side


def test_lighting_reward_reads_the_light_direction_from_the_caption(held_out):
    """A well-lit image scores higher under its true caption than under one naming the opposite side."""
    pairs = held_out["lighting"]
    sideways = [i for i, p in enumerate(pairs.prompts) if p.endswith(("lit from the west", "lit from the east"))]
    true = [pairs.prompts[i] for i in sideways]
    lying = [p.rsplit(" ", 1)[0] + (" east" if p.endswith("west") else " west") for p in true]
    model = load_reward_model("pocket-reward", "lighting")
    images = pairs.better[sideways]
    assert len(sideways) >= 10
    assert (model(images, true) > model(images, lying)).float().mean() >= 0.8


def test_detail_reward_starts_a_sensible_trainable_discriminator(held_out):
    """What stage 2 does: a trainable copy of the detail reward (in eval mode, as make_discriminator leaves it),
    logistic loss on real vs worse images, one step at the default discriminator rate, the one a detail-reward
    discriminator trains with (the pocket preset starts its discriminator from the layout reward, at a tuned rate)."""
    discriminator = make_discriminator(load_reward_model("pocket-reward", "detail"), "all", "detail")
    parameters = [p for p in discriminator.parameters() if p.requires_grad]
    assert sum(p.numel() for p in parameters) > 10_000
    pairs = held_out["detail"]
    real, fake = pairs.better[:16], pairs.worse[:16]
    prompts = list(pairs.prompts[:16])
    loss = discriminator_loss(discriminator(real, prompts), discriminator(fake, prompts))
    assert loss.item() < 2 * np.log(2)  # better than an uninformed discriminator: centred, real above fake
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in parameters)
    assert sum(p.grad.abs().sum() for p in parameters) > 0
    optimizer = torch.optim.AdamW(parameters, lr=TrainConfig().adversarial.discriminator_lr)
    optimizer.step()
    assert discriminator_loss(discriminator(real, prompts), discriminator(fake, prompts)).item() < loss.item()


def test_tokenizer_keeps_word_order_and_handles_unknown_and_empty_prompts():
    a, _ = pocket.tokenize(["a red circle left of a blue square"])
    b, _ = pocket.tokenize(["a blue square left of a red circle"])
    assert sorted(a[0].tolist()) == sorted(b[0].tolist()) and a[0].tolist() != b[0].tolist()
    ids, lengths = pocket.tokenize(["", "a zebra", "a giraffe", "a circle"])
    assert lengths.tolist() == [1, 3, 3, 3]
    assert ids[1].tolist() == ids[2].tolist() != ids[3].tolist()  # unknown words share one id


def test_mirror_left_right_flips_images_and_swaps_caption_words():
    pairs = fresh_pairs("layout", 9, 8)
    pairs = PreferencePairs(pairs.prompts, pairs.better, pairs.worse, torch.ones(8))
    mirrored = pocket.mirror_left_right(pairs, torch.Generator().manual_seed(1))
    assert torch.equal(mirrored.preference, pairs.preference)
    for i in range(8):
        if torch.equal(mirrored.better[i], pairs.better[i]):
            assert mirrored.prompts[i] == pairs.prompts[i]
        else:
            assert torch.equal(mirrored.better[i], pairs.better[i].flip(-1)) and torch.equal(mirrored.worse[i], pairs.worse[i].flip(-1))
            words = pairs.prompts[i].split()
            assert mirrored.prompts[i].split() == [{"left": "right", "right": "left", "west": "east", "east": "west"}.get(w, w) for w in words]


def test_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="needs path"):
        load_reward_model("pocket-reward", "")
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_reward_model("pocket-reward", str(tmp_path / "nothing.safetensors"))
    with pytest.raises(ValueError, match="kind = 'pocket-evaluator'"):
        load_reward_model("pocket-reward", str(pocket.model_file("pocket-evaluator", "color")))


def test_quick_build_writes_every_file_with_configured_alphas(tmp_path):
    report = pocket.main(["--out", str(tmp_path), "--quick", "--alpha-quantile", "detail=0.25"])
    for name in (*ASPECTS, "global"):
        model = load_reward_model("pocket-reward", str(tmp_path / "rewards" / f"{name}.safetensors"))
        assert model.alpha == pytest.approx(report["rewards"]["stats"][name]["alpha"])
    for aspect in ASPECTS:
        assert isinstance(load_reward_model("pocket-evaluator", str(tmp_path / "evaluators" / f"aspect_{aspect}.safetensors")), pocket.AspectEvaluator)
    build_md = (tmp_path / "rewards" / "BUILD.md").read_text()
    assert "--quick" in build_md and "Cross-aspect" in build_md
    # α_d is recomputable from the held-out pairs: the mean (colour) or the asked-for quantile (detail).
    settings = pocket.BuildSettings.quick()
    for aspect, quantile in (("color", None), ("detail", 0.25)):
        held = pocket.generate_pairs(aspect, settings.held_out_pairs, pocket.HELD_OUT_SEED, progress=False).pairs
        model = load_reward_model("pocket-reward", str(tmp_path / "rewards" / f"{aspect}.safetensors"))
        assert model.alpha == pytest.approx(derive_alpha(model, held, quantile), abs=1e-5)
    _, meta = load_reward_file(tmp_path / "rewards" / "detail.safetensors")
    assert meta["unifl.alpha_rule"] == "quantile 0.25"
