"""The arena: its judges' checks and statistics, its claims against spreads, its plan and seeds, the docs
generator, the peer glue's patches (against the peers' real scripts where a copy is on the machine), and a
smoke run end to end that a second invocation resumes without redoing a job."""

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import unifl
from unifl.pocket.arena import claims as arena_claims
from unifl.pocket.arena.docs import BEGIN, END, write_docs
from unifl.pocket.arena.plan import SPLITS, TRAINING_SEEDS, ArenaSettings, rows, trainings
from unifl.pocket.judges.judges import (
    JUDGE_SEEDS,
    FoundObject,
    Reading,
    aspect_shortfall,
    judge_targets,
    kernel_inception_distance,
    mirror,
    prompt_checks,
)
from unifl.pocket.world.world import PocketDataset, relation

REPO = Path(unifl.__file__).resolve().parent


def _scene_with_relation():
    world = PocketDataset(200, SPLITS["validation"].prompt_seed)
    for i in range(200):
        scene = world.scene(i)
        if len(scene.objects) >= 2 and relation(scene.objects[0], scene.objects[1], 0.12):
            return scene
    raise AssertionError("no scene with a stated relation in 200")


def _perfect_reading(scene) -> Reading:
    found = tuple(FoundObject(o.shape, o.colour, o.size, o.pattern, o.centre, 50) for o in scene.objects)
    return Reading(found, scene.background.tone, scene.lighting.direction)


def test_prompt_checks_pass_a_true_reading_and_fail_exactly_what_is_wrong():
    scene = _scene_with_relation()
    truth = _perfect_reading(scene)
    assert all(all(v) for v in prompt_checks(scene, truth).values())
    assert prompt_checks(scene, truth)["relation"]  # the scene states a relation and it is checked

    wrong_colour = replace(truth.objects[0], colour="white" if truth.objects[0].colour != "white" else "red")
    checks = prompt_checks(scene, replace(truth, objects=(wrong_colour, *truth.objects[1:])))
    assert checks["colour"].count(False) == 1 and all(checks["shape"]) and all(checks["count"])

    first, second = truth.objects[0], truth.objects[1]
    swapped = (replace(first, centre=second.centre), replace(second, centre=first.centre), *truth.objects[2:])
    assert not all(prompt_checks(scene, replace(truth, objects=swapped))["relation"])  # same objects, wrong places

    missing = prompt_checks(scene, replace(truth, objects=truth.objects[1:]))
    assert missing["count"] == [False] and missing["shape"].count(False) >= 1 and not missing["relation"][0]

    dark_left = prompt_checks(scene, replace(truth, tone="dark" if scene.background.tone == "light" else "light", light="right" if scene.lighting.direction != "right" else "left"))
    assert dark_left["tone"] == [False] and dark_left["light"] == [False]


def test_judge_targets_peak_at_each_centre_and_mirroring_swaps_the_light():
    world = PocketDataset(4, JUDGE_SEEDS[0])
    sample = world[0]
    ids = torch.zeros(64, 64, dtype=torch.uint8)
    for j, mask in enumerate(sample.instance_masks):
        ids[mask] = j + 1
    maps, heat, scene = judge_targets(sample.scene, ids, 64)
    for obj in sample.scene.objects:
        x, y = (min(63, int(c * 64)) for c in obj.centre)
        assert heat[y, x] > 0.8
    assert (maps[0] > 0).sum() == (ids > 0).sum()  # every object pixel labelled, nothing else
    light = torch.tensor([[0, 0], [0, 1]])  # "left", "right" in SCENE_GROUPS["light"]
    _, _, _, mirrored = mirror(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4), light)
    assert mirrored[:, 1].tolist() == [1, 0]


def test_kid_is_unbiased_around_zero_for_one_distribution_and_clearly_positive_for_another():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=generator), torch.randn(300, 16, generator=generator)
    shifted = torch.randn(300, 16, generator=generator) + 0.5
    same = kernel_inception_distance(a, b)
    assert abs(same) < 0.2 * kernel_inception_distance(a, shifted)
    assert kernel_inception_distance(a, shifted) > 0


def test_aspect_shortfall_counts_above_real_as_no_better_than_real():
    gaps = aspect_shortfall({"color": 2.7, "layout": 0.5}, {"color": 0.8, "layout": 0.65})
    assert gaps["color"] == 0.0 and gaps["layout"] == pytest.approx(0.15) and gaps["mean"] == pytest.approx(0.075)


def _draws(point: float, spread: float, seed: int, n: int = 400) -> np.ndarray:
    draws = np.random.default_rng(seed).normal(point, spread, n + 1)
    draws[0] = point
    return draws


def _boot(**rows_fd):
    """Bootstrap draws per row: FD and KID around the given point (KID = FD here), prompt accuracy flat."""
    return {row: {**{m: _draws(fd, 1.0, 100 * k + i) for k, m in enumerate(arena_claims.REALISM)}, "prompt_accuracy": _draws(0.5, 0.01, 900 + i)}
            for i, (row, fd) in enumerate(rows_fd.items())}


def test_a_realism_claim_holds_only_against_the_row_and_its_post_filter_control():
    plan = rows(ArenaSettings())
    claim = next(c for c in arena_claims.family() if c.a == "stage2_4" and c.b == "base_4" and c.metrics == arena_claims.REALISM)
    plain = arena_claims.decide([claim], _boot(stage2_4=100, base_4=150, **{"base_4+filter": 140}), plan, 0.05, 0.95)[0]
    assert plain["holds"] and {t["b"] for t in plain["tests"]} == {"base_4", "base_4+filter"} and len(plain["tests"]) == 2 * len(arena_claims.REALISM)
    closed = arena_claims.decide([claim], _boot(stage2_4=100, base_4=150, **{"base_4+filter": 101}), plan, 0.05, 0.95)[0]
    assert not closed["holds"]  # the filter closes the gap: no claim, though the row alone is beaten
    assert all(t["holds"] for t in closed["tests"] if t["b"] == "base_4")
    no_control = {name: row for name, row in plan.items() if not row.control_of}
    assert {t["b"] for t in arena_claims.decide([claim], _boot(stage2_4=100, base_4=150), no_control, 0.05, 0.95)[0]["tests"]} == {"base_4"}


def test_a_peer_claim_must_beat_the_peer_with_both_loras_and_no_worse_keeps_its_margin():
    plan = rows(ArenaSettings())
    claim = next(c for c in arena_claims.family() if c.a == "stage2_4" and c.b == "pcm_4" and c.metrics == arena_claims.REALISM)
    assert arena_claims.opponents("pcm_4", "fd", plan) == ["pcm_4", "pcm_own_4", "pcm_4+filter", "pcm_own_4+filter"]
    assert arena_claims.opponents("pcm_4", "prompt_accuracy", plan) == ["pcm_4", "pcm_own_4"]
    boot = _boot(stage2_4=100, pcm_4=150, pcm_own_4=99, **{"pcm_4+filter": 150, "pcm_own_4+filter": 150})
    assert not arena_claims.decide([claim], boot, plan, 0.05, 0.95)[0]["holds"]  # its own LoRA does as well as stage 2
    no_worse = arena_claims.Claim("x", "no_worse", "stage2_4", "base_20", ("fd",), "paper")
    slightly_worse = {"stage2_4": {"fd": _draws(102, 0.5, 1)}, "base_20": {"fd": _draws(100, 0.5, 2)}, "base_20+filter": {"fd": _draws(100, 0.5, 3)}}
    assert arena_claims.decide([no_worse], slightly_worse, plan, 0.05, 0.95)[0]["holds"]  # 2 % worse, within the declared 5 %
    much_worse = slightly_worse | {"stage2_4": {"fd": _draws(110, 0.5, 1)}}
    assert not arena_claims.decide([no_worse], much_worse, plan, 0.05, 0.95)[0]["holds"]


def test_holm_runs_over_the_whole_family_so_a_claim_alone_may_hold_where_the_family_does_not():
    plan = {name: row for name, row in rows(ArenaSettings()).items() if not row.control_of}
    weak = arena_claims.Claim("weak", "beats", "stage1_20", "base_20", ("prompt_accuracy",), "paper")
    boot = {"stage1_20": {"prompt_accuracy": _draws(0.52, 0.01, 1)}, "base_20": {"prompt_accuracy": _draws(0.5, 0.0001, 2)}}
    alone = arena_claims.decide([weak], boot, plan, 0.05, 0.95)[0]
    assert alone["holds"] and 0.0005 < alone["tests"][0]["p"] < 0.05
    others = [arena_claims.Claim(f"null {i}", "beats", f"r{i}", "base_20", ("prompt_accuracy",), "paper") for i in range(60)]
    boot |= {f"r{i}": {"prompt_accuracy": _draws(0.5, 0.01, 10 + i)} for i in range(60)}
    plan |= {f"r{i}": replace(plan["base_20"], name=f"r{i}") for i in range(60)}
    assert not arena_claims.decide([weak, *others], boot, plan, 0.05, 0.95)[0]["holds"]


def test_every_claim_names_rows_the_arena_makes_and_skips_those_of_missing_peers():
    planned = set(rows(ArenaSettings()))
    assert {r for c in arena_claims.family() for r in (c.a, c.b)} <= planned  # the family is fixed and names real rows
    all_claims = arena_claims.planned_claims(planned)
    assert {c.group for c in all_claims} == {"paper", "ablation", "peer"} and len(all_claims) == len(arena_claims.family())
    without_peers = arena_claims.planned_claims(set(rows(ArenaSettings(peers=()))))
    assert {c.group for c in without_peers} == {"paper", "ablation"}


def test_seeds_and_splits_are_disjoint_and_the_rows_are_the_issues():
    streams = [SPLITS[s].prompt_seed for s in SPLITS] + [SPLITS[s].real_seed for s in SPLITS] + list(JUDGE_SEEDS)
    assert len(set(streams)) == len(streams) and not set(streams) & {0, 1, 2, 101, 102, 103, 202}
    noise = [set(SPLITS[s].noise_seeds(r, 1024)) for s in SPLITS for r in TRAINING_SEEDS]
    assert sum(map(len, noise)) == len(set().union(*noise))  # no noise seed shared by two replicates or splits
    from unifl.pocket.arena.measure import prompt_set

    small = ArenaSettings(num_prompts=3, images_per_prompt=2)
    first, second = prompt_set(SPLITS["test"], small, 0), prompt_set(SPLITS["test"], small, 1)
    assert first.prompts[0] == first.prompts[1] and len(first) == 6  # each prompt images_per_prompt times
    assert not set(first.prompts) & set(second.prompts) and not set(first.seeds) & set(second.seeds)
    planned = rows(ArenaSettings())
    assert {"base_20", "base_4", "base_4_cfg1", "stage1_20", "stage2_4", "stage2_2", "stage2_1", "stage1_no_pefl_20",
            "stage1_global_reward_20", "stage2_no_adversarial_4", "lcm_lora_lcm_4", "lcm_lora_tcd_1", "pcm_4", "pcm_adv_4",
            "alignprop_steps_20", "alignprop_time_20"} <= set(planned)
    assert planned["base_4_cfg1"].sampler.cfg == 1.0 and planned["stage2_4"].sampler.spacing == "trailing"
    plan = trainings(ArenaSettings())
    # the distillation peers get stage 1 + stage 2's time (UniFL's 4-step LoRA trained through both); stage 2 also from the base
    assert plan["lcm_lora"].budget_of == ("stage1", "stage2") and plan["pcm_adv_own"].budget_of == ("stage1", "stage2") and plan["pcm_adv_own"].lora == "own"
    assert plan["alignprop_steps"].steps_of == "stage1" and plan["alignprop_time"].budget_of == ("stage1",)
    assert plan["stage2"].init_from == "stage1" and not plan["stage2_from_base"].init_from and "stage2_from_base_4" in planned
    assert planned["pcm_4"].own_lora == "pcm_own_4" and planned["pcm_4+filter"].control_of == "pcm_4" and planned["base_20+filter"].training is None
    assert len(TRAINING_SEEDS) >= 5 and len(TRAINING_SEEDS) * ArenaSettings().images >= 1024 and ArenaSettings.smoke().split == "validation"
    grid = ArenaSettings().learning_rates
    assert len(grid) >= 4 and all(2 <= b / a <= 3 for a, b in zip(grid, grid[1:]))  # ≥ 4 values spaced ×2–×3
    rates = ArenaSettings().discriminator_rates
    assert len(rates) >= 4 and all(2 <= b / a <= 3 for a, b in zip(rates, rates[1:])) and {1e-5, 3e-4} <= set(rates)  # PCM's and UniFL's defaults


def test_the_docs_generator_refuses_a_smoke_run_and_fills_only_its_block(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pocket-world.md").write_text(f"# before\n{BEGIN}\nOLD-TABLE\n{END}\n# after\n")
    summary = {m: {"mean": 0.5, "min": 0.4, "max": 0.6, "n": 3} for m in arena_claims.METRICS}
    intervals = {"fd": {"point": 1.0, "interval": [0.9, 1.1]}}
    compute = {"training": {"seconds": 60, "unet_evaluations": 100, "feedback_evaluations": 0, "images_seen": 120, "lineage": ["pcm"]}, "unet_calls_per_image": 4}
    metrics = {
        "settings": {"quick": True, "seeds": [0, 1, 2], "num_prompts": 256, "images_per_prompt": 4}, "split": {"name": "test"}, "seconds": 600,
        "rows": {"stage2_4": {"summary": summary, "intervals": intervals, "group": "unifl", "label": "UniFL stage 2", "pooled_realism": {"fd": 1.0, "kid": 0.1, "images": 1032}},
                 "pcm_4": {"summary": summary, "intervals": intervals, "group": "peer", "label": "PCM", "pooled_realism": {"fd": 2.0, "kid": 0.2, "images": 1032}}},
        "not_run": {"alignprop_time_20": "no Python at x (run `make peer-venvs`)"},
        "family": {"name": "arena-claims-3", "alpha": 0.05, "confidence": 0.95, "no_worse_margin": 0.05, "draws": 1000, "tests": 1},
        "pooled_realism_floor_real_vs_real": {"fd": 0.5, "kid": 0.0, "images": 1032},
        "references": {k: {"summary": summary} for k in ("real_same_scenes", "real_other_scenes", "uniform_noise")},
        "claims": [{"claim": "Stage 2 beats PCM", "holds": False, "group": "peer", "a": "stage2_4", "b": "pcm_4", "compute": {"a": compute, "b": compute},
                    "tests": [{"metric": "fd", "b": "pcm_4", "difference": -1.0, "interval": [-2.0, 0.5], "holm_p": 0.2, "holds": False}]}],
        "trainings": {"pcm": {"0": {"method": "pcm", "seconds": 60, "steps": 30, "patches": ["a patch"], "version": "G-U-N@abc"}}},
        "peers_skipped": ["alignprop"], "peers_missing": {"alignprop": "no Python at x (run `make peer-venvs`)"},
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="smoke run"):
        write_docs(path, docs)
    metrics["settings"]["quick"] = False
    path.write_text(json.dumps(metrics))
    write_docs(path, docs)
    page = (docs / "pocket-world.md").read_text()
    assert page.startswith("# before") and page.rstrip().endswith("# after") and "OLD-TABLE" not in page and "stage2_4" in page
    peers = (docs / "peers.md").read_text()
    assert "Stage 2 beats PCM" in peers and "a patch" in peers and "G-U-N@abc" in peers and "AlignProp was not run" in peers
    assert "[-2.000, +0.500]" in peers and "Holm p 0.2" in peers and "60 s, 100 UNet" in peers and "alignprop_time_20 | not run" in peers
    curves = tmp_path / "curves"
    curves.mkdir()
    (curves / "curves.png").write_bytes(b"png")
    replicate = {"stage2_4": {"replicates": {"0": {}, "1": {}}}}
    (curves / "metrics.json").write_text(json.dumps({"4": {"folder": str(curves / "x4"), "rows": replicate, "environment": {"commit": "abcdef1234567890"}}}))
    write_docs(path, docs, curves_dir=curves)
    assert (docs / "arena-curves.png").read_bytes() == b"png" and "| ×4 | x4 | 0, 1 | `abcdef123456` |" in (docs / "peers.md").read_text()


def _glue(name: str):
    sys.path.insert(0, str(REPO / "bench" / "peers"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench" / "peers"))


def test_the_peer_budget_stops_on_time_or_steps_and_smoke_runs_take_both():
    common = _glue("common")
    assert common.Budget(0, 3).spent(3) and not common.Budget(0, 3).spent(2)
    assert common.Budget(1e-9, 0).spent(1)  # out of time
    assert not common.Budget(1e-9, 3).spent(1) and common.Budget(1e-9, 3).spent(3)  # both given: both reached


@pytest.mark.parametrize("method", ["lcm_lora", "pcm", "pcm_adv"])
def test_every_glue_patch_matches_the_peers_script_exactly_once(method, tmp_path):
    from unifl.pocket.arena.run import peer_sources

    source = Path(peer_sources()[method]["source"])
    if not source.exists():
        pytest.skip(f"no local copy of {method}'s code on this machine ({source}); the arena skips it too")
    common = _glue("common")
    if method == "lcm_lora":
        glue = _glue("lcm_lora")
        patched = common.patched_copy(source / glue.SCRIPT, glue.PATCHES, tmp_path)
    else:
        glue = _glue("pcm")
        source = glue.script_folder(source)
        adversarial = method == "pcm_adv"
        patched = common.patched_copy(source / glue.SCRIPTS[adversarial], glue.script_patches(adversarial), tmp_path)
        if adversarial:
            common.patched_copy(source / glue.DISCRIMINATOR, glue.DISCRIMINATOR_PATCHES, tmp_path)
    text = patched.read_text()
    assert "_unifl_budget.spent(global_step, logs)" in text and "torchvision" not in text.split("def ")[0].replace("# ", "")
    if method != "lcm_lora":  # the script's own LoRA: its rank and targets, no alpha patched in
        own = common.patched_copy(source / glue.SCRIPTS[adversarial], glue.script_patches(adversarial, "own"), tmp_path).read_text()
        assert "_unifl_lora_alpha" not in own and "_unifl_budget.spent(global_step, logs)" in own


@pytest.mark.slow
def test_smoke_arena_runs_end_to_end_and_a_second_run_redoes_nothing(tmp_path, capsys):
    from unifl.pocket.arena.measure import prompt_judge_version
    from unifl.pocket.arena.run import run_arena
    from unifl.pocket.judges.build_judges import QUICK, build

    judge = tmp_path / "judge"
    build(judge, QUICK, log=lambda line: None)
    settings = ArenaSettings.smoke().with_(num_prompts=4, num_real=8, peers=(), ablations=False)
    out = tmp_path / "arena"
    metrics = run_arena(out, settings, judge_path=str(judge / "prompt.safetensors"))
    assert {"base_20", "base_4_cfg1", "stage1_20", "stage2_4", "stage2_1"} <= set(metrics["rows"])
    for row in metrics["rows"].values():
        version_2 = {"precision", "recall", "extra_objects", "missing_objects"} if prompt_judge_version() == 2 else set()
        expected = {m for m in arena_claims.METRICS if m not in {"spectrum", "precision", "recall", "extra_objects", "missing_objects"}}
        assert set(row["summary"]) == expected | version_2 | (set(arena_claims.REALISM) - {"fd", "kid"}) and row["summary"]["fd"]["n"] == 1
    assert (out / "report.md").read_text().count("grid_") >= len(metrics["rows"])
    assert metrics["trainings"]["stage2"]["0"]["unet_evaluations"] > 0
    # stage 1: 4 aspect rewards and 3 perception models per step; stage 2: the rewards and the discriminator
    assert metrics["trainings"]["stage1"]["0"]["feedback_evaluations"] >= settings.stage1_steps * 4 * 7
    assert metrics["trainings"]["stage2"]["0"]["feedback_evaluations"] > settings.stage2_steps * 4 * 4
    assert set(metrics["tuning"]) == {"stage1", "stage2", "stage2_from_base"} and "## Hyperparameters, chosen on the validation split" in (out / "report.md").read_text()
    assert [axis["axis"] for axis in metrics["tuning"]["stage2"]["axes"]] == ["learning_rate", "discriminator_rate"]
    assert "stage2_from_base_4" in metrics["rows"] and metrics["rows"]["stage2_4"]["compute"]["training"]["lineage"] == ["stage1", "stage2"]
    interval = metrics["rows"]["stage2_4"]["intervals"]["fd"]
    assert interval["interval"][0] <= interval["point"] <= interval["interval"][1] and interval["point"] == pytest.approx(metrics["rows"]["stage2_4"]["pooled_realism"]["fd"], rel=1e-6)
    assert metrics["family"]["tests"] == sum(len(c["tests"]) for c in metrics["claims"]) > 0
    assert all("holm_p" in t for c in metrics["claims"] for t in c["tests"]) and "Holm p" in (out / "report.md").read_text()
    if metrics["controls"] == {}:  # the judges' post-filter registry is not in this checkout: each control row says so
        assert metrics["not_run"]["stage2_4+filter"] == "no post-filter registry in the judges"
    else:  # every row beside its control, and every realism claim also tested against the opponent's control
        assert {f"{row}+filter" for row in metrics["rows"] if "+" not in row} <= set(metrics["rows"]) and set(metrics["controls"]) >= {"base_4_cfg1", "stage2_4"}
        realism_tests = [t for c in metrics["claims"] for t in c["tests"] if t["metric"] == "fd"]
        assert realism_tests and all(any(u["b"] == t["b"] + "+filter" for u in realism_tests) for t in realism_tests if "+" not in t["b"])
    assert all(choice["before_sampling"] for choice in metrics["tuning"].values())  # a fresh run tunes before it samples what it tuned
    assert metrics["environment"]["libraries"]["diffusers"] and "Tables written at commit" in (out / "report.md").read_text()
    assert metrics["trainings"]["stage1"]["0"]["version"].startswith("this repository@")
    assert all(row["pooled_realism"]["images"] == settings.images for row in metrics["rows"].values())
    capsys.readouterr()
    again = run_arena(out, settings, judge_path=str(judge / "prompt.safetensors"))
    assert "0 to run" in capsys.readouterr().out
    assert again["rows"]["stage2_4"]["summary"] == metrics["rows"]["stage2_4"]["summary"]
    with pytest.raises(ValueError, match="other settings"):
        run_arena(out, settings.with_(stage1_steps=3), judge_path=str(judge / "prompt.safetensors"))


def test_every_stage_and_peer_is_tuned_on_validation_before_any_of_its_test_trainings(tmp_path, monkeypatch):
    from unifl.pocket.arena import run
    from unifl.pocket.arena.plan import TUNING, tuning_spec

    monkeypatch.setattr(run, "missing_reason", lambda method: "")
    settings = ArenaSettings()
    jobs = {job.name: job for job in run.plan_jobs(tmp_path, settings, post_filters=True)[0]}
    assert {"stage1", "stage2", "stage2_from_base"} <= set(TUNING)  # UniFL gets the sweep the peers get
    tuned = [name for name in trainings(settings) if tuning_spec(name) is not None]
    assert {"lcm_lora_own", "pcm_adv_own", "alignprop_time_own"} <= set(tuned)  # each own-LoRA variant swept as itself
    for name in tuned:
        axes = tuning_spec(name).axes
        first = tuple(f"{name}~lr{rate:g}@0" for rate in settings.learning_rates)
        assert jobs[f"{name}~choice0@0"].after == first
        if len(axes) == 2:  # the discriminator rate, swept after the learning rate is chosen
            second = tuple(f"{name}~dr{rate:g}@0" for rate in settings.discriminator_rates)
            assert jobs[f"{name}~choice1@0"].after == second and all(f"{name}~choice0@0" in jobs[c].after for c in second)
        training = trainings(settings)[name]
        assert all(set(f"{d}@0" for d in training.after) <= set(jobs[c].after) for c in first)  # the chosen stages first
    assert tuning_spec("stage2").axes == tuning_spec("pcm_adv").axes == ("learning_rate", "discriminator_rate")
    tuned_by = {"stage1": "stage1~choice0@0", "stage1_no_pefl": "stage1~choice0@0", "stage2": "stage2~choice1@0", "stage2_no_adversarial": "stage2~choice1@0",
                "lcm_lora": "lcm_lora~choice0@0", "pcm_adv_own": "pcm_adv_own~choice1@0", "alignprop_steps": "alignprop_time~choice0@0",
                "alignprop_steps_own": "alignprop_time_own~choice0@0"}
    for seed in settings.seeds:
        for name, choice in tuned_by.items():
            assert choice in jobs[f"{name}@{seed}"].after
    assert "peer_data" not in jobs["stage1~lr0.001@0"].after  # UniFL reads the pocket stream itself
    assert jobs["pcm_4+filter@3"].after == ("pcm_4@3", "pcm_4~filter@0") and jobs["pcm_4~filter@0"].after == ("pcm@0",)


def test_a_candidate_trains_with_its_values_and_the_test_run_adopts_the_chosen_one(tmp_path, monkeypatch):
    from unifl.pocket.arena import run

    calls = []
    monkeypatch.setattr(run, "train_unifl", lambda out, name, seed, overrides, init: calls.append((out, seed, overrides, init)) or {"seed": seed})
    settings = ArenaSettings()
    choice0 = tmp_path / "tuning" / "stage2" / "choice_0.json"
    choice0.parent.mkdir(parents=True)
    choice0.write_text(json.dumps({"hyperparameters": {"learning_rate": 1e-4}}))
    run._candidate_job(str(tmp_path), "stage2", 1, 3e-5, settings)
    out, seed, overrides, init = calls[-1]
    assert out == str(tmp_path / "tuning" / "stage2" / "lr0.0001_dr3e-05") and seed == 0
    assert overrides[-2:] == ["optim.learning_rate=0.0001", "adversarial.discriminator_lr=3e-05"] and init.endswith("trainings/stage1/seed0/unifl-stage1.safetensors")
    candidate = tmp_path / "tuning" / "stage2" / "lr0.0001_dr3e-05"
    candidate.mkdir()
    (candidate / "result.json").write_text(json.dumps({"lora": {"format": "kohya", "path": str(candidate / "unifl-stage2.safetensors")}, "steps": 3}))
    (tmp_path / "tuning" / "stage2" / "choice.json").write_text(json.dumps({"hyperparameters": {"learning_rate": 1e-4, "discriminator_rate": 3e-5}, "seed": 0, "run": str(candidate)}))
    run._training_job(str(tmp_path), "stage2_no_adversarial", trainings(settings)["stage2_no_adversarial"], 1, settings, "")
    assert calls[-1][1] == 1 and calls[-1][2][-2:] == ["optim.learning_rate=0.0001", "adversarial.discriminator_lr=3e-05"]  # an ablation takes its stage's
    adopted = run._training_job(str(tmp_path), "stage2", trainings(settings)["stage2"], 0, settings, "")
    assert len(calls) == 2 and adopted["lora"]["path"] == str(tmp_path / "trainings" / "stage2" / "seed0" / "unifl-stage2.safetensors")
    monkeypatch.setattr(run, "train_peer", lambda *args: calls.append(args) or {})
    for name in ("stage1", "stage2"):
        (tmp_path / "trainings" / name / "seed2").mkdir(parents=True)
        (tmp_path / "trainings" / name / "seed2" / "result.json").write_text(json.dumps({"seconds": 100.0 if name == "stage1" else 50.0, "steps": 100}))
    (tmp_path / "tuning" / "pcm_own").mkdir(parents=True)
    (tmp_path / "tuning" / "pcm_own" / "choice.json").write_text(json.dumps({"hyperparameters": {"learning_rate": 5e-4}, "seed": 0, "run": "x"}))
    run._training_job(str(tmp_path), "pcm_own", trainings(settings)["pcm_own"], 2, settings, "data")
    assert calls[-1][3:5] == (2, 150.0) and calls[-1][-2:] == ({"learning_rate": 5e-4}, "own")  # stage 1 + stage 2's time, its own LoRA


def test_the_sweep_widens_its_grid_while_the_best_value_sits_at_an_edge(tmp_path):
    from unifl.pocket.arena.run import _adopt_candidate, best_candidate, widened

    low_fd, accurate = {"learning_rate": 2e-4, "fd": 10.0, "prompt_accuracy": 0.4}, {"learning_rate": 1e-3, "fd": 12.0, "prompt_accuracy": 0.5}
    assert best_candidate([low_fd, accurate], "fd") is low_fd and best_candidate([low_fd, accurate], "prompt_accuracy") is accurate
    grid = [1e-4, 2e-4, 5e-4, 1e-3]
    assert widened(grid, 1e-3) == pytest.approx(2.5e-3) and widened(grid, 1e-4) == pytest.approx(4e-5) and widened(grid, 5e-4) is None
    candidate, target = tmp_path / "tuning" / "lr0.001", tmp_path / "trainings" / "seed0"
    candidate.mkdir(parents=True)
    (candidate / "lora.safetensors").write_bytes(b"lora")
    (candidate / "validation.safetensors").write_bytes(b"validation images")
    (candidate / "result.json").write_text(json.dumps({"lora": {"format": "diffusers", "path": str(candidate / "lora.safetensors")}, "steps": 7}))
    checkout = tmp_path / "checkout"  # the peers' import link points at the checkout, venvs and all
    (checkout / ".venv").mkdir(parents=True)
    (checkout / ".venv" / "libtorch_cpu.so").write_bytes(b"gigabytes")
    (candidate / "_pythonpath").mkdir()
    (candidate / "_pythonpath" / "unifl").symlink_to(checkout, target_is_directory=True)
    result = _adopt_candidate(candidate, target)
    assert not (target / "_pythonpath").exists()  # never a copy of the checkout
    assert json.loads((target / "result.json").read_text()) == result and result["steps"] == 7
    assert Path(result["lora"]["path"]) == target / "lora.safetensors" and (target / "lora.safetensors").read_bytes() == b"lora"
    assert not (target / "validation.safetensors").exists()


def test_the_choice_job_widens_an_edge_choice_and_records_it(tmp_path, monkeypatch):
    """The sweep's loop with the training and judging replaced (at the edge of what a unit test can run): a
    validation FD that keeps falling with the rate makes it widen until its limit, and the choice says so."""
    from unifl.pocket.arena import run

    trained = []

    def train(out_dir, name, training, seed, settings, data_dir, hyperparameters, target):
        trained.append(hyperparameters["learning_rate"])
        target.mkdir(parents=True)
        (target / "result.json").write_text(json.dumps({"lora": None, "steps": 1}))

    class FakeJudges:  # FD falls as the rate rises: the best is always the top edge
        spectrum = False

        def __init__(self, path):
            pass

        def measure(self, images, prompts, features, aspects, real=None):
            return {"realism": {"fd": -float(images[0]), "kid": 0.0}, "prompt": {"prompt_accuracy": 0.5}}

    rates = {}
    monkeypatch.setattr(run, "_train", train)
    monkeypatch.setattr(run, "Judges", FakeJudges)
    monkeypatch.setattr(run, "_real_features", lambda *a: None)
    monkeypatch.setattr(run, "sample_row", lambda sampler, lora, prompts, seeds, path: rates.__setitem__(path, float(Path(path).parent.name[2:])))
    monkeypatch.setattr(run, "load_images", lambda path: [rates[str(path)]])
    settings = ArenaSettings(learning_rates=(1e-4, 2e-4, 5e-4, 1e-3), widen_limit=2)
    choice = run._choose_job(str(tmp_path), "pcm", 0, settings, "")  # picked on FD
    assert trained == pytest.approx([1e-4, 2e-4, 5e-4, 1e-3, 2.5e-3, 6.25e-3]) and choice["widened"] == 2 and choice["at_edge"]
    assert choice["hyperparameters"] == {"learning_rate": pytest.approx(6.25e-3)}
    assert json.loads((tmp_path / "tuning" / "pcm" / "choice.json").read_text())["run"].endswith("lr0.00625")


def test_the_time_estimate_prices_every_job_and_splits_the_work_over_the_workers():
    from unifl.pocket.arena.estimate import MEASURED_COSTS, estimate

    costs = {"stage1_step": 1.0, "stage2_step": 1.0, "alignprop_step": 1.0, "unet_image": 0.01, "measure_image": 0.02}
    one = estimate(ArenaSettings(seeds=(0,)), costs)
    five = estimate(ArenaSettings(), costs)
    assert five["trainings"] == pytest.approx(5 * one["trainings"]) and five["sampling"] == pytest.approx(5 * one["sampling"])
    assert five["tuning"] == pytest.approx(one["tuning"]) and one["tuning"] > 0  # the sweep runs on the first seed only
    assert five["wall"] == pytest.approx(sum(v for k, v in five.items() if k != "wall") / 2)
    calls = sum(r.sampler.unet_calls_per_image() for r in rows(ArenaSettings()).values() if not r.control_of)
    assert one["sampling"] == pytest.approx(ArenaSettings().images * calls * 0.01)
    four = estimate(ArenaSettings(budget=4, tuning_from="x"), costs)
    assert four["tuning"] == 0 and four["trainings"] > 3 * five["trainings"]  # peers and stages scale with the budget
    assert estimate(ArenaSettings(), MEASURED_COSTS)["wall"] > 0


def test_the_peers_import_path_follows_this_checkout_even_after_another_left_a_link(tmp_path, monkeypatch):
    from unifl.pocket.arena import run

    checkout = tmp_path / "checkout-2"  # not named "unifl": the peers import it through a link
    checkout.mkdir()
    monkeypatch.setattr(run, "REPO_ROOT", checkout)
    folder = tmp_path / "_pythonpath"
    folder.mkdir()
    (folder / "unifl").symlink_to(tmp_path / "a-deleted-checkout", target_is_directory=True)  # dangling
    assert run.package_path_entry(tmp_path) == folder and (folder / "unifl").resolve() == checkout
    assert run.package_path_entry(tmp_path) == folder and (folder / "unifl").resolve() == checkout  # and again: kept
    monkeypatch.chdir(tmp_path)  # `unifl arena` writes to out/arena, a relative folder, and each peer runs in its own
    assert run.package_path_entry(Path("relative-run")) == tmp_path / "relative-run" / "_pythonpath"


def test_the_arena_works_in_absolute_paths_whatever_folder_it_is_given(tmp_path, monkeypatch):
    """Each peer runs with its own folder as the working directory: a relative ``--out`` there means another place."""
    from unifl.pocket.arena import run

    planned = []

    def plan(out, settings, judge_path=""):
        planned.append(out)
        raise KeyboardInterrupt  # stop before any job runs

    monkeypatch.setattr(run, "plan_jobs", plan)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.run_arena("out/arena", ArenaSettings.smoke())
    assert planned == [tmp_path / "out" / "arena"]


def test_a_sweep_chosen_after_its_own_test_rows_were_sampled_is_marked_so(tmp_path):
    import os

    from unifl.pocket.arena.report import _tuning, tuning_table

    for name in ("stage1", "stage2"):
        axis = {"row": "r", "metric": "fd", "axis": "learning_rate", "hyperparameters": {"learning_rate": 2e-4}, "widened": 1, "at_edge": name == "stage2",
                "candidates": {"0.0002": {"learning_rate": 2e-4, "hyperparameters": {"learning_rate": 2e-4}, "steps": 100, "fd": 10.0, "prompt_accuracy": 0.5}}}
        (tmp_path / "tuning" / name).mkdir(parents=True)
        (tmp_path / "tuning" / name / "choice.json").write_text(json.dumps({"row": "r", "metric": "fd", "hyperparameters": axis["hyperparameters"], "axes": [axis]}))
    for row, when in (("base_20", 500), ("stage1_no_pefl_20", 2000), ("stage2_4", 5000)):
        (tmp_path / "samples" / row).mkdir(parents=True)
        (tmp_path / "samples" / row / "seed0.safetensors").write_bytes(b"")
        os.utime(tmp_path / "samples" / row / "seed0.safetensors", (when, when))
    os.utime(tmp_path / "tuning" / "stage1" / "choice.json", (3000, 3000))  # after an ablation it tunes was sampled
    os.utime(tmp_path / "tuning" / "stage2" / "choice.json", (3000, 3000))  # the base's samples do not count
    tuning = _tuning(tmp_path, rows(ArenaSettings()))
    assert not tuning["stage1"]["before_sampling"] and tuning["stage2"]["before_sampling"]
    lines = tuning_table(tuning)[2:]
    assert lines[0].endswith("| ✓ (after its test rows were sampled) (grid widened 1×) |") and lines[1].endswith("| ✓ (at the grid's edge after 1 widenings) |")


def test_evaluations_are_counted_once_per_model_and_a_model_inside_a_model_is_not_counted_again():
    import torch
    from torch import nn
    from unifl.pocket.arena.counting import count_feedback_models, new_counter

    class Inner(nn.Module):
        def forward(self, images):
            return images.mean()

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, images, prompts=None):
            return self.inner(images)

    first = new_counter()
    count_feedback_models([Outer(), Inner(), None], first)
    Outer()(torch.zeros(4, 3, 8, 8))  # one model, its inner model not counted again
    Inner()(torch.zeros(2, 3, 8, 8))
    assert first == {"unet": 0, "feedback": 6}
    second = new_counter()  # a worker's next job counts afresh, the first count stops
    count_feedback_models([Outer()], second)
    Outer()(torch.zeros(3, 3, 8, 8))
    assert second["feedback"] == 3 and first["feedback"] == 6


def test_validation_runs_choose_defaults_by_changing_unifls_config_alone():
    """``--unifl-set`` / ``--stage2-set``: two arenas that differ only in a UniFL setting (docs/paper-choices.md)."""
    from unifl.pocket.arena.plan import ArenaSettings, trainings

    settings = ArenaSettings(split="validation", unifl_overrides=("aesthetic.prefix_steps=4",), stage2_overrides=("adversarial.schedule=step-counts",))
    plan = trainings(settings)
    assert "aesthetic.prefix_steps=4" in plan["stage1"].overrides and "adversarial.schedule=step-counts" not in plan["stage1"].overrides
    for name in ("stage2", "stage2_from_base", "stage2_no_adversarial"):
        assert {"aesthetic.prefix_steps=4", "adversarial.schedule=step-counts"} <= set(plan[name].overrides), name
    assert all(not t.overrides or "adversarial.schedule=step-counts" not in t.overrides for t in plan.values() if t.method != "unifl")


def test_stage2_is_judged_at_8_steps_against_its_own_4():
    from unifl.pocket.arena import claims
    from unifl.pocket.arena.plan import ArenaSettings, rows

    assert "stage2_8" in rows(ArenaSettings())
    eight = [c for c in claims.family() if c.a == "stage2_8"]
    assert {c.b for c in eight} == {"stage2_4"} and {c.kind for c in eight} == {"no_worse"}
