"""Bad inputs through the command line: each is one line naming the problem, and harms no file written before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bad_input_checks import assert_untouched, captioned_folder, cli_error, kohya_lora, snapshot
from conftest import FAST
from PIL import Image

TRAIN_FAST = [a for o in FAST for a in ("--set", o)]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every command works offline: any connection attempt fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def train_args(model, run_dir, *sets):
    return ["train", "--preset", "tiny", "--set", f"model.path={model}", "--set", f"logging.output_dir={run_dir}", *TRAIN_FAST,
            *(a for s in sets for a in ("--set", s))]


# -- config values: refused when the config is read, before anything loads ---------------------------

CONFIG_CASES = [
    ("optim.learning_rate=0", r"optim.learning_rate = 0.0: must be a finite number above 0"),
    ("optim.learning_rate=nan", r"optim.learning_rate = nan: must be a finite number above 0"),
    ("optim.learning_rate=inf", r"optim.learning_rate = inf: must be a finite number"),
    ("optim.max_steps=0", r"optim.max_steps = 0: must be a whole number of at least 1"),
    ("optim.batch_size=0", r"optim.batch_size = 0: must be a whole number of at least 1"),
    ("optim.gradient_accumulation_steps=0", r"optim.gradient_accumulation_steps = 0: must be a whole number of at least 1"),
    ("optim.warmup_steps=-5", r"optim.warmup_steps = -5: must be a whole number of at least 0"),
    ("optim.seed=-1", r"optim.seed = -1: must be a whole number of at least 0"),
    ("optim.max_grad_norm=-1.0", r"optim.max_grad_norm = -1.0: must be a finite number of at least 0"),
    ("logging.checkpoint_every=0", r"logging.checkpoint_every = 0: must be a whole number of at least 1"),
    ("logging.log_every=0", r"logging.log_every = 0: must be a whole number of at least 1"),
    ("logging.validate_every=-1", r"logging.validate_every = -1: must be a whole number of at least 0"),
    ("logging.keep_checkpoints=-1", r"logging.keep_checkpoints = -1: must be a whole number of at least 0"),
    ("logging.validation_cfg=0.0", r"logging.validation_cfg = 0.0: must be a finite number of at least 1"),
    ("logging.output_name='../escaped'", r"logging.output_name = '../escaped': a file name without folders"),
    ("data.resolution=30", r"data.resolution = 30: use a multiple of 8"),
    ("data.resolution=0", r"data.resolution = 0: must be a whole number of at least 8"),
    ("data.source_images=0", r"data.source_images = 0: must be a whole number of at least 1"),
    ("pefl.inference_steps=0", r"pefl.inference_steps = 0: must be a whole number of at least 1"),
    ("pefl.noise_level=9", r"pefl.noise_level = 9: a level of the 4-step schedule, so at most pefl.inference_steps - 1 = 3"),
    ("pefl.grad_levels=[true, false]", r"pefl.grad_levels = \[True, False\]: give two integers"),
    ("aesthetic.cfg=0.5", r"aesthetic.cfg = 0.5: must be a finite number of at least 1"),
    ("adversarial.timestep_spacing='sideways'", r"adversarial.timestep_spacing = 'sideways': use one of 'leading', 'trailing', 'linspace'"),
    ("adversarial.discriminator_lr=0", r"adversarial.discriminator_lr = 0.0: must be a finite number above 0"),
    ("lora.rank=0", r"lora.rank = 0: must be a whole number of at least 1"),
    ("lora.alpha=-1", r"lora.alpha = -1.0: must be a finite number above 0"),
    ("lora.targets='everything'", r"lora.targets = 'everything': use one of 'attention', 'attention\+ff', 'all'"),
    ("model.architecture='sd3'", r"model.architecture = 'sd3': use 'sd15', 'sdxl', or leave it empty"),
    ("regularizer.denoising_weight=-0.5", r"regularizer.denoising_weight = -0.5: must be a finite number of at least 0"),
    ('rewards=[{aspect = "color", kind = "colorfulness", weight = -1.0}]', r"rewards\[0\].weight = -1.0: must be a finite number of at least 0"),
    ('rewards=[{aspect = "color", kind = "colorfulness", threshold = nan}]', r"rewards\[0\].threshold = nan: must be a finite number"),
    ('rewards=[{aspect = "color", kind = ""}]', r"rewards\[0\] has no kind"),
    ('rewards=[{aspect = "color", kind = "colorfulness"}, {aspect = "color", kind = "exposure"}]', r"two \[\[rewards\]\] entries judge the aspect 'color'"),
    ("optim.max_step=3", r"unknown config key 'optim.max_step'. Did you mean 'max_steps'\?"),
    ("optim", r"--set 'optim': use KEY=VALUE"),
]


@pytest.mark.parametrize(("setting", "pattern"), CONFIG_CASES, ids=[c[0][:40] for c in CONFIG_CASES])
def test_a_bad_config_value_is_one_line_naming_it(capsys, tmp_path, setting, pattern):
    run_dir = tmp_path / "run"
    cli_error(capsys, pattern, *train_args("pocket", run_dir, setting))
    assert not run_dir.exists(), "a refused config writes nothing"


def test_a_config_file_that_is_not_utf8_is_named(capsys, tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes('preset = "tiny"\n# réglages\n'.encode("latin-1"))
    before = snapshot(tmp_path)
    cli_error(capsys, r"config file .*latin1.toml is not UTF-8 text \(byte 0xe9 on line 2\)", "train", config)
    assert_untouched(before)


def test_a_config_file_that_is_not_toml_is_named(capsys, tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("[optim\nlearning_rate = 1")
    cli_error(capsys, r"broken.toml: not valid TOML", "train", config)


def test_a_preset_that_is_not_a_name_is_refused(capsys, tmp_path):
    config = tmp_path / "preset.toml"
    config.write_text("preset = 5\n")
    cli_error(capsys, r"preset.toml: preset = 5: name a preset", "train", config)


def test_a_missing_model_section_names_the_section_not_the_current_folder(capsys, tmp_path):
    config = tmp_path / "no_model.toml"
    config.write_text(f'preset = "sd15"\n[logging]\noutput_dir = "{tmp_path / "run"}"\n')
    message = cli_error(capsys, r"no base model given \(the model path is empty\): set path in the config's \[model\] section", "train", config)
    assert "folder without model_index.json" not in message


# -- data and run folders: refused when the run starts ---------------------------------------------


@pytest.mark.slow
def test_a_prompt_file_that_is_not_utf8_is_named(capsys, tiny_sd15_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a cat\nun caf\xe9\n".encode("latin-1"))
    before = snapshot(tmp_path)
    cli_error(capsys, r"prompt file .*prompts.txt is not UTF-8 text \(byte 0xe9 on line 2\): save it as UTF-8",
              *train_args(tiny_sd15_dir, tmp_path / "run", f"data.prompts={prompts}"))
    assert_untouched(before)


@pytest.mark.slow
def test_a_caption_that_is_not_utf8_is_named(capsys, tiny_sd15_dir, tmp_path):
    images = captioned_folder(tmp_path / "images")
    (images / "1.txt").write_bytes(b"\xff\xfea cat")  # UTF-16, as some editors save
    before = snapshot(tmp_path)
    cli_error(capsys, r"caption file .*1.txt is not UTF-8 text \(byte 0xff on line 1\)", *train_args(tiny_sd15_dir, tmp_path / "run", f"data.images={images}"))
    assert_untouched(before)


@pytest.mark.slow
def test_a_float_image_in_the_data_is_refused_before_training(capsys, tiny_sd15_dir, tmp_path):
    images = captioned_folder(tmp_path / "images")
    Image.fromarray(np.zeros((32, 32), dtype=np.float32), "F").save(images / "depth.png", "TIFF")  # a TIFF named .png
    (images / "depth.txt").write_text("a depth map")
    before = snapshot(tmp_path)
    cli_error(capsys, r"depth.png: 32-bit floating-point pixels have no standard range", *train_args(tiny_sd15_dir, tmp_path / "run", f"data.images={images}"))
    assert_untouched(before)


@pytest.mark.slow
def test_an_rgb_mask_is_refused_naming_it(capsys, tiny_sd15_dir, tmp_path):
    images = captioned_folder(tmp_path / "images")
    Image.new("RGB", (32, 32)).save(images / "0.semantic.png")
    cli_error(capsys, r"mask .*0.semantic.png is a RGB image, but a mask holds one id a pixel",
              *train_args(tiny_sd15_dir, tmp_path / "run", f"data.images={images}", 'perception=[{aspect = "layout", kind = "random-features"}]'))


@pytest.mark.slow
def test_broken_instance_labels_are_named(capsys, tiny_sd15_dir, tmp_path):
    images = captioned_folder(tmp_path / "images", count=1)
    Image.new("L", (32, 32), 1).save(images / "0.instances.png")
    (images / "0.instances.json").write_text('{"labels": [1,')
    cli_error(capsys, r"0.instances.json: expected \{\"labels\": \[class of instance 1",
              *train_args(tiny_sd15_dir, tmp_path / "run", f"data.images={images}", 'perception=[{aspect = "structure", kind = "random-features"}]'))


@pytest.mark.slow
@pytest.mark.parametrize(("value", "what"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_lora_with_non_finite_values_is_refused_as_init_from(capsys, tiny_sd15_dir, tmp_path, value, what):
    lora = kohya_lora(tmp_path / f"{what}.safetensors", value)
    before = snapshot(tmp_path)
    cli_error(capsys, rf"{what}.safetensors: 1 of 3 tensors hold NaN or infinite values .*diverged", *train_args(tiny_sd15_dir, tmp_path / "run", f"lora.init_from={lora}"))
    assert_untouched(before)


@pytest.mark.slow
def test_a_fresh_start_over_a_folder_that_is_not_a_run_folder_deletes_nothing(capsys, tiny_sd15_dir, tmp_path):
    folder = tmp_path / "my_project"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "thesis.tex").write_text("years of work")
    (folder / "checkpoints" / "step-000001").mkdir()
    (folder / "checkpoints" / "step-000001" / "notes.txt").write_text("not UniFL's")
    before = snapshot(folder)
    cli_error(capsys, r"checkpoints holds files UniFL did not write \(e.g. .*\), so .*my_project is not a UniFL run folder: nothing was deleted",
              *train_args(tiny_sd15_dir, folder), "--overwrite")
    assert_untouched(before)


@pytest.mark.slow
def test_a_second_run_in_a_busy_folder_is_refused_naming_it(capsys, tiny_sd15_dir, tmp_path):
    from unifl.core.training.run_lock import run_folder_lock

    run_dir = tmp_path / "run"
    with run_folder_lock(run_dir):  # another run holds it
        before = snapshot(run_dir)
        cli_error(capsys, rf"{run_dir} is in use by another training run \(pid \d+ on .*\): wait for it to finish", *train_args(tiny_sd15_dir, run_dir))
        assert_untouched(before)


def _trained_run(tiny_sd15_dir, run_dir, steps=2):
    from unifl.cli import main

    assert main(train_args(tiny_sd15_dir, run_dir, f"optim.max_steps={steps}", "logging.keep_checkpoints=0")) == 0
    return run_dir


@pytest.mark.slow
def test_resume_skips_a_damaged_checkpoint_in_one_line_and_uses_the_one_before(tiny_sd15_dir, tmp_path, capsys, caplog):
    from unifl.cli import main

    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run")
    damaged = run_dir / "checkpoints" / "step-000002" / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # half-copied
    intact = snapshot(run_dir / "checkpoints" / "step-000001")
    capsys.readouterr()
    assert main(train_args(tiny_sd15_dir, run_dir, "optim.max_steps=3", "logging.keep_checkpoints=0") + ["--resume", "latest"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "step-000002 is damaged (optimizer.pt has 100 bytes" in warnings[0]
    assert_untouched(intact)
    assert "finished after 3 steps" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["state", "lora", "missing"])
def test_resuming_from_a_damaged_checkpoint_by_name_is_one_line(capsys, tiny_sd15_dir, tmp_path, damage):
    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run", steps=1)
    checkpoint = run_dir / "checkpoints" / "step-000001"
    if damage == "state":
        (checkpoint / "state.json").write_text('{"step": 1, "stage"')
    elif damage == "lora":
        data = bytearray((checkpoint / "lora.safetensors").read_bytes())
        data[-1] ^= 0xFF  # one flipped bit in the weights: the manifest's checksum finds it
        (checkpoint / "lora.safetensors").write_bytes(bytes(data))
    else:
        (checkpoint / "lr_scheduler.pt").unlink()
    before = snapshot(run_dir)
    reason = {"state": r"state.json: not readable JSON", "lora": r"lora.safetensors changed since it was written", "missing": r"lr_scheduler.pt missing"}[damage]
    cli_error(capsys, rf"--resume {checkpoint}: the checkpoint is damaged \({reason}", *train_args(tiny_sd15_dir, run_dir), "--resume", checkpoint)
    assert_untouched(before)


@pytest.mark.slow
def test_resume_latest_with_every_checkpoint_damaged_is_one_line(capsys, tiny_sd15_dir, tmp_path):
    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run", steps=1)
    (run_dir / "checkpoints" / "step-000001" / "manifest.json").write_text("{")
    before = snapshot(run_dir)
    cli_error(capsys, r"--resume latest: every checkpoint in .*checkpoints is damaged; start again with --overwrite", *train_args(tiny_sd15_dir, run_dir), "--resume", "latest")
    assert_untouched(before)


@pytest.mark.slow
def test_exporting_a_damaged_checkpoint_is_one_line(capsys, tiny_sd15_dir, tmp_path):
    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run", steps=1)
    (run_dir / "checkpoints" / "step-000001" / "lora.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    before = snapshot(run_dir)
    cli_error(capsys, r"lora.safetensors: unreadable|the checkpoint is damaged", "export", run_dir / "checkpoints" / "step-000001", "--out", tmp_path / "x.safetensors")
    assert_untouched(before)


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_harms_no_earlier_checkpoint(tiny_sd15_dir, tmp_path):
    """Writes beyond 20 kB fail (``RLIMIT_FSIZE``), as on a full disk: the step-3 checkpoint cannot be written."""
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run")
    before = snapshot(run_dir / "checkpoints", *run_dir.glob("*.safetensors"))

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    args = train_args(tiny_sd15_dir, run_dir, "optim.max_steps=4", "logging.keep_checkpoints=0") + ["--resume", "latest"]
    import unifl

    root = Path(unifl.__file__).parent.parent  # where this checkout's unifl package is importable from
    done = subprocess.run([sys.executable, "-m", "unifl", *map(str, args)], capture_output=True, text=True, preexec_fn=full_disk, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)}, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("unifl train: error:")]
    assert len(errors) == 1 and "could not write checkpoint" in errors[0] and "step-000003" in errors[0] and "the checkpoints before it are intact" in errors[0]
    assert_untouched(before)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")], "no half-written checkpoint is left behind"


class RunsCode:
    """A pickle that, if ever unpickled, writes a marker file (as a hostile one would run anything)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.slow
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(capsys, tiny_sd15_dir, tmp_path):
    weights = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1), "hook": RunsCode(tmp_path / "pwned")}, weights)
    before = snapshot(tmp_path)
    cli_error(capsys, r"vgg16.pth: holds Python objects besides tensors .*which UniFL will not unpickle",
              *train_args(tiny_sd15_dir, tmp_path / "run", f'perception=[{{aspect = "style", kind = "vgg16", path = "{weights}"}}]'))
    assert not (tmp_path / "pwned").exists(), "the pickle ran"
    assert_untouched(before)


@pytest.mark.slow
def test_a_full_disk_while_exporting_keeps_the_lora_that_was_there(capsys, tiny_sd15_dir, tmp_path, monkeypatch):
    import safetensors.torch

    run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run", steps=1)
    out = tmp_path / "exported.safetensors"
    out.write_bytes(b"the LoRA exported yesterday")
    before = snapshot(tmp_path)

    def full_disk(*args, **kwargs):  # how safetensors reports ENOSPC: its own error type, not an OSError
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    cli_error(capsys, r"exported.safetensors: could not be written \(SafetensorError: Error while serializing: I/O error: No space left on device",
              "export", "latest", "--run-dir", run_dir, "--out", out, "--overwrite")
    assert_untouched(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported.safetensors", "run"], "no temporary file left"


# -- unifl sample -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "pattern"), [
    (["--steps", "0"], r"argument --steps: 0 is out of range; give a whole number from 1 up"),
    (["--num-images", "0"], r"argument --num-images: 0 is out of range"),
    (["--cfg", "0.5"], r"argument --cfg: 0.5 is out of range; give a finite number at least 1"),
    (["--cfg", "nan"], r"argument --cfg: nan is out of range"),
    (["--height", "4"], r"argument --height: 4 is out of range; give a whole number from 8 up"),
    (["--seed", "-3"], r"argument --seed: -3 is out of range"),
    (["--steps", "two"], r"argument --steps: 'two' is not a whole number"),
])
def test_bad_sample_arguments_are_refused_when_read(capsys, tmp_path, args, pattern):
    cli_error(capsys, pattern, "sample", "--model", "pocket", "--prompt", "x", "--out", tmp_path / "out", *args, code=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_sample_size_off_the_latent_grid_is_refused(capsys, tiny_sd15_dir, tmp_path):
    cli_error(capsys, r"--height 33: this model's images are made of 2x2-pixel latents; use a multiple of 2, e.g. 32",
              "sample", "--model", tiny_sd15_dir, "--prompt", "x", "--height", "33", "--width", "32", "--out", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["nan", "inf", "truncated", "missing"])
def test_a_bad_lora_to_sample_with_is_one_line_naming_it(capsys, tiny_sd15_dir, tmp_path, damage):
    lora = tmp_path / f"{damage}.safetensors"
    if damage in ("nan", "inf"):
        kohya_lora(lora, float(damage))
    elif damage == "truncated":
        kohya_lora(lora).write_bytes(kohya_lora(tmp_path / "whole.safetensors").read_bytes()[:200])
    pattern = {"nan": "hold NaN or infinite values", "inf": "hold NaN or infinite values", "truncated": "not a readable .safetensors file",
               "missing": "LoRA file not found"}[damage]
    before = snapshot(tmp_path)
    cli_error(capsys, rf"{damage}.safetensors.*{pattern}|{pattern}.*{damage}.safetensors", "sample", "--model", tiny_sd15_dir, "--lora", lora, "--prompt", "x",
              "--height", "32", "--width", "32", "--out", tmp_path / "out")
    assert_untouched(before)
    assert not (tmp_path / "out").exists(), "no black images written"


# -- unifl score --------------------------------------------------------------------------------------


def _images(tmp_path):
    folder = captioned_folder(tmp_path / "images")
    return folder


@pytest.mark.parametrize(("args", "pattern", "code"), [
    (["--batch-size", "0"], r"argument --batch-size: 0 is out of range", 2),
    (["--device", "toaster"], r"--device 'toaster': not a torch device", 1),
    (["--device", "cuda:7"], r"--device cuda:7: (this torch has no CUDA device|this machine has)", 1),
])
def test_bad_score_arguments_are_one_line(capsys, tmp_path, args, pattern, code):
    folder = _images(tmp_path)
    before = snapshot(tmp_path)
    cli_error(capsys, pattern, "score", folder, "--reward", "s=sharpness", "--out", tmp_path / "scores", *args, code=code)
    assert_untouched(before)


@pytest.mark.parametrize(("spec", "pattern"), [
    ("sharpness", r"--reward 'sharpness': expected NAME=KIND:PATH"),
    ("s=no-such-kind", r"unknown reward model kind 'no-such-kind'; known: "),
])
def test_bad_reward_specs_are_one_line(capsys, tmp_path, spec, pattern):
    cli_error(capsys, pattern, "score", _images(tmp_path), "--reward", spec, "--out", tmp_path / "scores")


@pytest.mark.parametrize(("write", "pattern"), [
    (lambda p: Image.fromarray(np.zeros((8, 8), dtype=np.float32), "F").save(p, "TIFF"), r"x.png: 32-bit floating-point pixels"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30), r"x.png: not a readable image"),
    (lambda p: p.write_bytes(b""), r"x.png: not a readable image \(UnidentifiedImageError"),
])
def test_unreadable_images_to_score_are_named(capsys, tmp_path, write, pattern):
    write(tmp_path / "x.png")
    before = snapshot(tmp_path)
    cli_error(capsys, pattern, "score", tmp_path / "x.png", "--reward", "s=sharpness", "--out", tmp_path / "scores")
    assert_untouched(before)
    assert not (tmp_path / "scores.csv").exists()


def test_a_caption_to_score_with_that_is_not_utf8_is_named(capsys, tmp_path):
    folder = _images(tmp_path)
    (folder / "0.txt").write_bytes("caf\xe9".encode("latin-1"))
    cli_error(capsys, r"caption file .*0.txt is not UTF-8 text", "score", folder, "--reward", "s=sharpness", "--prompts-from", "captions", "--out", tmp_path / "scores")


def test_score_reads_a_16_bit_png_as_its_8_bit_twin(tmp_path, capsys):
    """16-bit PNGs were read as white: a 16-bit image must score what its 8-bit version scores."""
    from unifl.cli import main

    grey = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "a16.png")
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "b8.png")
    assert main(["score", str(tmp_path / "a16.png"), str(tmp_path / "b8.png"), "--reward", "s=sharpness", "--out", str(tmp_path / "scores")]) == 0
    rows = json.loads((tmp_path / "scores.json").read_text())["images"]
    assert rows[0]["s"] == pytest.approx(rows[1]["s"], abs=1e-6) and rows[0]["s"] > -10  # flat white scores log(1e-8) ≈ -18.4


# -- unifl select-prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "pattern", "code"), [
    (["-n", "0"], r"argument -n: 0 is out of range", 2),
    (["-n", "2", "--tau2", "2"], r"argument --tau2: 2 is out of range; give a finite number at least -1 and at most 1", 2),
    (["-n", "2", "--chunk-size", "0"], r"argument --chunk-size: 0 is out of range", 2),
    (["-n", "2", "--tau1", "-1"], r"argument --tau1: -1 is out of range", 2),
    (["-n", "2", "--embedder", "tfidf:abc"], r"embedder 'tfidf:abc': tfidf:DIM needs a positive whole number", 1),
    (["-n", "2", "--embedder", "tfidf:0"], r"embedder 'tfidf:0': tfidf:DIM needs a positive whole number", 1),
])
def test_bad_select_prompts_arguments_are_one_line(capsys, tmp_path, args, pattern, code):
    source = tmp_path / "prompts.txt"
    source.write_text("a cat on a mat\na dog under a tree\n")
    cli_error(capsys, pattern, "select-prompts", source, "--out", tmp_path / "picked.txt", *args, code=code)
    assert not (tmp_path / "picked.txt").exists()


def test_a_prompt_file_to_select_from_that_is_not_utf8_is_named(capsys, tmp_path):
    source = tmp_path / "prompts.txt"
    source.write_bytes("a caf\xe9 on a street\n".encode("cp1252"))
    cli_error(capsys, r"prompt file .*prompts.txt is not UTF-8 text \(byte 0xe9 on line 1\)", "select-prompts", source, "--out", tmp_path / "picked.txt", "-n", "1")


def test_select_prompts_never_replaces_an_existing_output(capsys, tmp_path):
    source, out = tmp_path / "prompts.txt", tmp_path / "picked.txt"
    source.write_text("a cat on a mat\n")
    out.write_text("my hand-picked prompts\n")
    before = snapshot(tmp_path)
    cli_error(capsys, r"picked.txt already exists; pass --overwrite", "select-prompts", source, "--out", out, "-n", "1")
    assert_untouched(before)


# -- unifl train-reward -------------------------------------------------------------------------------


def _pairs(tmp_path, lines):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "b.png")
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.jsonl"


GOOD_PAIR = '{"prompt": "p", "image_a": "a.png", "image_b": "b.png", "preferred": "a", "aspect": "color"}'


@pytest.mark.parametrize(("lines", "args", "pattern", "code"), [
    ([GOOD_PAIR], ["--lr", "0"], r"argument --lr: 0 is out of range; give a finite number above 0", 2),
    ([GOOD_PAIR], ["--steps", "0"], r"argument --steps: 0 is out of range", 2),
    ([GOOD_PAIR], ["--batch-size", "0"], r"argument --batch-size: 0 is out of range", 2),
    ([GOOD_PAIR], ["--val-fraction", "1"], r"argument --val-fraction: 1 is out of range; give a finite number above 0 and below 1", 2),
    ([GOOD_PAIR], ["--alpha-quantile", "color=2"], r"--alpha-quantile 'color=2': use ASPECT=Q with Q in \(0, 1\)", 1),
    ([GOOD_PAIR], ["--alpha-quantile", "=0.5"], r"--alpha-quantile '=0.5': name the aspect", 1),
    (["[1, 2]"], [], r"pairs.jsonl: line 1: a list, not a JSON object", 1),
    (['{"prompt": 1, "image_a": "a.png", "image_b": "b.png", "preferred": "a", "aspect": "color"}'], [], r"line 1: prompt must be text", 1),
    (['{"prompt": "p", "image_a": "a.png", "image_b": "b.png", "preferred": "left", "aspect": "color"}'], [], r"line 1: preferred = 'left'", 1),
])
def test_bad_reward_training_inputs_are_named(capsys, tmp_path, lines, args, pattern, code):
    pairs = _pairs(tmp_path, lines)
    before = snapshot(tmp_path)
    message = cli_error(capsys, pattern, "train-reward", pairs, "--out", tmp_path / "rewards", "--steps", "1", *args, code=code)
    assert_untouched(before)
    assert not (tmp_path / "rewards").exists(), message


def test_a_pair_file_that_is_not_utf8_is_named(capsys, tmp_path):
    pairs = _pairs(tmp_path, [GOOD_PAIR])
    pairs.write_bytes(GOOD_PAIR.replace('"p"', '"caf\xe9"').encode("latin-1"))
    cli_error(capsys, r"pair file .*pairs.jsonl is not UTF-8 text", "train-reward", pairs, "--out", tmp_path / "rewards")


def test_a_pair_image_that_cannot_be_read_is_named(capsys, tmp_path):
    pairs = _pairs(tmp_path, [GOOD_PAIR, GOOD_PAIR.replace('"a"', '"b"', 1)])
    (tmp_path / "b.png").write_bytes(b"not an image")
    cli_error(capsys, r"b.png: not a readable image", "train-reward", pairs, "--out", tmp_path / "rewards", "--steps", "1")


def test_non_finite_lora_values_are_refused_by_the_core_loader(tmp_path):
    from unifl.core.diffusion.tiny import build_tiny_pipeline
    from unifl.core.lora.kohya import LoRAFileError, load_kohya_lora

    unet = build_tiny_pipeline("sd15", seed=0).unet
    with pytest.raises(LoRAFileError, match=r"nan.safetensors: 1 of 3 tensors hold NaN or infinite values"):
        load_kohya_lora(kohya_lora(tmp_path / "nan.safetensors", float("nan")), unet)
    assert not any("lora" in name for name, _ in unet.named_modules()), "the model is untouched"


# -- every command that writes: an earlier output is never replaced unless asked ----------------------


def test_score_never_replaces_earlier_scores(capsys, tmp_path):
    from unifl.cli import main

    folder = _images(tmp_path)
    for existing in ("scores.csv", "scores.json"):
        (tmp_path / existing).write_text("yesterday's scores\n")
        before = snapshot(tmp_path)
        cli_error(capsys, rf"{existing} already exists; pass --overwrite to replace it, or choose another --out",
                  "score", folder, "--reward", "s=sharpness", "--out", tmp_path / "scores")
        assert_untouched(before)
        (tmp_path / existing).unlink()
    (tmp_path / "scores.csv").write_text("yesterday's scores\n")
    assert main(["score", str(folder), "--reward", "s=sharpness", "--out", str(tmp_path / "scores"), "--overwrite"]) == 0
    assert (tmp_path / "scores.csv").read_text().startswith("image,prompt,s")


@pytest.mark.parametrize("existing", ["grid.png", "0001-seed1.png"])
def test_sample_never_replaces_earlier_images(capsys, tmp_path, existing):
    out = tmp_path / "samples"
    out.mkdir()
    (out / existing).write_bytes(b"an image from yesterday")
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    cli_error(capsys, rf"samples/{existing} already exists; pass --overwrite to replace it, or choose another --out",
              "sample", "--model", tmp_path / "no-model-needed", "--prompt", "x", "--num-images", "2", "--out", out)
    assert_untouched(before)


@pytest.mark.slow
def test_sample_replaces_earlier_images_with_overwrite(tiny_sd15_dir, tmp_path):
    from unifl.cli import main

    out = tmp_path / "samples"
    out.mkdir()
    (out / "grid.png").write_bytes(b"an image from yesterday")
    assert main(["sample", "--model", str(tiny_sd15_dir), "--prompt", "x", "--height", "32", "--width", "32", "--steps", "2", "--out", str(out), "--overwrite"]) == 0
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")


def test_export_refuses_an_existing_file_before_loading_anything(capsys, tmp_path):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"the LoRA exported yesterday")
    before = snapshot(tmp_path)
    cli_error(capsys, r"mine.safetensors already exists; pass --overwrite to replace it, or choose another --out",
              "export", "latest", "--run-dir", tmp_path / "no-run", "--out", out)
    assert_untouched(before)


def test_select_prompts_never_replaces_an_earlier_report(capsys, tmp_path):
    source = tmp_path / "prompts.txt"
    source.write_text("a cat on a mat\n")
    (tmp_path / "picked.report.json").write_text("{}")
    before = snapshot(tmp_path)
    cli_error(capsys, r"picked.report.json already exists; pass --overwrite", "select-prompts", source, "--out", tmp_path / "picked.txt", "-n", "1")
    assert_untouched(before)


# -- outputs that cannot be written, named before any work ---------------------------------------------


@pytest.mark.parametrize(("command", "pattern"), [
    (lambda t: ["sample", "--model", t / "m", "--prompt", "x", "--out", t / "taken"], r"--out .*taken is a file, not a folder; choose a folder name"),
    (lambda t: ["score", t / "images", "--reward", "s=sharpness", "--out", t / "taken" / "scores"], r"--out .*scores.csv: .*taken is a file, not a folder"),
    (lambda t: ["select-prompts", t / "images" / "0.txt", "-n", "1", "--out", t / "images"], r"--out .*images is a folder; give a file name"),
    (lambda t: ["export", "latest", "--run-dir", t, "--out", t / "taken" / "x.safetensors"], r"--out .*x.safetensors: .*taken is a file, not a folder"),
    (lambda t: ["coco-folder", "--images", t / "images", "--instances", t / "i.json", "--captions", t / "c.json", "--out", t / "taken"],
     r"--out .*taken is a file, not a folder; choose a folder name"),
    (lambda t: ["train-reward", t / "images" / "pairs.jsonl", "--out", t / "taken"], r"--out .*taken/color.safetensors: .*taken is a file, not a folder"),
    (lambda t: train_args("pocket", t / "taken"), r"logging.output_dir: .*taken is a file, not a folder; choose a folder name"),
    (lambda t: train_args("pocket", t / "taken" / "run"), r"logging.output_dir: .*taken/run: .*taken is a file, not a folder"),
], ids=["sample", "score", "select-prompts", "export", "coco-folder", "train-reward", "train", "train-below-a-file"])
def test_an_output_that_is_a_file_or_folder_is_named(capsys, tmp_path, command, pattern):
    captioned_folder(tmp_path / "images")
    _pairs(tmp_path / "images", [GOOD_PAIR, GOOD_PAIR])
    (tmp_path / "taken").write_text("a file")
    before = snapshot(tmp_path)
    message = cli_error(capsys, pattern, *command(tmp_path))
    assert "Errno" not in message
    assert_untouched(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "taken"], "nothing new written"


@pytest.mark.parametrize("length", [240, 300])
def test_a_lora_name_too_long_for_the_file_system_is_refused_before_training(capsys, tmp_path, length):
    """The name fits NAME_MAX on its own at 240 characters, but not with the temporary file's extra."""
    from unifl.core.files import longest_file_name

    name = "n" * length
    assert len(name + ".safetensors") > longest_file_name(tmp_path)
    cli_error(capsys, rf"logging.output_name: .*{name}.safetensors: the file name has {length + 12} bytes, but this file system allows \d+ .*choose a shorter name",
              *train_args("pocket", tmp_path / "run", f"logging.output_name='{name}'"))
    assert not (tmp_path / "run").exists(), "refused before anything was written"


# -- numbers and sizes bounded before any work -------------------------------------------------------


@pytest.mark.parametrize(("setting", "pattern"), [
    ("optim.learning_rate=1e308", r"optim.learning_rate = 1e\+308: must be at most 1 \(AdamW moves every weight by about the learning rate"),
    ("optim.learning_rate=1.5", r"optim.learning_rate = 1.5: must be at most 1"),
    ("adversarial.discriminator_lr=1e300", r"adversarial.discriminator_lr = 1e\+300: must be at most 1"),
    ("data.resolution=65536", r"data.resolution = 65536: must be at most 4096"),
])
def test_numbers_beyond_their_bound_are_refused_when_the_config_is_read(capsys, tmp_path, setting, pattern):
    """Before: 1e308 passed and overflowed at step 1; 65536 rendered a pocket image of 65536² pixels first."""
    run_dir = tmp_path / "run"
    cli_error(capsys, pattern, *train_args("pocket", run_dir, setting))
    assert not run_dir.exists()


# -- paths that are not what they should be ------------------------------------------------------------


@pytest.mark.parametrize(("path", "pattern"), [
    (lambda t: t, r"config file .* is a folder, not a file: give a regular file"),
    (lambda t: "/dev/zero", r"config file /dev/zero is a character device, not a file"),
    (lambda t: t / "missing.toml", r"config file .*missing.toml does not exist"),
], ids=["folder", "dev-zero", "missing"])
def test_a_config_path_that_is_not_a_file_is_named_for_what_it_is(capsys, tmp_path, path, pattern):
    before = snapshot(tmp_path)
    cli_error(capsys, pattern, "train", path(tmp_path))
    assert_untouched(before)


def test_a_named_pipe_among_the_images_to_score_is_refused_not_waited_on(capsys, tmp_path):
    import os

    from bad_input_checks import within

    folder = _images(tmp_path)
    os.mkfifo(folder / "pipe.png")
    before = snapshot(tmp_path)
    within(30, cli_error, capsys, r"pipe.png is a named pipe \(FIFO\), not a file", "score", folder, "--reward", "s=sharpness", "--out", tmp_path / "scores")
    assert_untouched(before)


def test_a_named_pipe_in_the_training_images_is_refused_not_waited_on(capsys, tmp_path):
    import os

    from bad_input_checks import within

    images = captioned_folder(tmp_path / "images")
    os.mkfifo(images / "2.png")
    (images / "2.txt").write_text("a pipe")
    before = snapshot(tmp_path)
    within(60, cli_error, capsys, r"2.png is a named pipe \(FIFO\), not a file", *train_args("pocket", tmp_path / "run", f"data.images={images}"))
    assert_untouched(before)


def test_a_named_pipe_as_prompt_file_is_refused_not_waited_on(capsys, tmp_path):
    import os

    from bad_input_checks import within

    os.mkfifo(tmp_path / "prompts.txt")
    within(30, cli_error, capsys, r"prompt file .*prompts.txt is a named pipe \(FIFO\), not a file", "select-prompts", tmp_path / "prompts.txt", "--out", tmp_path / "picked.txt", "-n", "1")
    assert not (tmp_path / "picked.txt").exists()


# -- inputs that were accepted without a word ----------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (1, 60000), (60000, 3)])
def test_an_image_too_small_to_train_on_is_refused_naming_it(capsys, tmp_path, size):
    images = captioned_folder(tmp_path / "images")
    Image.new("RGB", size, "red").save(images / "tiny.png")
    (images / "tiny.txt").write_text("a red square")
    before = snapshot(tmp_path)
    cli_error(capsys, rf"tiny.png: {size[0]}x{size[1]} pixels; training at data.resolution = 32 would enlarge it more than 8 times: use images at least 4 px on the short side",
              *train_args("pocket", tmp_path / "run", f"data.images={images}"))
    assert_untouched(before)


def test_images_much_longer_than_wide_are_named_in_one_warning(tmp_path, caplog):
    from unifl.core.data import ImageFolderDataset

    images = captioned_folder(tmp_path / "images")
    for i, size in enumerate([(32, 200), (400, 40)]):
        Image.new("RGB", size, "red").save(images / f"long{i}.png")
        (images / f"long{i}.txt").write_text("a strip")
    assert len(ImageFolderDataset(images, 32)) == 4
    warnings = [r.getMessage() for r in caplog.records if "as long as wide" in r.getMessage()]
    assert warnings == [f"UniFL: 2 image(s) in {images} are more than 4 times as long as wide, e.g. long0.png (32x200): training sees only their centre square"]


@pytest.mark.parametrize("text", ["", "\n  \n\t\n"])
def test_select_prompts_refuses_a_prompt_file_without_prompts_as_train_does(capsys, tmp_path, text):
    source = tmp_path / "prompts.txt"
    source.write_text(text)
    before = snapshot(tmp_path)
    cli_error(capsys, r"prompt file .*prompts.txt is empty: it needs at least one prompt, one per line", "select-prompts", source, "--out", tmp_path / "picked.txt", "-n", "1")
    assert_untouched(before)
    assert not (tmp_path / "picked.txt").exists()


# -- blame the right thing -----------------------------------------------------------------------------


@pytest.mark.slow
def test_resuming_from_a_checkpoint_of_another_model_family_says_so(capsys, tiny_sd15_dir, tiny_sdxl_dir, tmp_path):
    from unifl.cli import main

    run_dir = tmp_path / "run"
    assert main(train_args(tiny_sdxl_dir, run_dir, "optim.max_steps=1")) == 0
    before = snapshot(run_dir)
    message = cli_error(capsys, r"checkpoint .*step-000001 was trained on an sdxl model .*, but this model is sd15: give the sdxl model it was trained on",
                        *train_args(tiny_sd15_dir, run_dir), "--resume", "latest")
    assert "targets" not in message
    assert_untouched(before)


@pytest.mark.slow
def test_a_pickle_in_a_diffusers_folder_is_named_as_python_objects(capsys, tiny_sd15_dir, tmp_path):
    import shutil

    from diffusers.utils import logging as diffusers_logging
    from safetensors.torch import load_file

    model = tmp_path / "model"
    shutil.copytree(tiny_sd15_dir, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save({**load_file(str(weights)), "hook": RunsCode(tmp_path / "pwned")}, model / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    before = snapshot(tmp_path)
    verbosity = diffusers_logging.get_verbosity()
    # diffusers logs (as an error) that it falls back to the .bin, through a handler bound to the stderr of the test
    # that first used it, which that test's capture has closed: the logging error would print a traceback
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        message = cli_error(capsys, r"unet/diffusion_pytorch_model.bin: holds Python objects besides tensors, which UniFL will not unpickle",
                            "sample", "--model", model, "--prompt", "x", "--height", "32", "--width", "32", "--out", tmp_path / "out")
    finally:
        diffusers_logging.set_verbosity(verbosity)
    assert "re-copy" not in message and not (tmp_path / "pwned").exists()
    assert_untouched(before)


# -- a diverged run ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_diverged_run_is_one_line_and_its_failed_state_is_never_resumed(capsys, caplog, tiny_sd15_dir, tmp_path):
    """Step 1 is finite and checkpointed; step 2's gradient is NaN. No checkpoint is good (resuming step 1
    fails the same way), the message says so, and --resume latest does not pick step-000001."""
    from unifl.cli import main

    run_dir = tmp_path / "run"
    diverging = ("optim.max_steps=3", "optim.max_grad_norm=0", "regularizer.denoising_weight=0", "pefl.weight=0",
                 'rewards=[{aspect = "color", kind = "module", path = "bad_input_checks:nan_gradient_from_second_call"}]')
    cli_error(capsys, r"the LoRA's gradient norm became nan at step 2; nothing of that step was applied and no good checkpoint exists to resume from "
              r"\(start again with --overwrite\) \(step-000001, the state that diverged, is marked so that --resume latest passes it over\)",
              *train_args(tiny_sd15_dir, run_dir, *diverging))
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-000001"], "the run's own checkpoint is kept"
    before = snapshot(run_dir)
    cli_error(capsys, r"--resume latest: every checkpoint in .*checkpoints is where a run diverged; start again with --overwrite",
              *train_args(tiny_sd15_dir, run_dir, *diverging), "--resume", "latest")
    assert_untouched(before)
    # Named by hand (the user changed what made it diverge), it resumes, with a warning.
    caplog.clear()
    assert main(train_args(tiny_sd15_dir, run_dir, *diverging[:-1]) + ["--resume", str(run_dir / "checkpoints" / "step-000001")]) == 0
    assert any("step-000001, where a run diverged" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_diverged_run_names_the_good_checkpoint_and_resume_latest_takes_it(capsys, caplog, tiny_sd15_dir, tmp_path):
    from unifl.cli import main

    run_dir = tmp_path / "run"
    diverging = ("optim.max_steps=3", "optim.max_grad_norm=0", "regularizer.denoising_weight=0", "pefl.weight=0")
    nan_reward = 'rewards=[{aspect = "color", kind = "module", path = "bad_input_checks:nan_gradient_from_second_call"}]'
    assert main(train_args(tiny_sd15_dir, run_dir, "optim.max_steps=1", "logging.keep_checkpoints=0", *diverging[1:])) == 0
    cli_error(capsys, rf"at step 3; .*the last good checkpoint is {run_dir}/checkpoints/step-000001 \(resume with --resume .*step-000001\) \(step-000002, the state",
              *train_args(tiny_sd15_dir, run_dir, *diverging, nan_reward), "--resume", "latest")
    assert main(train_args(tiny_sd15_dir, run_dir, *diverging) + ["--resume", "latest"]) == 0
    assert any("step-000002 is where a run diverged" in r.getMessage() for r in caplog.records)
    assert "finished after 3 steps" in capsys.readouterr().out


# -- files other users can read ------------------------------------------------------------------------


@pytest.mark.slow
def test_loras_from_train_and_export_are_readable_as_the_umask_says(tiny_sd15_dir, tmp_path):
    import os
    import stat

    from unifl.cli import main

    previous = os.umask(0o022)
    try:
        run_dir = _trained_run(tiny_sd15_dir, tmp_path / "run", steps=1)
        assert main(["export", "latest", "--run-dir", str(run_dir), "--out", str(tmp_path / "exported.safetensors")]) == 0
    finally:
        os.umask(previous)
    for file in (run_dir / "unifl.safetensors", tmp_path / "exported.safetensors", run_dir / "checkpoints" / "step-000001" / "lora.safetensors"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, (file, oct(file.stat().st_mode))
    assert stat.S_IMODE((run_dir / "checkpoints" / "step-000001").stat().st_mode) == 0o755
