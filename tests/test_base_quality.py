"""The base-model yardstick (pocket/base_quality.py): real renders pass the bars, the measuring is the arena's."""

from __future__ import annotations

from unifl.pocket import base_quality
from unifl.pocket.arena.plan import SPLITS


def test_the_yardstick_draws_the_arenas_prompts_and_noise():
    scenes, prompts, seeds = base_quality.split_prompts("validation", 3, replicate=1)
    assert seeds == SPLITS["validation"].noise_seeds(1, 3)
    assert len(scenes) == len(prompts) == 3 and all("background lit from the" in p for p in prompts)
    assert base_quality.split_prompts("test", 3, 1)[1] != prompts  # the splits keep their own prompts


def test_the_shipped_base_is_measured_against_real_renders_of_the_same_scenes():
    result = base_quality.measure_base(None, "validation", num_prompts=4, replicates=1, num_real=16)
    rows = base_quality.summary(result)
    assert set(rows) == {"real renders", "20 steps", "4 steps"}
    real = {key: mean for key, (mean, _) in rows["real renders"].items()}
    assert real["detail_gap"] == 0 and real["colour"] == 1.0 and real["light"] == 1.0
    table = base_quality.markdown(result, "the shipped pocket model")
    assert "| 20 steps |" in table and "Targets:" in table
    assert set(base_quality.targets_met(result)) >= {"colour ≥ 0.9", "light ≥ 0.6", "prompt_accuracy ≥ 0.7", "4 steps clearly worse (FD)"}
