"""The CLI as a user runs it: train from a TOML file, sample with the LoRA's contract, export, errors."""

import pytest
from conftest import FAST
from safetensors import safe_open
from unifl.cli import main

pytestmark = pytest.mark.slow


def write_config(path, model_dir, out_dir, stage="1", extra=""):
    overrides = "\n".join(f"# {o}" for o in FAST)  # documented in the file, applied with --set below
    path.write_text(f'preset = "tiny"\nstage = "{stage}"\n{overrides}\n[model]\npath = "{model_dir}"\n[logging]\noutput_dir = "{out_dir}"\n{extra}')
    return path


def test_train_sample_export_round_trip(tiny_sd15_dir, tmp_path, capsys):
    config = write_config(tmp_path / "stage2.toml", tiny_sd15_dir, tmp_path / "run", stage="2")
    sets = [a for o in FAST for a in ("--set", o)]
    assert main(["train", str(config), *sets]) == 0
    out = capsys.readouterr().out
    assert "samples per optimizer step" in out and "finished after 2 steps" in out
    lora = tmp_path / "run" / "unifl.safetensors"
    assert lora.is_file()

    assert main(["sample", "--model", str(tiny_sd15_dir), "--lora", str(lora), "--prompt", "a red cat", "--num-images", "2", "--height", "32", "--width", "32", "--out", str(tmp_path / "samples")]) == 0
    out = capsys.readouterr().out
    assert "2 DDIM steps, trailing spacing, CFG 1.0" in out  # the stage-2 LoRA's own contract
    assert len(list((tmp_path / "samples").glob("*-seed*.png"))) == 2 and (tmp_path / "samples" / "grid.png").is_file()
    # a step count the few-step LoRA was not trained for: the nearest it was, said on stderr
    assert main(["sample", "--model", str(tiny_sd15_dir), "--lora", str(lora), "--prompt", "a red cat", "--steps", "3", "--height", "32", "--width", "32", "--out", str(tmp_path / "samples3")]) == 0
    captured = capsys.readouterr()
    assert "trained to sample at 2 steps, not 3: sampling at 2" in captured.err and "2 DDIM steps" in captured.out

    exported = tmp_path / "exported.safetensors"
    assert main(["export", "latest", "--run-dir", str(tmp_path / "run"), "--out", str(exported)]) == 0
    with safe_open(str(exported), "pt") as f, safe_open(str(lora), "pt") as g:
        assert set(f.keys()) == set(g.keys()) and f.metadata()["unifl.stage"] == "2"
    assert main(["export", "latest", "--run-dir", str(tmp_path / "run"), "--out", str(exported)]) == 1
    assert "exists" in capsys.readouterr().err


def test_errors_are_one_line_naming_the_problem(tiny_sd15_dir, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "tiny"\n[lora]\nrnak = 4\n')
    assert main(["train", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "lora.rnak" in err and "rank" in err and "Traceback" not in err

    config = write_config(tmp_path / "c.toml", tiny_sd15_dir, tmp_path / "empty")
    assert main(["train", str(config), "--resume", "latest"]) == 1
    assert "no checkpoint" in capsys.readouterr().err

    assert main(["train", str(config), "--set", "model.path=/nowhere/model.safetensors"]) == 1
    assert "/nowhere/model.safetensors" in capsys.readouterr().err


def test_explain_lists_every_field(capsys):
    assert main(["train", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "pefl.noise_level = 10" in out and "adversarial.timestep_spacing = 'trailing'" in out


def test_commands_print_no_torchvision_fallback_warnings(tiny_sd15_dir, tmp_path):
    """transformers 5 warns "`CLIPImageProcessor` requires torchvision ... falling back" whenever a diffusers
    pipeline is imported without torchvision (UniFL never requires it); a user cannot act on that."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: transformers has nothing to fall back from")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "warning"}  # the conftest quiets transformers; a user's shell does not
    command = [sys.executable, "-m", "unifl", "sample", "--model", str(tiny_sd15_dir), "--prompt", "a red cat", "--steps", "1",
               "--height", "32", "--width", "32", "--out", str(tmp_path / "samples")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "requires torchvision" not in run.stderr + run.stdout and "falling back" not in run.stderr + run.stdout
