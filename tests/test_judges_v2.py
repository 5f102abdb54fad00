"""The prompt judge, version 2: what was not asked costs.

Version 1 (``prompt_accuracy(..., version=1)``, kept for comparison) credits each prompted object with the
best of the six most confident finds and counts objects in one check of 8–10, so clutter scores: random
4–5-object scenes beat random 1–3-object scenes against the same prompts, and adding two objects to the right
scene costs it little more than the count check. ``test_version_1_let_clutter_score`` pins that down on
rendered scenes (the old code's failure); the other tests show version 2 scoring the right scene above the
right scene with extra objects, an empty scene and other prompts' scenes, and no credit for clutter.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from unifl.pocket.arena.plan import SPLITS
from unifl.pocket.judges.build_judges import build_rule_v2, reference_scenes
from unifl.pocket.judges.judges import (
    CHECKS_V2,
    MIN_SCORE_GRID_V2,
    RULE_V2,
    FoundObject,
    Reading,
    load_prompt_judge,
    match_v2,
    per_prompt_accuracy,
    prompt_accuracy_from_readings,
    prompt_checks_v2,
    prompt_scores_v2,
    read_scenes,
)
from unifl.pocket.models.perception import shipped_weights
from unifl.pocket.world.world import PocketDataset, relation, render

PROMPTS = 32


def _scene(objects: int, stated_relation: bool = False):
    world = PocketDataset(300, SPLITS["validation"].prompt_seed)
    for i in range(300):
        scene = world.scene(i)
        if len(scene.objects) == objects and (not stated_relation or relation(scene.objects[0], scene.objects[1], 0.12)):
            return scene
    raise AssertionError(f"no {objects}-object scene in 300")


def _truth(scene, score: float = 0.9) -> list[FoundObject]:
    return [FoundObject(o.shape, o.colour, o.size, o.pattern, o.centre, 50, score) for o in scene.objects]


def _reading(scene, found) -> Reading:
    return Reading(tuple(found), scene.background.tone, scene.lighting.direction)


def test_version_2_charges_extra_objects_to_precision_and_missing_ones_to_recall():
    scene = _scene(2, stated_relation=True)
    truth = _truth(scene)
    assert prompt_checks_v2(scene, _reading(scene, truth)) == {name: 1.0 for name in CHECKS_V2}

    stranger = FoundObject("star" if scene.objects[0].shape != "star" else "cross", "white", "large", "solid", (0.5, 0.5), 50, 0.95)
    extra = prompt_checks_v2(scene, _reading(scene, [*truth, stranger]))
    assert extra["count"] == 0.0 and extra["shape"] == extra["colour"] == extra["size"] == pytest.approx(2 * 2 / (3 + 2))
    assert extra["relation"] == 1.0 and extra["tone"] == 1.0  # the asked part is still right

    missing = prompt_checks_v2(scene, _reading(scene, truth[:1]))
    assert missing["count"] == 0.0 and missing["shape"] == pytest.approx(2 * 1 / (1 + 2)) and missing["relation"] == 0.0

    scores = prompt_scores_v2([_reading(scene, [*truth, stranger]), _reading(scene, truth[:1])], [scene, scene])
    assert scores["precision"] == pytest.approx(3 / 4) and scores["recall"] == pytest.approx(3 / 4)
    assert scores["extra_objects"] == 0.5 and scores["missing_objects"] == 0.5 and scores["all_correct"] == 0.0


def test_version_2_ignores_finds_below_the_frozen_cut_and_matches_one_to_one():
    scene = _scene(2)
    faint = replace(_truth(scene)[0], score=RULE_V2.min_score - 0.01)
    assert prompt_checks_v2(scene, _reading(scene, [*_truth(scene), faint]))["count"] == 1.0

    twin = replace(scene, objects=(scene.objects[0], replace(scene.objects[0], centre=scene.objects[1].centre)))
    one = _truth(twin)[:1]
    matched = match_v2(twin, one)
    assert sum(m is not None for m in matched) == 1  # one find is credited to one of two identical asks, not both
    assert prompt_checks_v2(twin, _reading(twin, one))["shape"] == pytest.approx(2 / 3)


def test_versions_share_a_reading_and_per_prompt_scores_average_to_the_accuracy():
    scenes = [_scene(1), _scene(2), _scene(3)]
    readings = [_reading(s, _truth(s)[:-1] if i else _truth(s)) for i, s in enumerate(scenes)]
    for version in (1, 2):
        per_prompt = per_prompt_accuracy(readings, scenes, version=version)
        assert per_prompt.shape == (3,) and per_prompt[0] == 1.0
        assert per_prompt.mean() == pytest.approx(prompt_accuracy_from_readings(readings, scenes, version=version)["prompt_accuracy"])
    with pytest.raises(ValueError, match="version 3"):
        prompt_accuracy_from_readings(readings, scenes, version=3)


@pytest.fixture(scope="module")
def shown():
    """Both versions' scores of rendered scenes shown against 32 arena-validation prompts (not the judge's
    streams, nor the one its cut was chosen on)."""
    world = PocketDataset(PROMPTS, SPLITS["validation"].prompt_seed)
    scenes = [world.scene(i) for i in range(PROMPTS)]
    judge = load_prompt_judge()
    results = {}
    for name, shown_scenes in reference_scenes(scenes, seed=4242).items():
        readings = read_scenes(judge, torch.stack([render(scene).image for scene in shown_scenes]))
        results[name] = {version: per_prompt_accuracy(readings, scenes, version=version) for version in (1, 2)}
    return results


def test_version_2_scores_the_right_scene_above_clutter_an_empty_scene_and_the_wrong_scene(shown):
    right = shown["right scene"][2]
    assert right.mean() > 0.95
    for name, margin in (("right scene + 2 extra objects", 0.25), ("empty scene (background only)", 0.5), ("other prompts' scenes", 0.5)):
        other = shown[name][2]
        assert right.mean() - other.mean() > margin, name
        assert np.mean(right > other) >= 0.9, name  # prompt by prompt, not only on average


def test_version_1_let_clutter_score(shown):
    """The old judge's failure, measured: clutter was cheap in version 1 and buys nothing in version 2."""
    crowd, wrong = shown["random 4–5-object scenes"], shown["other prompts' scenes"]
    assert crowd[1].mean() - wrong[1].mean() > 0.05  # v1: more objects, more lucky matches
    assert crowd[2].mean() <= wrong[2].mean() + 0.02  # v2: no better than any wrong scene
    extra, right = shown["right scene + 2 extra objects"], shown["right scene"]
    assert right[1].mean() - extra[1].mean() < 0.15  # v1: two extra objects cost about the count check
    assert right[2].mean() - extra[2].mean() > 0.25


def test_the_frozen_cut_is_the_one_the_committed_validation_sweep_chose():
    record = json.loads((shipped_weights("judges", "prompt").parent / "prompt_v2.json").read_text())
    assert tuple(row["min_score"] for row in record["sweep"]) == MIN_SCORE_GRID_V2
    best = max(record["sweep"], key=lambda row: row["mean"])
    assert record["rule"]["min_score"] == best["min_score"] == RULE_V2.min_score
    assert record["seed"] == 302 and record["images"] == 1024  # the judge's validation stream, never a model's samples


def test_the_rule_builder_writes_its_sweep_and_both_versions_scores(tmp_path):
    """The pipeline behind ``prompt_v2.json`` on 16 images (a check of the writer, not of the choice)."""
    (tmp_path / "prompt.safetensors").write_bytes(shipped_weights("judges", "prompt").read_bytes())
    report = build_rule_v2(tmp_path, images=16, log=lambda line: None)
    assert [row["min_score"] for row in report["sweep"]] == list(MIN_SCORE_GRID_V2)
    assert json.loads((tmp_path / "prompt_v2.json").read_text())["rule"] == report["rule"]
    notes = (tmp_path / "PROMPT_V2.md").read_text()
    assert "--rule-v2 --quick" in notes and "| random 4–5-object scenes |" in notes
