"""`unifl check` / preflight: files present and loadable, data and masks, dtypes, predicted peak memory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from unifl.cli import main
from unifl.core.config import load_config
from unifl.core.diffusion.loading import empty_components, shipped_config_dir
from unifl.core.training.preflight import GIB, PreflightError, predict_memory, preflight


def test_a_runnable_tiny_config_is_ready(fast_config):
    report = preflight(fast_config("data.images=pocket"), device="cpu")
    assert report.ok, report.render()
    text = report.render()
    assert "model:" in text and "rewards[1] sharpness (detail)" in text and "ready to train" in text
    # The tiny model has neither SD1.5's nor SDXL's widths: its activations are not guessed.
    assert report.memory.activations is None and "not predicted" in text


def test_missing_and_wrong_files_are_named_with_the_fix(fast_config, tmp_path):
    config = fast_config('rewards=[{aspect = "detail", kind = "laion-aesthetic", path = "/models/nowhere"}]', "model.architecture=sdxl")
    report = preflight(config, device="cpu")
    assert not report.ok
    problems = {c.subject: c.detail for c in report.errors}
    assert "is 'sdxl' but" in problems["model.architecture"] and "set model.architecture = 'sd15'" in problems["model.architecture"]
    assert "/models/nowhere" in problems["rewards[0] laion-aesthetic (detail)"]
    with pytest.raises(PreflightError, match="nowhere"):
        report.raise_for_errors()


def test_structure_feedback_without_instance_masks_is_caught(fast_config, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(folder / "0001.png")
    (folder / "0001.txt").write_text("a grey square")
    config = fast_config(f"data.images={folder}", 'perception=[{aspect = "structure", kind = "random-features"}]')
    problems = {c.subject: c.detail for c in preflight(config, device="cpu").errors}
    assert "instances.png" in problems["perception[0]"]


def test_predicted_memory_of_the_real_presets():
    """Exact weight bytes from the shipped configs; the sd15 preset stores frozen weights in bf16."""
    sd15 = empty_components(shipped_config_dir("sd15"))
    lean = predict_memory(load_config(None, [], preset="sd15"), sd15, None, "cuda")
    assert lean.parts["UNet (bf16)"] == 859_520_964 * 2
    assert lean.parts["VAE (fp32)"] == 83_653_863 * 4
    assert lean.activations is not None and lean.activations > 0
    full = predict_memory(load_config(None, ["model.dtype=fp32"], preset="sd15"), sd15, None, "cuda")
    assert full.parts["UNet (fp32)"] == 2 * lean.parts["UNet (bf16)"]
    recomputed = predict_memory(load_config(None, ["optim.gradient_checkpointing=false"], preset="sd15"), sd15, None, "cuda")
    assert recomputed.activations > lean.activations
    big = predict_memory(load_config(None, ["data.resolution=768"], preset="sd15"), sd15, None, "cuda")
    assert big.activations > lean.activations
    lora = next(size for name, size in lean.parts.items() if name.startswith("LoRA"))
    assert lora == pytest.approx(16 * 3.19e6, rel=0.05)  # rank 16 on SD1.5's attention: 3.19 M parameters, 16 bytes each

    sdxl = predict_memory(load_config(None, [], preset="sdxl"), empty_components(shipped_config_dir("sdxl")), None, "cuda")
    assert sdxl.parts["UNet (bf16)"] == 2_567_463_684 * 2 and sdxl.peak > lean.peak
    assert lean.peak < 12 * GIB and sdxl.peak < 24 * GIB


def test_the_check_command_exits_1_and_prints_the_problems(tiny_sd15_dir, tmp_path, capsys):
    code = main(["check", "--preset", "tiny", "--set", f"model.path={tmp_path / 'missing.safetensors'}", "--set", "data.images=pocket", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1 and "[FAIL] model.path" in out and "missing.safetensors" in out
    code = main(["check", "--preset", "tiny", "--set", f"model.path={tiny_sd15_dir}", "--set", "data.images=pocket", "--set", "data.source_images=8", "--device", "cpu"])
    assert code == 0 and "ready to train" in capsys.readouterr().out


def test_the_check_before_training_names_every_problem_and_loads_no_feedback_model(fast_config, tmp_path, monkeypatch):
    """What `unifl train`, the ComfyUI node and the tab run first: a second's work, every problem at once."""
    from unifl.core.training import preflight as module
    from unifl.core.training.preflight import check_before_training

    loaded = []
    monkeypatch.setattr(module, "load_reward_model", lambda *args, **kwargs: loaded.append(args))  # an instrument: counts loads
    monkeypatch.setattr(module, "load_perception_model", lambda *args, **kwargs: loaded.append(args))
    bad_lora = tmp_path / "start.safetensors"
    bad_lora.write_bytes(b"not a safetensors file")
    config = fast_config('rewards=[{aspect = "detail", kind = "laion-aesthetic", path = "/models/nowhere.safetensors"}]',
                         'perception=[{aspect = "style", kind = "no-such-kind"}]', f"lora.init_from={bad_lora}")
    with pytest.raises(PreflightError) as raised:
        check_before_training(config, device="cpu")
    lines = str(raised.value).splitlines()
    assert any(line.startswith("rewards[0] laion-aesthetic (detail): /models/nowhere.safetensors does not exist") for line in lines)
    assert any("unknown kind 'no-such-kind'" in line for line in lines) and any(line.startswith("lora.init_from:") for line in lines)
    assert loaded == []
    assert check_before_training(fast_config(), device="cpu").ok and loaded == []


def test_a_reward_without_parameters_cannot_become_the_discriminator(fast_config):
    config = fast_config("stage=2", "adversarial.discriminator_from=color", "data.images=pocket")  # color: the colorfulness statistic
    problems = {c.subject: c.detail for c in preflight(config, device="cpu").errors}
    assert "no parameters to train as stage 2's discriminator" in problems["adversarial.discriminator_from"]


def test_the_memory_counts_only_the_part_of_the_discriminator_that_trains(fast_config):
    from unifl.core.feedback.loading import load_reward_model

    reward = load_reward_model("pocket-reward", "detail")  # a trunk and a head
    head, whole = (sum(p.numel() for p in m.parameters()) for m in (reward.head, reward))
    assert 0 < head < whole

    def discriminator_bytes(trainable: str) -> int:
        overrides = ("stage=2", "data.images=pocket", 'rewards=[{aspect = "detail", kind = "pocket-reward", path = "detail"}]', f"adversarial.discriminator_trainable={trainable}")
        report = preflight(fast_config(*overrides), device="cpu")
        assert report.ok, report.render()
        return next(size for name, size in report.memory.parts.items() if name.startswith("discriminator"))

    assert discriminator_bytes("head") == head * 16 and discriminator_bytes("all") == whole * 16


def test_on_the_cpu_a_model_the_host_already_holds_is_not_counted_against_free_ram_twice(fast_config, tiny_sd15_dir, monkeypatch):
    """ComfyUI hands over a model already in RAM: MemAvailable no longer includes it, yet the estimate counts it."""
    from unifl.core.diffusion.loading import load_denoiser
    from unifl.core.training import preflight as module

    denoiser = load_denoiser(tiny_sd15_dir)
    config = fast_config("data.images=pocket")
    needed = preflight(config, denoiser=denoiser, device="cpu", load_models=False).memory.needed
    resident = sum(module.tensor_bytes(m, on="cpu") for m in (denoiser.lora_target, denoiser.vae, *denoiser.text_encoders))
    assert 0 < resident < needed
    monkeypatch.setattr(module, "ram_available", lambda: needed - resident // 2)  # fits only with the weights already in RAM
    assert preflight(config, denoiser=denoiser, device="cpu", load_models=False).memory.fits is not False
    monkeypatch.setattr(module, "ram_available", lambda: needed - resident - 1)
    assert preflight(config, denoiser=denoiser, device="cpu", load_models=False).memory.fits is False
    # Read from files (the CLI's check), nothing is in RAM yet: free RAM is all there is.
    assert preflight(config, device="cpu", load_models=False).memory.capacity == needed - resident - 1
