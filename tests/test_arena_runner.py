"""The arena's runner around the judges: peers fetched at pinned commits (and one loud line and a "not run" row when
one is missing), post-filter controls applied to a row's own test images, per-image judge values that agree with
the judge's own summary, training compute summed over a LoRA's lineage, and the budget curve's levels and figure."""

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
    from unifl.pocket.judges import prompt_accuracy
    from unifl.pocket.plugin import register
    from unifl.pocket.world import WorldConfig, render

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

    def row(seconds, value):
        return {"compute": {"training": {"seconds": seconds, "unet_evaluations": seconds * 80}}, "intervals": {m: {"point": value, "interval": [value - 0.1, value + 0.1]} for m in ("prompt_accuracy", "kid")}}

    metrics = {b: {"rows": {"stage2_4": row(250 * b, 0.4 + b / 100), "pcm_4": row(260 * b, 0.4), "base_20": {"compute": {"training": None}, "intervals": {}}}} for b in (1, 4, 16)}
    figure = plot(metrics, tmp_path / "curves.png")
    assert figure.is_file() and figure.stat().st_size > 10_000


def test_the_judges_post_filters_choose_a_sharpen_for_blurred_real_renders_where_the_judges_have_them():
    pytest.importorskip("unifl.pocket.post_filters", reason="the judges' post-filter registry is not in this checkout")
    from unifl.pocket.arena.controls import JudgePostFilters
    from unifl.pocket.arena.measure import real_images
    from unifl.pocket.post_filters import apply_post_filter

    real = real_images(402, 0, 48)
    blurred = torch.nn.functional.avg_pool2d(real_images(402, 48, 48), 3, 1, 1, count_include_pad=False)
    filters = JudgePostFilters()
    choice = filters.choose(blurred, real)
    assert choice["filter"] != "none" and choice["strength"] > 0 and len(choice["candidates"]) > 3
    assert torch.equal(filters.apply(blurred, choice), apply_post_filter(choice["filter"], blurred, choice["strength"]))
