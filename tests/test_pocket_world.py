"""The pocket world's promises: determinism, exact masks, truthful captions, one-aspect degradations."""

from __future__ import annotations

import colorsys
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from unifl.pocket.world.degrade import ASPECTS, VARIANTS, degradation, degrade, preference_pair
from unifl.pocket.world.world import (
    NUM_CLASSES,
    PALETTE,
    SHAPES,
    LIGHT_WORDS,
    RELATIONS,
    VOCABULARY,
    PocketDataset,
    Scene,
    WorldConfig,
    collate,
    describe,
    item_rng,
    relation,
    render,
    sample_prompts,
    sample_scene,
)

CONFIG = WorldConfig()
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def scenes(count: int, seed: int = 7, config: WorldConfig = CONFIG) -> list[Scene]:
    return [sample_scene(item_rng(seed, i), config) for i in range(count)]


def neutral_light(scene: Scene) -> Scene:
    return replace(scene, lighting=replace(scene.lighting, strength=0.0, shadow=0.0, brightness=1.0, contrast=1.0))


def luminance(image: torch.Tensor) -> torch.Tensor:
    return (image * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)


def laplacian_variance(image: torch.Tensor) -> float:
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(luminance(image)[None, None], kernel).var().item()


def saturation(pixels: torch.Tensor) -> torch.Tensor:
    """HSV saturation of [3, ...] pixels."""
    high, low = pixels.amax(0), pixels.amin(0)
    return (high - low) / high.clamp(min=1e-6)


def light_slope(image: torch.Tensor, semantic: torch.Tensor, direction: str) -> float:
    """Regression slope of background log-luminance towards the ``direction`` side, per image width."""
    ramp = (torch.arange(image.shape[-1]) + 0.5) / image.shape[-1] - 0.5
    towards = -ramp if direction in ("left", "top") else ramp
    grid = (towards[None, :] if direction in ("left", "right") else towards[:, None]).expand_as(semantic)
    t, lum = grid[semantic == 0], luminance(image).clamp(min=1e-3).log()[semantic == 0]
    t = t - t.mean()
    return ((t * (lum - lum.mean())).sum() / (t * t).sum()).item()


# ------------------------------------------------------------------------------------------ determinism


def test_items_are_deterministic_and_independent_of_access_order():
    first, second = PocketDataset(6, seed=3), PocketDataset(6, seed=3)
    later = second[4]
    for index in (0, 4, -2):
        a, b = first[index], second[index]
        assert torch.equal(a.image, b.image) and torch.equal(a.instance_masks, b.instance_masks)
        assert torch.equal(a.semantic_mask, b.semantic_mask) and a.caption == b.caption and a.scene == b.scene
    assert torch.equal(later.image, first[4].image)
    other = PocketDataset(6, seed=4)
    assert all(not torch.equal(first[i].image, other[i].image) for i in range(6))
    assert len({first[i].caption for i in range(6)}) == 6
    with pytest.raises(IndexError):
        first[6]


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_types_and_ranges(resolution):
    config = WorldConfig(resolution=resolution)
    for scene in scenes(20, seed=resolution, config=config):
        sample = render(scene, config)
        count = len(scene.objects)
        assert config.min_objects <= count <= config.max_objects
        assert sample.image.shape == (3, resolution, resolution) and sample.image.dtype == torch.float32
        assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
        assert sample.instance_masks.shape == (count, resolution, resolution)
        assert sample.instance_masks.dtype == torch.bool
        assert sample.instance_labels.dtype == torch.int64 and sample.instance_labels.shape == (count,)
        assert sample.semantic_mask.shape == (resolution, resolution) and sample.semantic_mask.dtype == torch.int64
        assert 0 <= sample.semantic_mask.min() and sample.semantic_mask.max() < NUM_CLASSES


def test_scene_is_resolution_free():
    scene = scenes(1)[0]
    small, large = render(scene, WorldConfig(resolution=32)), render(scene, WorldConfig(resolution=128))
    assert small.caption == large.caption
    down = F.interpolate(large.image[None], size=(32, 32), mode="area")[0]
    assert (down - small.image).abs().mean() < 0.05


def test_collate_keeps_variable_length_masks():
    dataset = PocketDataset(5, seed=1)
    batch = next(iter(DataLoader(dataset, batch_size=5, collate_fn=collate)))
    assert batch["image"].shape == (5, 3, 64, 64) and batch["semantic_mask"].shape == (5, 64, 64)
    assert [m.shape[0] for m in batch["instance_masks"]] == [len(s.objects) for s in batch["scene"]]
    assert batch["caption"] == sample_prompts(5, seed=1)


# ------------------------------------------------------------------------------------------------ masks


def test_masks_are_disjoint_and_make_the_semantic_mask():
    for scene in scenes(60):
        sample = render(scene, CONFIG)
        masks = sample.instance_masks
        assert masks.sum(0).max() <= 1
        expected = (masks.long() * sample.instance_labels[:, None, None]).sum(0)
        assert torch.equal(expected, sample.semantic_mask)
        assert sample.instance_labels.tolist() == [SHAPES.index(o.shape) + 1 for o in scene.objects]


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_mask_areas_match_the_analytic_shape_areas(resolution):
    config = WorldConfig(resolution=resolution)
    alone = 0
    for scene in scenes(80, seed=11, config=config):
        sample = render(scene, config)
        for obj, mask in zip(scene.objects, sample.instance_masks):
            pixels, area = mask.sum().item(), obj.area * resolution**2
            tolerance = 0.06 * area + 3 + 0.1 * math.sqrt(area)  # edge pixels round either way
            assert pixels <= area + tolerance
            assert pixels >= max(config.min_visible_fraction * area, config.min_visible_pixels) - 1e-6
            if len(scene.objects) == 1:  # nothing can occlude it: the mask is the whole shape
                alone += 1
                assert abs(pixels - area) <= tolerance, (obj.shape, obj.size, pixels, area)
    assert alone >= 10


def test_masked_colour_is_the_objects_colour():
    """Under neutral light, each mask's mean colour is nearest its own colour family, not the background."""
    for scene in scenes(120, seed=5):
        sample = render(neutral_light(scene), CONFIG)
        for obj, mask in zip(scene.objects, sample.instance_masks):
            mean = sample.image[:, mask].mean(1).numpy()
            assert math.dist(mean, obj.mean_rgb) < math.dist(mean, scene.background.rgb)
            assert math.dist(mean, obj.mean_rgb) < 0.15


def test_masks_do_not_depend_on_lighting():
    for scene in scenes(10):
        assert torch.equal(render(scene).instance_masks, render(neutral_light(scene)).instance_masks)


def test_removing_an_object_changes_exactly_its_mask_pixels():
    changed = []
    for scene in scenes(40, seed=9):
        sample = render(scene, CONFIG)
        for k, mask in enumerate(sample.instance_masks):
            without = render(replace(scene, objects=scene.objects[:k] + scene.objects[k + 1 :]), CONFIG)
            difference = (without.image - sample.image).abs().amax(0)
            changed.append((difference[mask] > 0.03).float().mean().item())
    assert np.mean(changed) > 0.97  # the rest: pixels whose object lies on a same-coloured one


# --------------------------------------------------------------------------------------------- captions


def test_captions_name_every_object_and_use_only_the_vocabulary():
    assert VOCABULARY == sorted(set(VOCABULARY)) and all(w.isalpha() and w.islower() for w in VOCABULARY)
    vocabulary = set(VOCABULARY)
    for scene in scenes(200, seed=2):
        text = render(scene, CONFIG).caption
        assert set(text.split()) <= vocabulary, text
        for obj in scene.objects:
            assert obj.colour in text and obj.shape in text and describe(obj) in text
        assert f"{scene.background.tone} {scene.background.colour}" in text
        assert text.endswith(f"lit from the {LIGHT_WORDS[scene.lighting.direction]}")
    # The light's words are its own: a denoiser does not learn a word the relations also use (TRIALS.md).
    assert not set(LIGHT_WORDS.values()) & {word for r in RELATIONS for word in r.split()}
    assert {"circle", "square", "triangle", "ring", "star", "cross", "diamond"} <= set(SHAPES)
    assert len(PALETTE) >= 8


def test_caption_relations_agree_with_centres():
    margin = CONFIG.relation_margin
    counts = {"left of": 0, "right of": 0, "above": 0, "below": 0, "and": 0}
    for scene in scenes(300, seed=4):
        text = render(scene, CONFIG).caption
        descriptions = [describe(obj) for obj in scene.objects]
        cursor = len(descriptions[0])
        for a, b, description in zip(scene.objects, scene.objects[1:], descriptions[1:]):
            start = text.index(" " + description, cursor)
            joint, cursor = text[cursor:start].strip(), start + len(description) + 1
            counts[joint] += 1
            dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]  # b relative to a
            if joint == "and":
                assert max(abs(dx), abs(dy)) < margin
            elif joint == "left of":
                assert dx > margin and abs(dx) >= abs(dy)
            elif joint == "right of":
                assert -dx > margin and abs(dx) >= abs(dy)
            elif joint == "above":
                assert dy > margin and abs(dy) > abs(dx)
            else:
                assert -dy > margin and abs(dy) > abs(dx)
    assert all(counts[r] > 5 for r in ("left of", "right of", "above", "below")), counts


def test_prompts_equal_dataset_captions():
    dataset = PocketDataset(8, seed=21)
    assert sample_prompts(8, seed=21) == [dataset[i].caption for i in range(8)]


# ----------------------------------------------------------------------------------------- degradations


def originals(count: int, seed: int = 13):
    return [render(scene, CONFIG) for scene in scenes(count, seed=seed)]


@pytest.mark.parametrize("variant", VARIANTS["detail"])
def test_detail_degradation_removes_high_frequencies_and_keeps_colour(variant):
    for sample in originals(12):
        worse = degrade(sample, "detail", np.random.default_rng(0), 0.6, variant=variant)
        assert laplacian_variance(worse) < 0.75 * laplacian_variance(sample.image)
        assert (worse.mean((1, 2)) - sample.image.mean((1, 2))).abs().max() < 0.02
    gentle, strong = (laplacian_variance(degrade(sample, "detail", np.random.default_rng(0), s, variant=variant))
                      for s in (0.2, 0.9))
    assert strong < gentle


@pytest.mark.parametrize("variant", VARIANTS["lighting"])
def test_lighting_degradation_changes_brightness_statistics_only(variant):
    for sample in originals(12):
        result = degradation(sample, "lighting", np.random.default_rng(0), 0.8, variant=variant)
        before, after = luminance(sample.image), luminance(result.image)
        assert torch.equal(render(result.scene).instance_masks, sample.instance_masks)
        assert result.scene.objects == sample.scene.objects and result.scene.background == sample.scene.background
        slope = lambda image: light_slope(image, sample.semantic_mask, sample.scene.lighting.direction)
        assert slope(sample.image) > 0.15  # the caption's side is brighter
        if variant == "flat":
            assert abs(slope(result.image)) < 0.5 * slope(sample.image)
        elif variant == "reversed":
            assert slope(result.image) < -0.15
        elif variant == "underexposed":
            assert after.mean() < before.mean() - 0.08
        elif variant == "overexposed":
            assert after.mean() > before.mean() + 0.08
        else:
            assert after.std() < 0.6 * before.std()


@pytest.mark.parametrize("variant", VARIANTS["color"])
def test_colour_degradation_changes_object_colours_only(variant):
    changes = []
    for sample in originals(12):
        result = degradation(sample, "color", np.random.default_rng(1), 0.8, variant=variant)
        assert torch.equal(render(result.scene).instance_masks, sample.instance_masks)
        background = sample.semantic_mask == 0
        assert (result.image - sample.image).abs()[:, background].median() == 0
        for before, after, mask in zip(sample.scene.objects, result.scene.objects, sample.instance_masks):
            old, new = sample.image[:, mask], result.image[:, mask]
            if variant == "desaturate":
                if max(before.rgb) - min(before.rgb) > 0.3:
                    changes.append((saturation(old).mean() - saturation(new).mean()).item())
            elif variant == "hue_shift":
                hue_old = colorsys.rgb_to_hls(*before.rgb)[0]
                hue_new = colorsys.rgb_to_hls(*after.rgb)[0]
                changes.append(min(abs(hue_old - hue_new), 1 - abs(hue_old - hue_new)))
                changes.append((new - old).abs().mean().item())
            else:
                changes.append(math.dist(after.rgb, before.rgb))
    assert min(changes) > 0.1, changes


@pytest.mark.parametrize("variant", VARIANTS["layout"])
def test_layout_degradation_moves_objects_and_keeps_their_looks(variant):
    moved, margin = 0, CONFIG.relation_margin
    candidates = [s for s in originals(30) if variant != "pile_up" or len(s.scene.objects) > 1]
    if variant == "mirror":
        candidates = [s for s in candidates if any(f" {r} " in s.caption for r in OPPOSITE)]
    for sample in candidates[:12]:
        result = degradation(sample, "layout", np.random.default_rng(2), 0.8, variant=variant)
        after = render(result.scene)
        for old, new in zip(sample.scene.objects, result.scene.objects):
            assert replace(old, centre=new.centre) == new  # only positions change
        assert result.scene.background == sample.scene.background and result.scene.lighting == sample.scene.lighting
        overlaps = [(a & b).sum().item() / (a | b).sum().item()
                    for a, b in zip(sample.instance_masks, after.instance_masks)]
        moved += min(overlaps) < 0.5  # some object's visible region is mostly elsewhere now
        still_background = (sample.semantic_mask == 0) & (after.semantic_mask == 0)
        assert (result.image - sample.image).abs()[:, still_background].median() == 0
        if variant == "mirror":  # every relation the caption states is now the opposite one
            old_objects, new_objects = sample.scene.objects, result.scene.objects
            pairs = list(zip(old_objects, old_objects[1:], new_objects, new_objects[1:]))
            stated = [(relation(a, b, margin), relation(c, d, margin)) for a, b, c, d in pairs]
            assert any(old for old, _ in stated)
            assert all(new == OPPOSITE[old] for old, new in stated if old)
    assert moved == len(candidates[:12]) >= 5


def test_preference_pairs_are_deterministic_and_differ():
    for aspect in ASPECTS:
        text, better, worse = preference_pair(np.random.default_rng(5), CONFIG, aspect)
        again = preference_pair(np.random.default_rng(5), CONFIG, aspect)
        assert text == again[0] and torch.equal(better, again[1]) and torch.equal(worse, again[2])
        assert better.shape == worse.shape == (3, 64, 64) and (better - worse).abs().mean() > 0.005
        assert set(text.split()) <= set(VOCABULARY)


def test_degradation_rejects_what_does_not_apply():
    single = next(s for s in scenes(40) if len(s.objects) == 1)
    with pytest.raises(ValueError):
        degrade(single, "layout", np.random.default_rng(0), variant="pile_up")
    with pytest.raises(ValueError):
        degrade(single, "sharpness", np.random.default_rng(0))
    with pytest.raises(ValueError):
        degrade(render(single, WorldConfig(resolution=32)), "detail", np.random.default_rng(0))
    drawn = {degradation(single, "layout", np.random.default_rng(i)).variant for i in range(30)}
    assert drawn <= {"corner", "cut_off"}
