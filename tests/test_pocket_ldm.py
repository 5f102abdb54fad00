"""The pocket LDM: the shipped folder is a plain diffusers pipeline that loads offline and has learned something,
and the build script makes such a folder end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser
from unifl.core.diffusion.loading import load_denoiser
from unifl.pocket.models import ldm
from unifl.pocket.world.world import VOCABULARY, PocketDataset, WorldConfig, sample_prompts

SHIPPED = ldm.pocket_model_dir()


@pytest.fixture(scope="module")
def shipped_denoiser() -> DiffusersDenoiser:
    if not (SHIPPED / "model_index.json").is_file():
        pytest.fail(f"{SHIPPED} has no pipeline; build it with `python -m unifl.pocket.models.ldm --out {SHIPPED}`")
    return load_denoiser(SHIPPED)


@pytest.fixture(scope="module")
def holdout():
    """Held-out images (stream 2, as in BUILD.md) and their captions."""
    samples = [PocketDataset(16, seed=2, config=WorldConfig(resolution=64))[i] for i in range(16)]
    return torch.stack([s.image for s in samples]), [s.caption for s in samples]


def test_plain_diffusers_loads_the_shipped_folder_offline_and_generates(monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(str(SHIPPED))
    assert pipe.safety_checker is None and pipe.unet.dtype == torch.float32
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the pocket world, not SD's default
    out = pipe("a large red circle on a light grey grainy background lit from the west", num_inference_steps=3,
               generator=torch.Generator().manual_seed(0), output_type="np")
    image = out.images[0]
    assert image.shape == (64, 64, 3) and (0 <= image).all() and (image <= 1).all()
    assert image.std() > 0.02  # a picture, not a flat field


def test_scheduler_is_sd15_ddim():
    config = json.loads((SHIPPED / "scheduler" / "scheduler_config.json").read_text())
    for key, value in {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                       "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1, "set_alpha_to_one": False}.items():
        assert config[key] == value, key


def test_our_loader_gives_fp32_denoiser_with_factor_4_latents(shipped_denoiser):
    assert shipped_denoiser.vae_scale_factor == 4 and shipped_denoiser.latent_channels == 4
    assert all(p.dtype == torch.float32 for m in (shipped_denoiser.unet, shipped_denoiser.vae, *shipped_denoiser.text_encoders) for p in m.parameters())
    assert ldm.load_pocket_pipeline().unet.config.sample_size == 16


def test_tokenizer_keeps_every_vocabulary_word_whole_and_every_caption_fits(shipped_denoiser):
    tokenizer = shipped_denoiser.tokenizers[0]
    split = [w for w in VOCABULARY if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    assert not split, f"words split into several tokens: {split}"
    longest = max(len(tokenizer(p).input_ids) for p in sample_prompts(2000, seed=0))
    assert longest <= tokenizer.model_max_length == ldm.MAX_TOKENS


def test_vae_round_trip_keeps_detail_and_latents_have_unit_scale(shipped_denoiser, holdout):
    images, _ = holdout
    with torch.no_grad():
        latents = shipped_denoiser.encode_images(images)
        decoded = shipped_denoiser.decode_latents(latents).clamp(0, 1)
    assert latents.shape == (16, 4, 16, 16)
    assert 0.75 < latents.std().item() < 1.33
    psnr = 10 * torch.log10(1 / ((decoded - images) ** 2).mean(dim=(1, 2, 3)))
    assert psnr.mean() > 24.0


def test_denoiser_uses_the_caption(shipped_denoiser, holdout):
    """With the true caption the held-out noise is predicted better than with another image's caption."""
    images, captions = holdout
    d = shipped_denoiser
    with torch.no_grad():
        x0 = d.encode_images(images)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        t = torch.full((len(x0),), 500)
        x_t = x0 * d.alphas_cumprod[500].sqrt().float() + noise * (1 - d.alphas_cumprod[500]).sqrt().float()

        def error(prompts):
            return ((d.predict_model_output(x_t, t, d.encode_prompts(prompts)) - noise) ** 2).mean().item()

        matched, shuffled = error(captions), error(captions[1:] + captions[:1])
    assert matched < 0.9 * shuffled


def test_quick_build_writes_a_loadable_pipeline_folder(tmp_path):
    out = ldm.build_pocket_pipeline(tmp_path / "ldm", quick=True)
    assert {"model_index.json", "BUILD.md", "samples.png", "unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= {p.name for p in out.iterdir()}
    assert "--quick" in (out / "BUILD.md").read_text()
    denoiser = load_denoiser(out)
    assert denoiser.vae_scale_factor == 4 and denoiser.scaling_factor != 0.18215
    assert not list(tmp_path.glob(".ldm*"))  # no temporary or replaced folder left behind


def test_a_build_in_parts_gives_the_weights_of_one_uninterrupted_build(tmp_path):
    """A part that runs out of time saves the whole training state; ``resume`` continues bit for bit."""
    from safetensors.torch import load_file

    from unifl.pocket.models.resumable import PartFinished

    whole = ldm.build_pocket_pipeline(tmp_path / "whole" / "ldm", quick=True)
    target = tmp_path / "parts" / "ldm"
    stops = 0
    while True:
        try:  # no time at all per part: each part trains one step, saves and stops
            pieced = ldm.build_pocket_pipeline(target, quick=True, resume=stops > 0, part_hours=0.0)
            break
        except PartFinished as finished:
            stops += 1
            assert finished.step == stops and finished.total == ldm.QUICK.unet_steps
            with pytest.raises(FileExistsError, match="--resume"):  # an unfinished build is never started over silently
                ldm.build_pocket_pipeline(target, quick=True)
    assert stops == ldm.QUICK.unet_steps - 1
    for part in ("unet", "text_encoder", "vae"):
        [a] = (whole / part).glob("*.safetensors")
        [b] = (pieced / part).glob("*.safetensors")
        expected, got = load_file(str(a)), load_file(str(b))
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), part
    assert "in 6 parts" in (pieced / "BUILD.md").read_text()
    assert str(tmp_path) not in "".join(path.read_text() for path in pieced.rglob("*.json"))  # no part folder named
    assert not ldm.parts_folder(target).exists()  # a finished build keeps no parts


def test_a_saved_part_trained_on_other_captions_is_not_continued(tmp_path, monkeypatch):
    """The settings do not name the captions: a state from before a world change must not go on after it."""
    from unifl.pocket.models.resumable import PartFinished

    target = tmp_path / "ldm"
    with pytest.raises(PartFinished):
        ldm.build_pocket_pipeline(target, quick=True, part_hours=0.0)
    rendered = ldm.render_images
    monkeypatch.setattr(ldm, "render_images", lambda *args: (lambda images, captions: (images, [c.replace("west", "east") for c in captions]))(*rendered(*args)))
    with pytest.raises(ValueError, match="other captions"):
        ldm.build_pocket_pipeline(target, quick=True, resume=True)



def test_a_part_killed_after_a_save_keeps_its_time_up_to_that_save(tmp_path, monkeypatch):
    """A machine stop kills a part before it can add its time; the time recorded at its last save still counts."""

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):  # the process dies where a finished part would add its time
        raise Killed

    target = tmp_path / "ldm"
    parts = ldm.parts_folder(target)
    with monkeypatch.context() as patch:
        patch.setattr(ldm, "add_part_times", killed)
        with pytest.raises(Killed):
            ldm.build_pocket_pipeline(target, quick=True, part_hours=0.0)  # trains one step, saves, would stop
    left = json.loads((parts / ldm.PART_IN_PROGRESS).read_text())
    assert left["unet"] > 0 and left["total"] >= left["unet"] + left["vae"]
    built = ldm.build_pocket_pipeline(target, quick=True, resume=True)
    assert "in 2 parts" in (built / "BUILD.md").read_text()  # the killed part is counted, with its time

def test_pocket_build_resume_skips_finished_parts_and_refuses_a_silent_restart(tmp_path, monkeypatch, capsys):
    from unifl.pocket import build as pocket_build

    calls = []

    def fake_ldm_main(argv):  # the LDM's own part logic is tested above; here only the sequencing of parts
        calls.append(argv)
        return None if len(calls) == 1 else tmp_path

    monkeypatch.setattr(ldm, "main", fake_ldm_main)
    assert pocket_build.build(["ldm"], out=tmp_path, part_hours=1.5) is None
    assert "--part-hours" in calls[0] and "1.5" in calls[0] and "--resume" not in calls[0]
    assert "unifl pocket build --resume" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--resume"):
        pocket_build.build(["ldm"], out=tmp_path)
    assert pocket_build.build(["ldm"], out=tmp_path, resume=True) is not None
    assert "--resume" in calls[1]
    assert not (tmp_path / pocket_build.PROGRESS_FILE).exists()


def test_the_high_noise_cap_weights_low_snr_steps_like_x0_errors_and_leaves_the_rest_to_min_snr():
    snr = torch.tensor([0.001, 0.05, 0.5, 2.0, 20.0])
    plain = ldm.loss_weights(snr, snr_gamma=5.0)
    capped = ldm.loss_weights(snr, snr_gamma=5.0, high_noise_weight_cap=10.0)
    assert torch.equal(plain, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.25]))  # min-SNR-5: only easy steps are damped
    assert torch.allclose(capped, torch.tensor([10.0, 10.0, 2.0, 1.0, 0.25]))  # 1/SNR below SNR 1, capped at 10
    assert ldm.PRESETS["long-vae-light"].high_noise_weight_cap == 10.0 and ldm.PRESETS["v1"].high_noise_weight_cap is None
    # off, it leaves the fingerprint as it was before the field existed: saved states of such builds still resume
    assert "high_noise_weight_cap" not in ldm.PRESETS["long-vae"].fingerprint()
    assert "('high_noise_weight_cap', 10.0)" in ldm.PRESETS["long-vae-light"].fingerprint()



def test_the_decoder_fine_tune_trains_the_decoder_alone_and_keeps_the_latents(tmp_path):
    """decoder_adversarial_steps: only post_quant_conv and the decoder move, so every latent (and a denoiser
    trained on them) stays as the L1 VAE made it; the denoiser's state does not depend on the fine-tune."""
    from safetensors.torch import load_file

    from unifl.pocket.models.resumable import PartFinished

    settings = replace(ldm.QUICK, decoder_adversarial_steps=3, decoder_batch=2)
    assert settings.fingerprint() == ldm.QUICK.fingerprint()
    target = tmp_path / "ldm"
    with pytest.raises(PartFinished):  # stops after the VAE parts and one denoiser step: both VAEs are parts now
        ldm.build_pocket_pipeline(target, settings=settings, part_hours=0.0)
    parts = ldm.parts_folder(target)
    [plain] = (parts / "vae").glob("*.safetensors")
    [tuned] = (parts / "vae-decoder").glob("*.safetensors")
    plain, tuned = load_file(str(plain)), load_file(str(tuned))
    trained = {k for k in plain if not torch.equal(plain[k], tuned[k])}
    assert trained and all(k.startswith(("decoder.", "post_quant_conv.")) for k in trained)
    assert any(k.startswith("encoder.") for k in plain) and not any(k.startswith(("encoder.", "quant_conv.")) for k in trained)
    with pytest.raises(ValueError, match="other decoder settings"):  # the part is not taken for a different fine-tune
        ldm.build_pocket_pipeline(target, settings=replace(settings, decoder_adversarial_weight=1.0), resume=True)
    built = ldm.build_pocket_pipeline(target, settings=settings, resume=True)
    [shipped] = (built / "vae").glob("*.safetensors")
    assert all(torch.equal(v, tuned[k]) for k, v in load_file(str(shipped)).items())
    assert "against a patch discriminator" in (built / "BUILD.md").read_text()
