"""End-to-end training on a tiny real diffusers model: both stages, resume, stop, divergence, bad data."""

import csv

import pytest
import torch
from safetensors import safe_open
from unifl.core.data import DataError
from unifl.core.lora.peft import lora_state_dict
from unifl.core.training.trainer import TrainerCallbacks, TrainingDiverged, UniFLTrainer

pytestmark = pytest.mark.slow


def rows(run_dir):
    with (run_dir / "logs.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_stage1_then_stage2_train_only_the_lora_and_export_a_kohya_file(fast_config, tmp_path):
    trainer = UniFLTrainer(fast_config("stage=1"))
    base = {k: v.clone() for k, v in trainer.denoiser.unet.state_dict().items() if "lora" not in k}
    previews = []
    trainer.callbacks = TrainerCallbacks(on_preview=lambda step, images: previews.append((step, images)))
    result = trainer.train()
    after = trainer.denoiser.unet.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base), "base weights must stay frozen"
    assert any(not torch.all(after[k] == 0) for k in after if "lora_B" in k), "the LoRA must have moved"
    assert previews and previews[-1][0] == 2 and previews[-1][1][0].size == (32, 32)
    with safe_open(str(result.lora_path), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert meta["unifl.stage"] == "1" and meta["unifl.sampler.steps"] == "4"
    logged = rows(result.run_dir)
    assert [r["step"] for r in logged] == ["1", "2"] and float(logged[0]["pefl"]) > 0 and float(logged[0]["denoising"]) > 0

    stage2 = UniFLTrainer(fast_config("stage=2", f"lora.init_from={result.lora_path}", f"logging.output_dir={tmp_path / 'stage2'}"))
    start = {k: v.clone() for k, v in stage2.denoiser.unet.state_dict().items() if "lora" in k}
    assert any(v.abs().sum() > 0 for k, v in start.items() if "lora_B" in k), "stage 2 starts from the stage-1 LoRA"
    d_before = {k: v.clone() for k, v in stage2.discriminator.state_dict().items()}
    result2 = stage2.train()
    assert any(not torch.equal(d_before[k], v) for k, v in stage2.discriminator.state_dict().items()), "the discriminator is updated online"
    logged2 = rows(result2.run_dir)
    assert {"adv_g", "d_loss", "aesthetic"} <= set(logged2[0])
    with safe_open(str(result2.lora_path), "pt") as f:
        meta2 = f.metadata()
    assert (meta2["unifl.stage"], meta2["unifl.sampler.timestep_spacing"], meta2["unifl.sampler.cfg"]) == ("2", "trailing", "1.0")


def test_resume_latest_continues_with_the_same_loss_sequence(fast_config, tmp_path):
    straight = fast_config("optim.max_steps=4", f"logging.output_dir={tmp_path / 'straight'}")
    UniFLTrainer(straight).train()
    reference = rows(tmp_path / "straight")

    interrupted = fast_config("optim.max_steps=2", f"logging.output_dir={tmp_path / 'resumed'}")
    UniFLTrainer(interrupted).train()
    resumed = fast_config("optim.max_steps=4", f"logging.output_dir={tmp_path / 'resumed'}")
    UniFLTrainer(resumed).train(resume="latest")
    again = rows(tmp_path / "resumed")
    columns = [k for k in reference[0] if k not in ("seconds",)]
    assert [[r[k] for k in columns] for r in again] == [[r[k] for k in columns] for r in reference]


def test_should_stop_saves_a_checkpoint_and_exports(fast_config):
    asked = {"stop": False}
    callbacks = TrainerCallbacks(should_stop=lambda: asked["stop"], on_progress=lambda step, total, logs: asked.update(stop=True))
    result = UniFLTrainer(fast_config("optim.max_steps=5"), callbacks=callbacks).train()
    assert result.stopped_early and result.steps == 1 and result.lora_path.is_file()
    assert (result.run_dir / "checkpoints" / "step-000001" / "state.json").is_file()
    assert not (result.run_dir / "samples").exists()  # a stopped run hands the host back without validating


def test_a_stop_request_ends_the_step_in_progress_within_one_model_call(fast_config):
    """The stop is polled before every rollout step and feedback term: a request made during the first
    rollout step ends the step there, with nothing of it applied."""
    trainer = UniFLTrainer(fast_config("optim.max_steps=5", "pefl.inference_steps=8", "pefl.noise_level=6"))
    before = {k: v.clone() for k, v in lora_state_dict(trainer.denoiser.lora_target).items()}
    calls = {"unet": 0}
    trainer.denoiser.unet.register_forward_hook(lambda *_: calls.update(unet=calls["unet"] + 1))
    trainer.callbacks.should_stop = lambda: calls["unet"] >= 1
    result = trainer.train()
    assert result.stopped_early and result.steps == 0
    assert calls["unet"] == 1  # the one UNet call already under way, then the stop
    assert all(torch.equal(before[k], v) for k, v in lora_state_dict(trainer.denoiser.lora_target).items())


def nan_reward():
    class NaNReward(torch.nn.Module):
        alpha = 1.0

        def forward(self, images, prompts):
            return images.mean(dim=(1, 2, 3)) * float("nan")

    return NaNReward()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(fast_config):
    config = fast_config("optim.max_steps=3", 'rewards=[{aspect = "color", kind = "module", path = "tests.test_trainer:nan_reward"}]', "aesthetic.weight=1.0")
    with pytest.raises(TrainingDiverged, match="aesthetic loss became nan at step 1; nothing of that step was applied and no good checkpoint"):
        UniFLTrainer(config).train()


def test_a_run_folder_is_never_silently_reused(fast_config):
    UniFLTrainer(fast_config("optim.max_steps=1")).train()
    with pytest.raises(FileExistsError, match="--resume latest"):
        UniFLTrainer(fast_config("optim.max_steps=1")).train()


def test_structure_feedback_without_masks_is_a_data_error(fast_config, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 40), "red").save(folder / "a.png")
    (folder / "a.txt").write_text("a red square")
    config = fast_config(f"data.images={folder}", 'perception=[{aspect = "structure", kind = "module", path = "tests.test_trainer:nan_reward"}]')
    with pytest.raises(DataError, match="instance masks.*instances.png"):
        UniFLTrainer(config)


def test_sdxl_bf16_autocast_keeps_lora_fp32_and_logs_progress(tiny_sdxl_dir, fast_config, tmp_path):
    config = fast_config(f"model.path={tiny_sdxl_dir}", "model.dtype=bf16", "optim.mixed_precision=bf16", "optim.max_steps=1", "logging.tensorboard=true")
    progress = []
    trainer = UniFLTrainer(config, callbacks=TrainerCallbacks(on_progress=lambda step, total, logs: progress.append((step, total, logs))))
    assert trainer.denoiser.architecture == "sdxl"
    assert trainer.denoiser.unet.dtype == torch.bfloat16 and trainer.denoiser.vae.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.lora_params)
    assert trainer.denoiser.unet.is_gradient_checkpointing and trainer.denoiser.vae.decoder.gradient_checkpointing
    result = trainer.train()
    assert progress and progress[-1][:2] == (1, 1) and all(torch.isfinite(torch.tensor(v)) for v in progress[-1][2].values())
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    with safe_open(str(result.lora_path), "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"


def test_bad_data_is_named(fast_config, tmp_path):
    from PIL import Image

    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="prompts.txt is empty"):
        UniFLTrainer(fast_config(f"data.prompts={empty}"))

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 40), "red").save(folder / "a.png")
    (folder / "a.txt").write_text("a red square")
    Image.new("L", (20, 20)).save(folder / "a.semantic.png")
    from unifl.core.data import ImageFolderDataset

    with pytest.raises(DataError, match=r"a.semantic.png is 20x20 but its image is 40x40"):
        ImageFolderDataset(folder, 32)[0]
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="b.txt"):
        ImageFolderDataset(folder, 32)


def test_stage2_over_step_counts_trains_every_count_and_its_lora_names_them(fast_config, monkeypatch):
    """schedule = step-counts: across a run every count of {1, 2, 4, 8} is drawn and rolled out on its own
    trailing schedule (874 is a timestep of the 8-step sampler alone), and the LoRA's sampler contract
    names the set, with the default count first among equals."""
    from unifl.core.training import trainer as trainer_module

    drawn, original = [], trainer_module.step_count_rollout

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        drawn.extend(out[2].tolist())
        return out

    monkeypatch.setattr(trainer_module, "step_count_rollout", recording)
    config = fast_config("stage=2", "adversarial.schedule=step-counts", "adversarial.step_counts=[1, 2, 4, 8]", "adversarial.inference_steps=4",
                         "optim.max_steps=6", "optim.batch_size=2", "regularizer.denoising_weight=0")
    trainer = UniFLTrainer(config)
    timesteps = []
    trainer.denoiser.unet.register_forward_pre_hook(lambda module, args, kwargs: timesteps.extend(args[1].tolist()), with_kwargs=True)
    result = trainer.train()
    assert sorted(set(drawn)) == [1, 2, 4, 8] and len(drawn) == 12
    assert 874 in timesteps
    with safe_open(str(result.lora_path), "pt") as f:
        meta = f.metadata()
    assert (meta["unifl.sampler.step_counts"], meta["unifl.sampler.steps"], meta["unifl.sampler.timestep_spacing"]) == ("1,2,4,8", "4", "trailing")
    assert "adv_step_count" in rows(result.run_dir)[0]


def test_a_shared_stage2_rollout_feeds_both_terms_for_the_unet_calls_of_one(fast_config, tmp_path):
    """aesthetic.stage2_schedule = shared: the aspect rewards score the adversarial rollout's predictions, so a
    step makes only that rollout's UNet calls, and its one backward carries both terms."""
    calls = {}
    for name, overrides in {"own rollout": ("aesthetic.stage2_schedule=rollout",), "shared": ("aesthetic.stage2_schedule=shared",),
                            "adversarial alone": ("aesthetic.weight=0",)}.items():
        trainer = UniFLTrainer(fast_config("stage=2", "optim.batch_size=2", "regularizer.denoising_weight=0", "aesthetic.inference_steps=8", *overrides,
                                           f"logging.output_dir={tmp_path / name.replace(' ', '-')}"))
        counted = [0]
        trainer.denoiser.unet.register_forward_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))
        logs = trainer.train_step()
        calls[name] = counted[0]
        if name == "shared":
            assert logs["aesthetic"] > 0 and {"reward_color", "aes_hinge_color", "adv_g"} <= set(logs)
            loss, parts, _ = trainer.adversarial_loss(trainer._real_batch(0), torch.Generator().manual_seed(0))
            assert torch.allclose(loss, parts["adv_g"] + parts["aesthetic"]), "the one backward carries both terms"
    assert calls["shared"] == calls["adversarial alone"] < calls["own rollout"]


def test_stage2_schedule_settings_that_cannot_work_are_refused_with_the_fix(fast_config):
    from unifl.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"inference_steps = 4 is the LoRA's default step count, so it must be one of adversarial.step_counts = \[1, 2\]"):
        fast_config("stage=2", "adversarial.schedule=step-counts", "adversarial.step_counts=[1, 2]", "adversarial.inference_steps=4")
    with pytest.raises(ConfigError, match="adversarial.step_counts = "):
        fast_config("stage=2", "adversarial.schedule=step-counts", "adversarial.step_counts=[0, 4]")
    with pytest.raises(ConfigError, match="at most adversarial.trajectory_steps - 1 = 19"):
        fast_config("stage=2", "adversarial.schedule=trajectory", "adversarial.start_level=20")
    with pytest.raises(ConfigError, match="set aesthetic.cfg = 1"):
        fast_config("stage=2", "aesthetic.stage2_schedule=shared", "aesthetic.cfg=3.0")
    assert fast_config("stage=2", "adversarial.schedule=trajectory", "adversarial.start_level=5").adversarial.start_level == 5  # grad_levels are few-step's only


def test_stage2_on_the_papers_trajectory_rolls_out_the_20_step_schedule_from_the_real_image(fast_config):
    """schedule = trajectory: every UNet call of the step is on the 20-step trailing grid (not only the 4-step
    sampler's), the LoRA moves, and its contract keeps the one default count."""
    from unifl.core.diffusion.schedule import sampling_timesteps

    trainer = UniFLTrainer(fast_config("stage=2", "adversarial.schedule=trajectory", "adversarial.trajectory_steps=20", "adversarial.start_level=10",
                                       "aesthetic.weight=0", "regularizer.denoising_weight=0", "optim.batch_size=2", "optim.max_steps=3"))
    timesteps = []
    trainer.denoiser.unet.register_forward_pre_hook(lambda module, args, kwargs: timesteps.extend(args[1].tolist()), with_kwargs=True)
    before = {k: v.clone() for k, v in lora_state_dict(trainer.denoiser.lora_target).items()}
    for _ in range(3):
        trainer.train_step()
        trainer.step += 1
    grid = set(sampling_timesteps(1000, 20, "trailing")[10:].tolist())
    assert timesteps and set(timesteps) <= grid and len(set(timesteps)) > 1
    assert any(not torch.equal(before[k], v) for k, v in lora_state_dict(trainer.denoiser.lora_target).items())
    assert trainer.sampler_contract().step_counts == (trainer.config.adversarial.inference_steps,)


def test_a_discriminator_step_reusing_the_generators_scores_trains_as_one_that_scores_again(fast_config, tmp_path):
    """adversarial.reuse_fake_scores: the discriminator's fake half is taken from the generator term's own scoring
    (same parameters, same images), so both nets end where a run that scores the fakes again ends, over two
    micro-batches, with one discriminator evaluation less per fake."""
    ends = {}
    for reuse in (False, True):
        trainer = UniFLTrainer(fast_config("stage=2", "aesthetic.weight=0", "optim.batch_size=2", "optim.gradient_accumulation_steps=2", "optim.max_steps=2",
                                           "adversarial.discriminator_lr=1e-3", f"adversarial.reuse_fake_scores={str(reuse).lower()}",
                                           f"logging.output_dir={tmp_path / str(reuse)}"))
        seen = [0]
        trainer.discriminator.register_forward_hook(lambda module, args, out: seen.__setitem__(0, seen[0] + len(args[0])))
        d_logs = [trainer.train_step()["d_loss"] for trainer.step in range(2)]
        ends[reuse] = ([p.detach().clone() for p in trainer.d_params], [p.detach().clone() for p in trainer.lora_params], d_logs, seen[0])
    (d_plain, lora_plain, loss_plain, seen_plain), (d_reused, lora_reused, loss_reused, seen_reused) = ends[False], ends[True]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(d_plain, d_reused)), "the discriminator trained differently"
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(lora_plain, lora_reused)), "the generator trained differently"
    assert loss_plain == pytest.approx(loss_reused, rel=1e-5)
    assert seen_reused == seen_plain - 2 * 4  # two steps, two micro-batches of two fakes each: never scored twice


def test_a_scored_fraction_gives_the_aspect_rewards_that_share_of_each_batch(fast_config, tmp_path):
    """aesthetic.scored_fraction = 0.5 at batch 4: the rewards score 2 samples, of the shared adversarial rollout
    (whose generator term still sees all 4) or of an aesthetic rollout of 2 prompts."""
    for schedule in ("shared", "rollout"):
        trainer = UniFLTrainer(fast_config("stage=2", "optim.batch_size=4", "aesthetic.scored_fraction=0.5", f"aesthetic.stage2_schedule={schedule}",
                                           f"logging.output_dir={tmp_path / schedule}"))
        scored, judged = [], []
        for model in trainer.rewards.values():
            model.register_forward_hook(lambda module, args, out: scored.append(len(args[0])))
        trainer.discriminator.register_forward_hook(lambda module, args, out: judged.append(len(args[0])))
        trainer.train_step()
        assert scored and set(scored) == {2}, schedule
        assert judged[0] == 4, "the generator term scores every prediction"
