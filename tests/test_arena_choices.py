"""Choices runs (``make arena-choices``): issue 20's candidate defaults trained beside today's UniFL on the validation
split at today's tuned rates, and decided against today's rows by a Holm-corrected family of their own."""

import pytest
from unifl.pocket.arena import claims as arena_claims
from unifl.pocket.arena.plan import REAL_Q10_ALPHAS, VARIANT_SETS, ArenaSettings, Variant, pocket_rewards, rows, trainings, tuning_of


def test_a_choices_run_trains_each_candidate_beside_todays_and_samples_it_at_every_count():
    settings = ArenaSettings.choices("stage2")
    assert settings.split == "validation" and settings.peers == () and not settings.controls and not settings.ablations and len(settings.seeds) == 5
    planned, row_plan = trainings(settings), rows(settings)
    assert planned["stage2_v_counts"].init_from == "stage1" and "adversarial.schedule=step-counts" in planned["stage2_v_counts"].overrides
    assert planned["stage2_v_prefix_both"].init_from == "stage1_v_prefix_both"  # a "both" variant continues its own stage 1
    assert {"aesthetic.prefix_steps=4", "pefl.prefix_steps=2", "stage=1"} <= set(planned["stage1_v_prefix_both"].overrides)
    assert {f"stage2_v_shared_{n}" for n in (1, 2, 4, 8)} | {"stage1_v_prefix_both_20", "stage2_4", "stage1_20"} <= set(row_plan)
    assert row_plan["stage2_v_trajectory_1"].sampler == row_plan["stage2_1"].sampler  # the same sampler as today's row it is compared with
    assert tuning_of("stage2_v_counts") == "stage2" and tuning_of("stage1_v_prefix_both") == "stage1"  # today's tuned rates
    assert not any(row.control_of for row in row_plan.values())


def test_every_candidate_is_a_valid_config_so_no_run_fails_hours_in():
    from unifl.core.config import load_config

    for variant_set in VARIANT_SETS.values():
        for variant in variant_set:
            config = load_config(None, ["stage=2", *variant.overrides], preset="pocket")
            for override in variant.overrides:
                if override.startswith("rewards="):
                    assert [spec.aspect for spec in config.rewards] == ["color", "layout", "detail", "lighting"], override
                    continue
                (section, key), raw = override.split("=")[0].split("."), override.split("=")[1]
                value = getattr(getattr(config, section), key)
                assert value == type(value)(raw), override  # the key exists and took the value
    assert ("attention+ff", 16) not in [(v.overrides[0].split("=")[1], int(v.overrides[1].split("=")[1])) for v in VARIANT_SETS["lora"]]  # today's is the baseline


def test_the_real_quantile_thresholds_are_the_rewards_own_on_real_renders_and_reach_the_trainer():
    """The stage-1 candidates' α_d: each pocket reward's 10 % quantile on real training renders (recomputed here, so a
    rebuilt reward cannot leave them stale), set per aspect by the override and read by the config as given."""
    import torch
    from unifl.core.config import load_config
    from unifl.pocket.models.rewards import load_pocket_model
    from unifl.pocket.world.world import PocketDataset, WorldConfig

    world = PocketDataset(512, 1, WorldConfig(resolution=64))
    items = [world[i] for i in range(len(world))]
    images, captions = torch.stack([item.image for item in items]), [item.caption for item in items]
    for aspect, alpha in REAL_Q10_ALPHAS.items():
        with torch.no_grad():
            scores = load_pocket_model("pocket-reward", aspect).eval()(images, captions)
        assert abs(float(scores.quantile(0.1)) - alpha) < 2e-3, aspect
    config = load_config(None, [pocket_rewards({"detail": 0.0})], preset="pocket")
    assert {spec.aspect: spec.threshold for spec in config.rewards} == {"color": None, "layout": None, "detail": 0.0, "lighting": None}


def test_the_choices_family_compares_each_candidate_with_todays_rows_only():
    variants = (Variant("shared", "stage2", ("aesthetic.stage2_schedule=shared",)), Variant("wide", "both", ("lora.rank=64",)))
    family = arena_claims.choices_family(variants)
    assert len(family) == 2 * 3 * len(arena_claims.CHOICE_COUNTS) + 2
    assert {(c.a, c.b) for c in family if c.a.startswith("stage2_v_shared")} == {(f"stage2_v_shared_{n}", f"stage2_{n}") for n in (1, 2, 4, 8)}
    assert {c.group for c in family} == {"choice"} and not set(c.text for c in family) & set(c.text for c in arena_claims.family())
    assert ("stage1_v_wide_20", "stage1_20") in {(c.a, c.b) for c in family}


def test_the_cli_starts_a_choices_run_from_the_committed_tuning_rates(monkeypatch):
    from unifl.cli import main
    from unifl.cli.arena import VARIANT_SET_NAMES
    from unifl.pocket.arena import run

    assert set(VARIANT_SET_NAMES) == set(VARIANT_SETS)
    runs = []
    monkeypatch.setattr(run, "run_arena", lambda out_dir, settings: runs.append((out_dir, settings)))
    assert main(["arena", "--choices", "lora"]) == 0
    assert runs == [("out/arena-choices-lora", ArenaSettings.choices("lora", tuning_from="pocket/arena/tuned"))]


@pytest.mark.slow
def test_a_smoke_choices_run_decides_its_candidates_in_their_own_family(tmp_path):
    from unifl.pocket.arena.run import run_arena
    from unifl.pocket.judges.build_judges import QUICK, build

    judge = tmp_path / "judge"
    build(judge, QUICK, log=lambda line: None)
    variants = (Variant("shared", "stage2", ("aesthetic.stage2_schedule=shared",)), Variant("rank8", "both", ("lora.rank=8", "lora.alpha=8")))
    settings = ArenaSettings.smoke().with_(num_prompts=4, num_real=8, peers=(), ablations=False, controls=False, variants=variants,
                                           learning_rates=(2e-4,), discriminator_rates=(3e-4,))
    metrics = run_arena(tmp_path / "choices", settings, judge_path=str(judge / "prompt.safetensors"))
    assert {"stage2_v_shared_1", "stage2_v_rank8_8", "stage1_v_rank8_20", "stage2_1"} <= set(metrics["rows"])
    assert "aesthetic.stage2_schedule=shared" in metrics["trainings"]["stage2_v_shared"]["0"]["overrides"]
    choices = metrics["choices"]
    assert choices["family"]["name"] == arena_claims.CHOICES_FAMILY and len(choices["claims"]) == 2 * 12 + 2
    assert all("holm_p" in t for c in choices["claims"] for t in c["tests"]) and not any(c["group"] == "choice" for c in metrics["claims"])
    assert choices["claims"][0]["compute"]["a"]["training"]["lineage"] == ["stage1", "stage2_v_shared"]
    assert "## Candidate defaults against today's" in (tmp_path / "choices" / "report.md").read_text()
