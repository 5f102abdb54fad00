"""The base-model yardstick (pocket/arena/base_quality.py): real renders pass the bars, the measuring is the arena's."""

from __future__ import annotations

import torch

from unifl.pocket.arena import base_quality
from unifl.pocket.arena.plan import SPLITS


def test_the_yardstick_draws_the_arenas_prompts_and_noise():
    scenes, prompts, seeds = base_quality.split_prompts("validation", 3, replicate=1)
    assert seeds == SPLITS["validation"].noise_seeds(1, 3)
    assert len(scenes) == len(prompts) == 3 and all("background lit from the" in p for p in prompts)
    assert base_quality.split_prompts("test", 3, 1)[1] != prompts  # the splits keep their own prompts


def test_the_shipped_base_is_measured_against_real_renders_of_the_same_scenes():
    result = base_quality.measure_base(None, "validation", num_prompts=4, replicates=1, num_real=16)
    rows = base_quality.summary(result)
    assert set(rows) == {"real renders", "VAE round trip", "20 steps", "4 steps"}
    real = {key: mean for key, (mean, _) in rows["real renders"].items()}
    assert real["detail_gap"] == 0 and real["colour"] == 1.0 and real["light"] == 1.0
    table = base_quality.markdown(result, "the shipped pocket model")
    assert "| 20 steps |" in table and "Targets:" in table
    assert set(base_quality.targets_met(result)) >= {"colour ≥ 0.9", "light ≥ 0.6", "prompt_accuracy ≥ 0.7", "4 steps clearly worse (FD)"}


def test_the_vae_round_trip_is_the_real_renders_through_the_vae_close_but_not_equal():
    from unifl.pocket.models.addons import frozen_pocket_pipeline
    from unifl.pocket.world.world import WorldConfig, render

    scenes, _, _ = base_quality.split_prompts("validation", 4, replicate=0)
    real = torch.stack([render(scene, WorldConfig(resolution=base_quality.RESOLUTION)).image for scene in scenes])
    round_trip = base_quality.vae_round_trip(frozen_pocket_pipeline(None).vae, real)
    assert round_trip.shape == real.shape and 0.0 <= round_trip.min() and round_trip.max() <= 1.0
    error = (round_trip - real).abs().mean().item()
    assert 0.0 < error < 0.08, error  # the VAE loses detail (it is the ceiling being measured) but keeps the scene


def test_the_vae_ceiling_reads_a_vae_folder_alone(tmp_path):
    from unifl.pocket.models.addons import frozen_pocket_pipeline

    frozen_pocket_pipeline(None).vae.save_pretrained(str(tmp_path / "vae"))
    ceiling = base_quality.main(["--vae-only", str(tmp_path / "vae"), "--prompts", "32"])  # fewer leave FD to chance
    assert set(ceiling) == {"real renders", "VAE round trip"}
    assert ceiling["real renders"]["tone"] == 1.0 and 0.0 <= ceiling["VAE round trip"]["shape"] <= 1.0
    # the shipped decoder, fine-tuned against a patch discriminator, keeps the 4 px patterns (within the bar)
    assert ceiling["real renders"]["detail_gap"] == 0.0 and abs(ceiling["VAE round trip"]["detail_gap"]) < base_quality.DETAIL_MARGIN
    # but a round trip is still further from the other real renders than the real renders themselves
    assert ceiling["VAE round trip"]["spectrum"] > ceiling["real renders"]["spectrum"] and ceiling["VAE round trip"]["fd"] > ceiling["real renders"]["fd"]


def test_the_lit_side_lead_is_positive_on_real_renders_and_flips_with_the_direction():
    from dataclasses import replace

    from unifl.pocket.world.world import WorldConfig, render

    scenes, _, _ = base_quality.split_prompts("validation", 4, replicate=0)
    lit_left = torch.stack([render(replace(s, lighting=replace(s.lighting, direction="left")), WorldConfig(resolution=64)).image for s in scenes])
    assert (base_quality.lit_side_lead(lit_left, "left") > 0.03).all()
    assert (base_quality.lit_side_lead(lit_left, "right") < -0.03).all()  # the same images read from the other side
    assert base_quality.lit_side_lead(lit_left, "top").abs().max() < 0.03  # a horizontal ramp has no vertical lead


def test_the_light_response_prompts_each_scene_four_ways_from_the_same_noise():
    response = base_quality.main(["--light-response", "--prompts", "3"])
    assert set(response["lead"]) == set(response["real_lead"]) == {"left", "right", "top", "bottom"}
    assert min(response["real_lead"].values()) > 0.05  # real renders are brighter on the lit side
    assert set(response["same_noise_correlation"]) == set(response["response"]) == {"left/right", "top/bottom"}
    assert response["response"]["left/right"] == (response["lead"]["left"] + response["lead"]["right"]) / 2
    assert all(-1.0 <= c <= 1.0 for c in response["same_noise_correlation"].values())
