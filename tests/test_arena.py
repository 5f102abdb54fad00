"""The arena: its judges' checks and statistics, its claims against spreads, its plan and seeds, the docs
generator, the peer glue's patches (against the peers' real scripts where a copy is on the machine), and a
smoke run end to end that a second invocation resumes without redoing a job."""

import importlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import unifl
import torch
from unifl.pocket.arena import claims as arena_claims
from unifl.pocket.arena.docs import BEGIN, END, write_docs
from unifl.pocket.arena.plan import SPLITS, TRAINING_SEEDS, ArenaSettings, rows, trainings
from unifl.pocket.judges import (
    JUDGE_SEEDS,
    FoundObject,
    Reading,
    aspect_shortfall,
    judge_targets,
    kernel_inception_distance,
    mirror,
    prompt_checks,
)
from unifl.pocket.world import PocketDataset, relation

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


def _summary(**metrics):
    return {m: {"mean": (lo + hi) / 2, "min": lo, "max": hi, "n": 3} for m, (lo, hi) in metrics.items()}


def test_a_claim_holds_only_when_the_spreads_do_not_overlap():
    a, b = _summary(prompt_accuracy=(0.50, 0.55), fd=(10, 12)), _summary(prompt_accuracy=(0.40, 0.52), fd=(13, 15))
    assert not arena_claims.beats(a, b, "prompt_accuracy")  # 0.50 < 0.52: overlapping
    assert arena_claims.beats(a, b, "fd") and not arena_claims.beats(b, a, "fd")  # lower is better
    claim = arena_claims.Claim("x", "no_worse", "a", "b", ("fd",), "paper")
    assert arena_claims.check(claim, {"a": b, "b": a})["holds"] is False  # b clearly better on FD: a is worse
    assert arena_claims.check(replace(claim, kind="beats"), {"a": a, "b": b})["holds"] is True


def test_every_claim_names_rows_the_arena_makes_and_skips_those_of_missing_peers():
    planned = set(rows(ArenaSettings()))
    all_claims = arena_claims.planned_claims(planned)
    assert {c.group for c in all_claims} == {"paper", "ablation", "peer"} and len(all_claims) >= 30
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
    assert plan["lcm_lora"].budget_of == "stage2" and plan["alignprop_steps"].steps_of == "stage1" and plan["alignprop_time"].budget_of == "stage1"
    assert len(TRAINING_SEEDS) * ArenaSettings().images >= 1024 and ArenaSettings.smoke().split == "validation"


def test_the_docs_generator_refuses_a_smoke_run_and_fills_only_its_block(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pocket-world.md").write_text(f"# before\n{BEGIN}\nold\n{END}\n# after\n")
    summary = {m: {"mean": 0.5, "min": 0.4, "max": 0.6, "n": 3} for m in arena_claims.METRICS}
    metrics = {
        "settings": {"quick": True, "seeds": [0, 1, 2], "num_prompts": 256, "images_per_prompt": 4}, "split": {"name": "test"}, "seconds": 600,
        "rows": {"stage2_4": {"summary": summary, "group": "unifl", "label": "UniFL stage 2", "pooled_realism": {"fd": 1.0, "kid": 0.1, "images": 1032}},
                 "pcm_4": {"summary": summary, "group": "peer", "label": "PCM", "pooled_realism": {"fd": 2.0, "kid": 0.2, "images": 1032}}},
        "pooled_realism_floor_real_vs_real": {"fd": 0.5, "kid": 0.0, "images": 1032},
        "references": {k: {"summary": summary} for k in ("real_same_scenes", "real_other_scenes", "uniform_noise")},
        "claims": [{"claim": "Stage 2 beats PCM", "holds": False, "numbers": "n", "group": "peer"}],
        "trainings": {"pcm": {"0": {"method": "pcm", "seconds": 60, "steps": 30, "patches": ["a patch"], "version": "G-U-N@abc"}}},
        "peers_skipped": ["alignprop"],
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="smoke run"):
        write_docs(path, docs)
    metrics["settings"]["quick"] = False
    path.write_text(json.dumps(metrics))
    write_docs(path, docs)
    page = (docs / "pocket-world.md").read_text()
    assert page.startswith("# before") and page.rstrip().endswith("# after") and "old" not in page and "stage2_4" in page
    peers = (docs / "peers.md").read_text()
    assert "Stage 2 beats PCM" in peers and "a patch" in peers and "G-U-N@abc" in peers and "alignprop" in peers


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
        adversarial = method == "pcm_adv"
        patched = common.patched_copy(source / glue.SCRIPTS[adversarial], glue.script_patches(adversarial), tmp_path)
        if adversarial:
            common.patched_copy(source / glue.DISCRIMINATOR, glue.DISCRIMINATOR_PATCHES, tmp_path)
    text = patched.read_text()
    assert "_unifl_budget.spent(global_step, logs)" in text and "torchvision" not in text.split("def ")[0].replace("# ", "")


@pytest.mark.slow
def test_smoke_arena_runs_end_to_end_and_a_second_run_redoes_nothing(tmp_path, capsys):
    from unifl.pocket.arena.run import run_arena
    from unifl.pocket.build_judges import QUICK, build

    judge = tmp_path / "judge"
    build(judge, QUICK, log=lambda line: None)
    settings = ArenaSettings.smoke().with_(num_prompts=4, num_real=8, peers=(), ablations=False)
    out = tmp_path / "arena"
    metrics = run_arena(out, settings, judge_path=str(judge / "prompt.safetensors"))
    assert {"base_20", "base_4_cfg1", "stage1_20", "stage2_4", "stage2_1"} <= set(metrics["rows"])
    for row in metrics["rows"].values():
        assert set(row["summary"]) == set(arena_claims.METRICS) and row["summary"]["fd"]["n"] == 1
    assert (out / "report.md").read_text().count("grid_") >= len(metrics["rows"])
    assert metrics["trainings"]["stage2"]["0"]["unet_evaluations"] > 0
    # stage 1: 4 aspect rewards and 3 perception models per step; stage 2: the rewards and the discriminator
    assert metrics["trainings"]["stage1"]["0"]["feedback_evaluations"] >= settings.stage1_steps * 4 * 7
    assert metrics["trainings"]["stage2"]["0"]["feedback_evaluations"] > settings.stage2_steps * 4 * 4
    assert set(metrics["tuning"]) == {"stage1", "stage2"} and "## Learning rates, chosen on the validation split" in (out / "report.md").read_text()
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
    from unifl.pocket.arena.plan import TUNING

    monkeypatch.setattr(run, "peer_present", lambda method: True)
    settings = ArenaSettings()
    jobs = {job.name: job for job in run.plan_jobs(tmp_path, settings)[0]}
    assert {"stage1", "stage2"} <= set(TUNING)  # UniFL gets the sweep the peers get
    for name in TUNING:
        candidates = tuple(f"{name}~lr{rate:g}@0" for rate in settings.learning_rates)
        assert jobs[f"{name}~choice@0"].after == candidates
        budget = {"stage1": (), "stage2": ("stage1@0",)}.get(name, ("stage1@0",) if name.startswith("alignprop") else ("stage2@0",))
        assert all(set(budget) <= set(jobs[c].after) for c in candidates)  # stage 2 continues, a peer's budget is, the chosen stage
    tuned_by = {"stage1": "stage1", "stage1_no_pefl": "stage1", "stage1_global_reward": "stage1", "stage2": "stage2",
                "stage2_no_adversarial": "stage2", "lcm_lora": "lcm_lora", "pcm": "pcm", "pcm_adv": "pcm_adv",
                "alignprop_time": "alignprop_time", "alignprop_steps": "alignprop_time"}
    for seed in settings.seeds:
        for name, tuned in tuned_by.items():
            assert f"{tuned}~choice@0" in jobs[f"{name}@{seed}"].after
    assert "peer_data" not in jobs["stage1~lr0.001@0"].after  # UniFL reads the pocket stream itself


def test_a_unifl_candidate_trains_with_its_rate_and_the_test_run_adopts_the_chosen_one(tmp_path, monkeypatch):
    from unifl.pocket.arena import run
    from unifl.pocket.arena.plan import trainings

    calls = []
    monkeypatch.setattr(run, "train_unifl", lambda out, name, seed, overrides, init: calls.append((out, seed, overrides, init)) or {"seed": seed})
    stage2 = trainings(ArenaSettings())["stage2"]
    run._training_job(str(tmp_path), "stage2", stage2, 0, ArenaSettings(), "", 1e-3, str(tmp_path / "tuning" / "stage2" / "lr0.001"))
    assert calls[-1][2][-1] == "optim.learning_rate=0.001" and calls[-1][3].endswith("trainings/stage1/seed0/unifl-stage1.safetensors")
    (tmp_path / "tuning" / "stage2").mkdir(parents=True, exist_ok=True)
    (tmp_path / "tuning" / "stage2" / "choice.json").write_text(json.dumps({"learning_rate": 1e-3, "seed": 0}))
    run._training_job(str(tmp_path), "stage2_no_adversarial", trainings(ArenaSettings())["stage2_no_adversarial"], 1, ArenaSettings(), "")
    assert calls[-1][1] == 1 and calls[-1][2][-1] == "optim.learning_rate=0.001"  # an ablation takes its stage's rate
    candidate = tmp_path / "tuning" / "stage2" / "lr0.001"
    candidate.mkdir()
    (candidate / "result.json").write_text(json.dumps({"lora": {"format": "kohya", "path": str(candidate / "unifl-stage2.safetensors")}, "steps": 3}))
    adopted = run._training_job(str(tmp_path), "stage2", stage2, 0, ArenaSettings(), "")
    assert len(calls) == 2 and adopted["lora"]["path"] == str(tmp_path / "trainings" / "stage2" / "seed0" / "unifl-stage2.safetensors")


def test_the_sweep_picks_fd_low_and_prompt_accuracy_high_and_adopts_the_chosen_run(tmp_path):
    from unifl.pocket.arena.run import _adopt_candidate, best_candidate

    low_fd, accurate = {"learning_rate": 2e-4, "fd": 10.0, "prompt_accuracy": 0.4}, {"learning_rate": 1e-3, "fd": 12.0, "prompt_accuracy": 0.5}
    assert best_candidate([low_fd, accurate], "fd") is low_fd and best_candidate([low_fd, accurate], "prompt_accuracy") is accurate
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


def test_the_time_estimate_prices_every_job_and_splits_the_work_over_the_workers():
    from unifl.pocket.arena.estimate import estimate

    costs = {"stage1_step": 1.0, "stage2_step": 1.0, "alignprop_step": 1.0, "unet_image": 0.01, "measure_image": 0.02}
    one = estimate(ArenaSettings(seeds=(0,)), costs)
    three = estimate(ArenaSettings(), costs)
    assert three["trainings"] == pytest.approx(3 * one["trainings"]) and three["sampling"] == pytest.approx(3 * one["sampling"])
    assert three["tuning"] == pytest.approx(one["tuning"]) and one["tuning"] > 0  # the sweep runs on the first seed only
    assert three["wall"] == pytest.approx((three["trainings"] + three["sampling"] + three["tuning"] + three["measuring"]) / 2)
    calls = sum(r.sampler.unet_calls_per_image() for r in rows(ArenaSettings()).values())
    assert one["sampling"] == pytest.approx(ArenaSettings().images * calls * 0.01)


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

    candidates = {"0.0002": {"learning_rate": 2e-4, "steps": 100, "fd": 10.0, "prompt_accuracy": 0.5}}
    for name in ("stage1", "stage2"):
        (tmp_path / "tuning" / name).mkdir(parents=True)
        (tmp_path / "tuning" / name / "choice.json").write_text(json.dumps({"row": "r", "metric": "fd", "learning_rate": 2e-4, "candidates": candidates}))
    for row, when in (("base_20", 500), ("stage1_no_pefl_20", 2000), ("stage2_4", 5000)):
        (tmp_path / "samples" / row).mkdir(parents=True)
        (tmp_path / "samples" / row / "seed0.safetensors").write_bytes(b"")
        os.utime(tmp_path / "samples" / row / "seed0.safetensors", (when, when))
    os.utime(tmp_path / "tuning" / "stage1" / "choice.json", (3000, 3000))  # after an ablation it tunes was sampled
    os.utime(tmp_path / "tuning" / "stage2" / "choice.json", (3000, 3000))  # the base's samples do not count
    tuning = _tuning(tmp_path, rows(ArenaSettings()))
    assert not tuning["stage1"]["before_sampling"] and tuning["stage2"]["before_sampling"]
    lines = tuning_table(tuning)[2:]
    assert lines[0].endswith("| ✓ (after its test rows were sampled) |") and lines[1].endswith("| ✓ |")


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
