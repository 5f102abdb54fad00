"""The trainer's risky invariants, each shown by behaviour on a tiny real diffusers model: a non-finite
gradient is never applied or saved, each feedback term alone moves the LoRA, the generator and the
discriminator never write into each other, precision is per run, and the loss scale survives a resume."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from unifl.core.feedback.discriminator import make_discriminator
from unifl.core.lora.peft import lora_state_dict
from unifl.core.training import checkpoint as ckpt
from unifl.core.training.trainer import TrainerCallbacks, TrainingDiverged, UniFLTrainer

pytestmark = pytest.mark.slow


class NaNGradientReward(nn.Module):
    """A reward whose value stays finite but whose gradient is NaN from its third call on: the case a
    loss check cannot see (√|x − x| is 0 with an infinite slope at 0)."""

    alpha = 1.0
    calls = 0

    def forward(self, images, prompts):
        NaNGradientReward.calls += 1
        score = images.mean(dim=(1, 2, 3))
        if NaNGradientReward.calls >= 3:
            score = score + (images - images.detach()).abs().sqrt().mean(dim=(1, 2, 3))
        return score


def nan_gradient_reward():
    NaNGradientReward.calls = 0
    return NaNGradientReward()


def lora_copy(trainer):
    return {k: v.detach().clone() for k, v in lora_state_dict(trainer.denoiser.lora_target).items()}


def test_non_finite_gradient_is_never_applied_or_saved(fast_config, tmp_path):
    overrides = ("optim.max_steps=5", "optim.max_grad_norm=0", "regularizer.denoising_weight=0", "pefl.weight=0",
                 'rewards=[{aspect = "color", kind = "module", path = "tests.test_trainer_invariants:nan_gradient_reward"}]')
    after_step = {}
    trainer = UniFLTrainer(fast_config(*overrides))
    trainer.callbacks = TrainerCallbacks(on_progress=lambda step, total, logs: after_step.update({step: lora_copy(trainer)}))
    with pytest.raises(TrainingDiverged, match=r"gradient norm became nan at step 3; nothing of that step was applied") as error:
        trainer.train()
    # The LoRA is exactly what step 2 left: the NaN gradient of step 3 was never applied.
    assert all(torch.equal(after_step[2][k], v) for k, v in lora_copy(trainer).items())
    # Every checkpoint on disk is finite, and the one named good is older than the state that failed.
    for path in ckpt.list_checkpoints(trainer.run_dir):
        tensors, _, _ = ckpt.load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in tensors["lora"].values())
    named = Path(re.search(r"last good checkpoint is (\S+) ", str(error.value)).group(1))
    assert named.name == "step-000001"
    # Resuming from it as the message advises works (with a reward that behaves).
    resumed = UniFLTrainer(fast_config(*overrides[:-1])).train(resume=str(named))
    assert resumed.steps == 5 and not resumed.stopped_early


def test_weights_that_became_non_finite_are_never_checkpointed(fast_config):
    trainer = UniFLTrainer(fast_config())
    trainer.train()
    with torch.no_grad():
        trainer.lora_params[0].fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="became non-finite"):
        trainer.save_checkpoint()
    assert [p.name for p in ckpt.list_checkpoints(trainer.run_dir)] == ["step-000001", "step-000002"]


@pytest.mark.parametrize("term, overrides", [
    ("PeFL", ("aesthetic.weight=0", "regularizer.denoising_weight=0")),
    ("aesthetic", ("pefl.weight=0", "regularizer.denoising_weight=0")),
    ("denoising", ("pefl.weight=0", "aesthetic.weight=0")),
    ("adversarial", ("stage=2", "aesthetic.weight=0", "regularizer.denoising_weight=0")),
])
def test_each_feedback_term_alone_moves_the_lora(fast_config, term, overrides):
    trainer = UniFLTrainer(fast_config("optim.max_steps=1", *overrides))
    assert trainer.feedback_terms == [term]
    before = lora_copy(trainer)
    trainer.train()
    moved = [k for k, v in lora_copy(trainer).items() if not torch.equal(before[k], v)]
    assert moved, f"{term} alone must move the LoRA"


def test_the_generator_and_discriminator_steps_never_write_into_each_other(fast_config):
    trainer = UniFLTrainer(fast_config("stage=2", "aesthetic.weight=0"))
    batch = trainer._real_batch(0)
    d_before = [p.detach().clone() for p in trainer.d_params]
    loss, _, fake = trainer.adversarial_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in trainer.d_params), "the generator term wrote discriminator gradients"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.lora_params)
    trainer.optimizer.zero_grad(set_to_none=True)

    lora_before = lora_copy(trainer)
    trainer.discriminator_step(batch["image"], [fake], batch["caption"])
    assert all(p.grad is None for p in trainer.lora_params), "the discriminator step wrote LoRA gradients"
    assert all(torch.equal(lora_before[k], v) for k, v in lora_copy(trainer).items())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.d_params)), "the discriminator must train"
    assert all(p.grad is None for p in trainer.d_params), "no stale discriminator gradients after its step"


def test_runs_of_one_process_each_keep_their_own_precision(fast_config, tmp_path):
    bf16 = UniFLTrainer(fast_config("optim.max_steps=1", "optim.mixed_precision=bf16"))
    assert bf16.train().steps == 1
    fp32 = UniFLTrainer(fast_config("optim.max_steps=1", f"logging.output_dir={tmp_path / 'fp32'}"))
    seen = []
    fp32.denoiser.unet.conv_in.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    assert fp32.train().steps == 1
    assert seen and set(seen) == {torch.float32}


def test_fp16_resume_restores_the_loss_scale(fast_config, tmp_path):
    first = UniFLTrainer(fast_config("optim.mixed_precision=fp16", "optim.max_steps=2"))
    first.train()
    saved = first.precision.state_dict()["generator"]
    assert saved["scale"] > 0 and saved["_growth_tracker"] + (saved["scale"] != 65536.0) >= 1
    resumed = UniFLTrainer(fast_config("optim.mixed_precision=fp16", "optim.max_steps=3"))
    resumed.load_checkpoint(ckpt.resolve_resume(resumed.run_dir, "latest"))
    assert resumed.precision.state_dict()["generator"] == saved


def test_an_fp32_vae_decodes_in_fp32_under_fp16_autocast(fast_config):
    trainer = UniFLTrainer(fast_config("optim.mixed_precision=fp16"))
    seen = []
    trainer.denoiser.vae.decoder.conv_out.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with trainer.precision.autocast():
        images = trainer._decode(torch.randn(1, 4, 4, 4))
    assert seen == [torch.float32] and images.dtype == torch.float32


def test_head_only_discriminator_shares_the_frozen_trunk_and_trains_a_copy_of_the_head():
    class Reward(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 1)

        def forward(self, images, prompts):
            return self.head(self.trunk(images).mean(dim=(2, 3))).squeeze(-1)

    reward = Reward().requires_grad_(False).eval()
    discriminator = make_discriminator(reward, "head", name="detail")
    assert discriminator.trunk is reward.trunk and discriminator.head is not reward.head
    assert [n for n, p in discriminator.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert not any(p.requires_grad for p in reward.parameters()), "the reward model stays frozen"
    assert make_discriminator(reward, "auto", name="detail").trunk is not reward.trunk  # small: a full copy
    with pytest.raises(ValueError, match="no 'head'"):
        make_discriminator(nn.Sequential(nn.Linear(2, 1)), "head", name="detail")


def test_stage2_aesthetic_feedback_can_roll_out_the_deployment_schedule(fast_config):
    assert UniFLTrainer(fast_config("stage=2")).aesthetic_schedule() == (4, "leading", (0, 1))  # the default: as in stage 1
    trainer = UniFLTrainer(fast_config("stage=2", "aesthetic.stage2_schedule=deployment", "adversarial.weight=0", "regularizer.denoising_weight=0", "optim.max_steps=1", "logging.output_dir=" + str(fast_config().logging.output_dir) + "-deployment"))
    assert trainer.aesthetic_schedule() == (2, "trailing", (0, 1))
    seen = []
    trainer.denoiser.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(int(args[1].max())), with_kwargs=True)
    trainer.train()
    assert seen and max(seen) == 999, "the few-step trailing schedule starts at t = 999, like the stage-2 sampler"


def test_each_prompt_is_encoded_once(fast_config):
    trainer = UniFLTrainer(fast_config())
    calls = []
    encode = trainer.denoiser.encode_prompts
    trainer.denoiser.encode_prompts = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    trainer.encode(["a", "b", "a"])
    trainer.encode(["b", "c"])
    assert calls == [["a", "b"], ["c"]]


def test_a_discriminator_from_a_half_precision_reward_trains_in_fp32():
    reward = nn.Sequential(nn.Linear(4, 4)).to(torch.bfloat16).requires_grad_(False)
    reward.head = nn.Linear(4, 1).to(torch.bfloat16).requires_grad_(False)
    for trainable in ("all", "head"):
        discriminator = make_discriminator(reward, trainable, name="detail")
        assert {p.dtype for p in discriminator.parameters() if p.requires_grad} == {torch.float32}
    assert reward.head.weight.dtype == torch.bfloat16, "the frozen reward model keeps its storage dtype"


def test_a_head_and_blocks_discriminator_trains_copies_of_the_last_trunk_blocks_and_leaves_the_reward_alone():
    """'head+2': the head and the last two blocks of the trunk's last block list train, as fp32 copies; the
    earlier blocks and the first tower stay the reward model's own (shared, frozen), and the reward model
    scores as before after the discriminator has trained."""
    from unifl.core.feedback.discriminator import trainable_parameter_count

    class Tower(nn.Module):
        def __init__(self, width, depth):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return x

    class Reward(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = Tower(3, 3)  # registered first: not the blocks nearest the head
            self.text = nn.Module()
            self.text.encoder = Tower(3, 4)
            self.head = nn.Linear(3, 1)

        def forward(self, images, prompts):
            return self.head(self.text.encoder(self.vision(images.mean(dim=(2, 3))))).squeeze(-1)

    torch.manual_seed(0)
    reward = Reward().requires_grad_(False).eval()
    images = torch.rand(2, 3, 4, 4)
    before = reward(images, ["a", "b"]).clone()
    discriminator = make_discriminator(reward, "head+2", name="detail")
    trained = sorted(n for n, p in discriminator.named_parameters() if p.requires_grad)
    assert trained == sorted(f"{m}.{w}" for m in ("head", "text.encoder.layers.2", "text.encoder.layers.3") for w in ("weight", "bias"))
    assert discriminator.vision is reward.vision and discriminator.text.encoder.layers[1] is reward.text.encoder.layers[1]
    assert discriminator.text.encoder.layers[3] is not reward.text.encoder.layers[3]
    assert trainable_parameter_count(reward, "head+2", "detail") == sum(p.numel() for p in discriminator.parameters() if p.requires_grad)
    optimizer = torch.optim.SGD([p for p in discriminator.parameters() if p.requires_grad], lr=1.0)
    discriminator(images, ["a", "b"]).sum().backward()
    optimizer.step()
    assert not torch.allclose(discriminator(images, ["a", "b"]), before), "the discriminator trains"
    assert torch.equal(reward(images, ["a", "b"]), before) and not any(p.requires_grad for p in reward.parameters()), "the reward model is untouched"
    with pytest.raises(ValueError, match=r"has 4 blocks: use head\+4 at most"):
        make_discriminator(reward, "head+5", name="detail")
