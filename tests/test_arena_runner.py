"""The arena's runner around the judges: peers fetched at pinned commits (and one loud line and a "not run" row when
one is missing), post-filter controls applied to a row's own test images, per-image judge values that agree with
the judge's own summary, training compute summed over a LoRA's lineage, and the budget curve's levels and figure."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from unifl.pocket.arena import peers
from unifl.pocket.arena.plan import ArenaSettings, rows, trainings


def _git_repository(folder: Path) -> str:
    folder.mkdir()
    run = lambda *args: subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True)  # noqa: E731
    run("init", "-q")
    (folder / "train.py").write_text("print('a peer')\n")
    run("add", "train.py")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    first = run("rev-parse", "HEAD").stdout.strip()
    (folder / "train.py").write_text("print('a later peer')\n")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    run("config", "uploadpack.allowAnySHA1InWant", "true")  # as GitHub: a commit can be fetched by its hash
    return first


def test_make_peers_fetches_the_pinned_commit_and_says_how_to_work_offline(tmp_path, monkeypatch):
    first = _git_repository(tmp_path / "upstream")
    monkeypatch.setattr(peers, "PEERS_DIR", tmp_path / ".peers")
    monkeypatch.delenv("UNIFL_PEER_PCM", raising=False)
    monkeypatch.setitem(peers.REPOSITORIES, "pcm", peers.PeerRepository(f"file://{tmp_path / 'upstream'}", first, "pcm", "UNIFL_PEER_PCM"))
    target = peers.fetch("pcm")
    assert target == tmp_path / ".peers" / "src" / "pcm" and (target / "train.py").read_text() == "print('a peer')\n"  # the pin, not the tip
    assert peers.fetch("pcm") == target  # already there: left as it is
    monkeypatch.setitem(peers.REPOSITORIES, "diffusers", peers.PeerRepository(f"file://{tmp_path / 'nowhere'}", first, "diffusers", "UNIFL_PEER_DIFFUSERS"))
    for _ in range(2):  # a failed fetch leaves nothing behind that a second run (or the arena) would take for a copy
        with pytest.raises(RuntimeError, match="offline.*UNIFL_PEER_DIFFUSERS=<that folder>"):
            peers.fetch("diffusers")
        assert sorted(p.name for p in (tmp_path / ".peers" / "src").iterdir()) == ["pcm"]
    monkeypatch.setenv("UNIFL_PEER_PCM", str(tmp_path / "a-copy"))
    assert peers.peer_sources()["pcm_adv"]["source"] == str(tmp_path / "a-copy")


def test_no_default_path_names_a_machine(monkeypatch):
    from unifl.pocket.arena import run

    for variable in ("UNIFL_PEERS_PYTHON", "UNIFL_PEER_TRL_PYTHON", "UNIFL_PEER_DIFFUSERS", "UNIFL_PEER_PCM"):
        monkeypatch.delenv(variable, raising=False)
    sources = peers.peer_sources()
    for entry in sources.values():
        for value in entry.values():
            assert value.startswith("pip:") or Path(value).is_relative_to(run.REPO_ROOT / ".peers")  # this checkout's .peers/
    text = "\n".join(p.read_text() for p in [*Path(run.REPO_ROOT, "pocket", "arena").glob("*.py"), *Path(run.REPO_ROOT, "bench", "peers").glob("*.py")])
    assert "/work/" not in text and "/home/" not in text


def test_a_missing_peer_is_one_loud_line_and_a_not_run_row(tmp_path, monkeypatch, capsys):
    from unifl.pocket.arena import run
    from unifl.pocket.arena.report import _why_not_run

    monkeypatch.setattr(run, "missing_reason", lambda method: "no copy of it here (run `make peers`)" if method == "pcm" else "")
    jobs, plan = run.plan_jobs(tmp_path, ArenaSettings(), post_filters=False)
    assert plan["missing"] == {"pcm": "no copy of it here (run `make peers`)"} and "pcm" not in plan["present"] and "pcm_own" not in plan["present"]
    assert "pcm_4" not in plan["rows"] and "pcm_adv_4" in plan["rows"] and not any(job.name.startswith("pcm@") for job in jobs)
    assert _why_not_run(plan["planned_rows"]["pcm_own_4"], plan) == "no copy of it here (run `make peers`)"
    assert _why_not_run(plan["planned_rows"]["pcm_adv_4+filter"], plan) == "no post-filter registry in the judges"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_jobs", stop)
    monkeypatch.setattr(run, "post_filters_available", lambda: False)
    with pytest.raises(KeyboardInterrupt):
        run.run_arena(tmp_path / "arena", ArenaSettings.smoke().with_(peers=("pcm",)))
    err = capsys.readouterr()
    assert err.err.count("PEER NOT RUN: pcm") == 1 and "predicted" in err.out


class UnsharpStandIn:
    """A stand-in for the judges' post-filter registry (which the judges own): an unsharp mask whose strength is
    chosen to match the real images' mean high-frequency energy."""

    strengths = (0.0, 0.5, 1.0, 2.0)

    def apply(self, images, choice):
        blurred = torch.nn.functional.avg_pool2d(images, 3, 1, 1, count_include_pad=False)
        return images + choice["strength"] * (images - blurred)

    def choose(self, images, real_images):
        energy = lambda x: float((x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean())  # noqa: E731
        target = energy(real_images)
        best = min(self.strengths, key=lambda s: abs(energy(self.apply(images, {"strength": s})) - target))
        return {"filter": "unsharp", "strength": best}


def test_a_control_row_filters_its_rows_test_images_with_the_filter_chosen_on_validation(tmp_path, monkeypatch):
    from unifl.pocket.arena import run
    from unifl.pocket.arena.measure import load_images, save_images

    settings = ArenaSettings.smoke()
    sampled = []

    def sample_row(sampler, lora, prompts, seeds, path):
        sampled.append((lora, path))
        blurry = torch.nn.functional.avg_pool2d(torch.rand(len(prompts), 3, 64, 64, generator=torch.Generator().manual_seed(0)), 5, 1, 2)
        save_images((blurry * 255).round().to(torch.uint8), Path(path))

    measured = []
    monkeypatch.setattr(run, "sample_row", sample_row)
    monkeypatch.setattr(run, "real_images", lambda seed, start, count: torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    monkeypatch.setattr(run, "_measure", lambda out_dir, row, seed, images, settings, judge: measured.append((row, seed, images)) or "m")
    row = rows(settings)["base_4_cfg1"]
    choice = run._control_choice_job(str(tmp_path), "base_4_cfg1", None, row.sampler, settings, "", UnsharpStandIn())
    assert choice["filter"] == "unsharp" and choice["strength"] > 0 and choice["split"] == "validation"  # blurry images get sharpened
    assert sampled[0] == (None, str(tmp_path / "controls" / "base_4_cfg1" / "validation.safetensors"))
    sample_row(None, None, ["p"] * 4, [0] * 4, str(tmp_path / "samples" / "base_4_cfg1" / "seed0.safetensors"))
    run._control_job(str(tmp_path), "base_4_cfg1+filter", "base_4_cfg1", 0, settings, "", UnsharpStandIn())
    original = load_images(tmp_path / "samples" / "base_4_cfg1" / "seed0.safetensors")
    expected = (UnsharpStandIn().apply(original, choice).clamp(0, 1) * 255).round() / 255
    assert measured[0][:2] == ("base_4_cfg1+filter", 0) and torch.allclose(measured[0][2], expected)


def test_per_image_values_agree_with_the_judges_own_summary():
    from unifl.pocket.arena.measure import Judges, prompt_set
    from unifl.pocket.arena.plan import SPLITS
    from unifl.pocket.judges.judges import prompt_accuracy
    from unifl.pocket.plugin import register
    from unifl.pocket.world.world import WorldConfig, render

    register()
    prompts = prompt_set(SPLITS["validation"], ArenaSettings(num_prompts=6, images_per_prompt=1), 0)
    images = torch.stack([render(scene, WorldConfig(resolution=64)).image for scene in prompts.scenes])
    images[3:] = torch.rand(3, 3, 64, 64)  # half noise: the values differ per image
    judges = Judges()
    per_image = judges.per_image(images, prompts)
    assert per_image["summary_v1"] == pytest.approx(prompt_accuracy(images, prompts.scenes, judges.prompt), nan_ok=True)
    assert float(per_image["prompt_accuracy_v1"].mean()) == pytest.approx(per_image["summary_v1"]["prompt_accuracy"])
    assert float(per_image["prompt_accuracy"].mean()) == pytest.approx(per_image["summary"]["prompt_accuracy"], rel=1e-6)
    assert per_image["prompt_accuracy"][:3].mean() > per_image["prompt_accuracy"][3:].mean()
    if per_image["version"] == 2:  # the judges' version 2, from the same reading
        assert per_image["summary"] == pytest.approx(prompt_accuracy(images, prompts.scenes, judges.prompt, version=2), nan_ok=True)
    whole = judges.aspects(images, prompts.prompts)
    assert {a: float(v.mean()) for a, v in per_image["aspects"].items()} == pytest.approx(whole, rel=1e-5)


def test_a_lora_trained_from_another_carries_its_compute():
    from unifl.pocket.arena.counting import training_compute

    plan = trainings(ArenaSettings())
    result = lambda s, u: {"seconds": s, "unet_evaluations": u, "feedback_evaluations": 1, "images_seen": 400}  # noqa: E731
    results = {"stage1": {"0": result(150, 11000), "1": result(130, 11000)}, "stage2": {"0": result(120, 8400), "1": result(100, 8400)},
               "stage2_from_base": {"0": result(110, 8000)}}
    stage2 = training_compute("stage2", plan, results)
    assert stage2["seconds"] == pytest.approx(250) and stage2["unet_evaluations"] == 19400 and stage2["lineage"] == ["stage1", "stage2"]
    assert training_compute("stage2_from_base", plan, results)["seconds"] == 110 and training_compute(None, plan, results) is None
    assert training_compute("pcm", plan, results) == {}


def test_the_budget_curve_has_its_levels_and_one_figure(tmp_path):
    from unifl.pocket.arena.curves import levels, plot

    plan = levels(ArenaSettings(), tmp_path / "standard", tmp_path / "curves")
    assert plan[1] == (tmp_path / "standard", ArenaSettings())
    x4, x16 = plan[4][1], plan[16][1]
    assert x4.steps == (400, 400) and len(x4.seeds) == 5 and x16.steps == (1600, 1600) and x16.seeds == (0,)
    assert x16.tuning_from == str((tmp_path / "standard").resolve()) and not x16.controls and x16.lora_variants == ("unifl",)
    assert levels(ArenaSettings.standard(), tmp_path / "standard", tmp_path / "curves")[16][1].lora_variants == ("best",)  # the standard run's variant

    def row(seconds, value):
        return {"compute": {"training": {"seconds": seconds, "unet_evaluations": seconds * 80}}, "intervals": {m: {"point": value, "interval": [value - 0.1, value + 0.1]} for m in ("prompt_accuracy", "kid")}}

    metrics = {b: {"rows": {"stage2_4": row(250 * b, 0.4 + b / 100), "pcm_4": row(260 * b, 0.4), "base_20": {"compute": {"training": None}, "intervals": {}}}} for b in (1, 4, 16)}
    figure = plot(metrics, tmp_path / "curves.png")
    assert figure.is_file() and figure.stat().st_size > 10_000


def test_the_judges_post_filters_choose_a_sharpen_for_blurred_real_renders_where_the_judges_have_them():
    pytest.importorskip("unifl.pocket.judges.post_filters", reason="the judges' post-filter registry is not in this checkout")
    from unifl.pocket.arena.controls import JudgePostFilters
    from unifl.pocket.arena.measure import real_images
    from unifl.pocket.judges.post_filters import apply_post_filter

    real = real_images(402, 0, 48)
    blurred = torch.nn.functional.avg_pool2d(real_images(402, 48, 48), 3, 1, 1, count_include_pad=False)
    filters = JudgePostFilters()
    choice = filters.choose(blurred, real)
    assert choice["filter"] != "none" and choice["strength"] > 0 and len(choice["candidates"]) > 3
    assert torch.equal(filters.apply(blurred, choice), apply_post_filter(choice["filter"], blurred, choice["strength"]))


def _choice(name: str, row: str, metric: str, lr: float, scores: dict[float, float]) -> dict:
    candidates = {f"{v:g}": {"learning_rate": v, "hyperparameters": {"learning_rate": v}, "steps": 10, "fd": s if metric == "fd" else 99.0,
                             "prompt_accuracy": s if metric != "fd" else 0.5} for v, s in scores.items()}
    axis = {"axis": "learning_rate", "row": row, "metric": metric, "candidates": candidates, "hyperparameters": {"learning_rate": lr}, "widened": 0, "at_edge": False}
    return {"training": name, "row": row, "metric": metric, "seed": 0, "images": 16, "hyperparameters": {"learning_rate": lr}, "run": f"/tuning/{name}/lr{lr:g}", "axes": [axis]}


def test_the_standard_run_takes_each_peers_better_lora_variant_from_the_tuning_run(tmp_path, monkeypatch):
    """The tuning run sweeps both LoRA variants of a peer; the standard run trains the one whose chosen candidate
    judged better on validation (lower FD here: its own LoRA), with that variant's rate, and says so in its report."""
    from unifl.pocket.arena import run
    from unifl.pocket.arena.report import tuning_table
    from unifl.pocket.arena.run import adopt_tuning, write_json

    monkeypatch.setattr(run, "missing_reason", lambda method: "")
    tuned, out = tmp_path / "tune", tmp_path / "standard"
    for name, row, metric, lr, scores in [("stage1", "stage1_20", "prompt_accuracy", 2e-4, {1e-4: 0.4, 2e-4: 0.5}),
                                          ("stage2", "stage2_4", "fd", 2e-4, {2e-4: 110.0, 5e-4: 120.0}),
                                          ("stage2_from_base", "stage2_from_base_4", "fd", 2e-4, {2e-4: 115.0}),
                                          ("lcm_lora", "lcm_lora_lcm_4", "fd", 1e-3, {1e-3: 130.0, 5e-4: 140.0}),
                                          ("lcm_lora_own", "lcm_lora_own_lcm_4", "fd", 5e-4, {5e-4: 125.0, 1e-3: 128.0})]:
        write_json(tuned / "tuning" / name / "choice.json", _choice(name, row, metric, lr, scores))
    settings = ArenaSettings.standard(tuning_from=str(tuned), peers=("lcm_lora",))
    assert set(trainings(settings)) == {"stage1", "stage2", "stage2_from_base", "lcm_lora"} and trainings(settings)["lcm_lora"].lora == "best"
    adopt_tuning(tuned, out, settings)
    lcm = __import__("json").loads((out / "tuning" / "lcm_lora" / "choice.json").read_text())
    assert lcm["lora"] == "own" and lcm["hyperparameters"] == {"learning_rate": 5e-4} and lcm["lora_scores"] == {"unifl": 130.0, "own": 125.0}
    assert lcm["run"] == "" and lcm["from"].endswith("lcm_lora/choice.json")  # the candidate trained on validation is not adopted
    assert any("| LoRA | own |" in line and "unifl: 130.000, own: 125.000" in line for line in tuning_table({"lcm_lora": lcm}))

    trained = {}
    monkeypatch.setattr(run, "train_peer", lambda *args: trained.setdefault("call", args) and {})
    for stage in ("stage1", "stage2"):
        write_json(out / "trainings" / stage / "seed3" / "result.json", {"seconds": 100.0})
    run._training_job(str(out), "lcm_lora", trainings(settings)["lcm_lora"], 3, settings, str(tmp_path / "data"))
    assert trained["call"][-2:] == ({"learning_rate": 5e-4}, "own") and trained["call"][4] == 200.0  # its LoRA, its rate, stage 1 + 2's time

    with pytest.raises(ValueError, match="tuning run.*--tuning-from"):
        run.run_arena(tmp_path / "elsewhere", ArenaSettings(lora_variants=("best",)))
    assert not (tmp_path / "elsewhere").exists()


def test_a_tuning_run_without_a_peers_own_variant_is_named(tmp_path, monkeypatch):
    from unifl.pocket.arena import run
    from unifl.pocket.arena.run import adopt_tuning, write_json

    monkeypatch.setattr(run, "missing_reason", lambda method: "")
    for name, row in [("stage1", "stage1_20"), ("stage2", "stage2_4"), ("stage2_from_base", "stage2_from_base_4"), ("pcm", "pcm_4")]:
        write_json(tmp_path / "tune" / "tuning" / name / "choice.json", _choice(name, row, "fd", 1e-3, {1e-3: 100.0}))
    with pytest.raises(FileNotFoundError, match=r"pcm_own/choice.json.*both LoRA variants"):
        adopt_tuning(tmp_path / "tune", tmp_path / "out", ArenaSettings.standard(tuning_from=str(tmp_path / "tune"), peers=("pcm",)))
    with pytest.raises(FileNotFoundError, match=r"make arena-tune"):
        adopt_tuning(tmp_path / "nothing", tmp_path / "out2", ArenaSettings.standard(tuning_from=str(tmp_path / "nothing"), peers=()))


def test_the_standard_run_fits_three_hours_as_priced_and_the_tuning_run_sweeps_what_it_adopts():
    """Issue 18: the standard run (five seeds, ×1, every control) within 3 hours on 2 cores, priced with the costs
    measured on this kind of machine; the sweeps live in the tuning run, which trains both LoRA variants."""
    from unifl.pocket.arena.estimate import MEASURED_COSTS, estimate
    from unifl.pocket.arena.plan import tuning_spec

    standard, tuning = ArenaSettings.standard(), ArenaSettings.tuning()
    assert standard.split == "test" and len(standard.seeds) == 5 and standard.controls and standard.budget == 1
    assert estimate(standard, MEASURED_COSTS)["wall"] <= 3 * 3600
    assert tuning.split == "validation" and tuning.seeds == (0,) and not tuning.tuning_from
    tuned = {name for name in trainings(tuning) if tuning_spec(name)}
    assert {name for name in trainings(standard) if tuning_spec(name)} <= tuned and {"lcm_lora_own", "pcm_adv_own", "alignprop_time_own"} <= tuned
    assert len(ArenaSettings.tuning().learning_rates) >= 4


def test_the_cli_runs_the_tuning_the_standard_and_the_ablations_arenas(monkeypatch):
    from unifl.cli import main
    from unifl.pocket.arena import run

    runs = []
    monkeypatch.setattr(run, "run_arena", lambda out_dir, settings: runs.append((out_dir, settings)))
    for argv in (["arena", "--tune"], ["arena"], ["arena", "--ablations", "--peers", "", "--out", "out/arena-ablations"], ["arena", "--tuning-from", ""],
                 ["arena", "--tune", "--tuning-from", "pocket/arena/tuned"]):
        assert main(argv) == 0
    (tune_out, tune), (out, standard), (ablation_out, ablations), (_, sweeping), (_, continued) = runs
    assert (tune_out, tune) == ("out/arena-tune", ArenaSettings.tuning())
    assert (out, standard) == ("out/arena", ArenaSettings.standard(tuning_from="pocket/arena/tuned"))
    assert ablation_out == "out/arena-ablations" and ablations.ablations and ablations.peers == () and ablations.tuning_from == "pocket/arena/tuned"
    assert sweeping.tuning_from == "" and sweeping.lora_variants == ("unifl", "own")
    assert continued == ArenaSettings.tuning(tuning_from="pocket/arena/tuned") and continued.sweep_missing


def test_a_tuning_run_sweeps_only_what_the_committed_choices_lack_and_the_export_names_no_machine_path(tmp_path, monkeypatch):
    """The sweeps take longer than a sitting: their choices are exported (runs relative to the tuning folder, the
    machine and commit beside them) and a later tuning run adopts those and sweeps the rest; the standard run
    refuses a missing choice with the command that makes it."""
    from unifl.pocket.arena import run
    from unifl.pocket.arena.run import adopt_tuning, plan_jobs, write_json
    from unifl.pocket.arena.tuned import export

    monkeypatch.setattr(run, "missing_reason", lambda method: "")
    tune = tmp_path / "tune"
    write_json(tune / "settings.json", {"split": "validation"})
    for name, row, metric in [("stage1", "stage1_20", "prompt_accuracy"), ("stage2", "stage2_4", "fd")]:
        choice = _choice(name, row, metric, 1e-4, {1e-4: 0.9, 2e-4: 0.8})
        choice["run"] = choice["axes"][0]["run"] = str(tune / "tuning" / name / "lr0.0001")
        write_json(tune / "tuning" / name / "choice.json", choice)
        write_json(tune / "tuning" / name / "lr0.0001" / "result.json", {"version": "this repository@0123456789abcdef"})
    committed = tmp_path / "committed"
    assert export(tune, committed) == ["stage1", "stage2"]
    exported = (committed / "tuning" / "stage1" / "choice.json").read_text()
    assert str(tmp_path) not in exported and json.loads(exported)["run"] == "tuning/stage1/lr0.0001"
    readme = (committed / "README.md").read_text()
    assert "| stage1 | stage1_20 | prompt_accuracy | learning_rate | 0.0001 |" in readme and "Candidates trained with `this repository@0123456789ab`" in readme

    settings = ArenaSettings.tuning(tuning_from=str(committed), peers=("pcm",))
    out = tmp_path / "continued"
    adopt_tuning(committed, out, settings)
    jobs, _ = plan_jobs(out, settings, post_filters=False)
    swept = {job.name.split("~")[0] for job in jobs if "~" in job.name}
    assert swept == {"stage2_from_base", "pcm", "pcm_own"}  # stage 1 and stage 2 were committed
    assert json.loads((out / "tuning" / "stage1" / "choice.json").read_text())["run"] == ""
    write_json(out / "tuning" / "pcm" / "choice.json", _choice("pcm", "pcm_4", "fd", 2e-4, {2e-4: 50.0}))
    assert export(out, committed) == ["pcm"]  # the continued run's own sweep; stage 1 and 2 stay as swept
    assert json.loads((committed / "tuning" / "stage1" / "choice.json").read_text())["run"] == "tuning/stage1/lr0.0001"
    assert json.loads((committed / "environment.json").read_text())["stage1"]["trained_at"] == ["this repository@0123456789ab"]
    with pytest.raises(FileNotFoundError, match=r"arena.tuned out/arena-tune"):
        adopt_tuning(committed, tmp_path / "standard", ArenaSettings.standard(tuning_from=str(committed), peers=()))
