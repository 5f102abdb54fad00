"""The same seed gives the same run: stage 2 too, uninterrupted or resumed, whatever the process's RNG held.

Torch seeds its global generator randomly at start-up, so two CLI runs differ in every draw nobody seeded.
The tests below stand for "another process" by scrambling the global generator between runs.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from unifl.core.training.trainer import UniFLTrainer

pytestmark = pytest.mark.slow

STAGE2 = ("stage=2", "logging.checkpoint_every=2")


def _lora(run_dir):
    return load_file(str(run_dir / "unifl.safetensors"))


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}: max diff {(a[different[0]].float() - b[different[0]].float()).abs().max()}"


def _checkpointed_discriminator(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step-{step:06d}" / "discriminator.safetensors"))


def test_two_stage2_runs_with_one_seed_are_identical(fast_config, tmp_path):
    """The discriminator's fresh head (Sharpness grows one) was initialised from the global RNG: runs
    drifted apart from step 3 on (LoRA max diff ~4e-6 between two CLI runs)."""
    for name, scramble in (("a", 1), ("b", 2)):
        torch.manual_seed(scramble)  # what a fresh process holds: a random global generator
        UniFLTrainer(fast_config(*STAGE2, "optim.max_steps=4", f"logging.output_dir={tmp_path / name}")).train()
    _assert_same(_lora(tmp_path / "a"), _lora(tmp_path / "b"))
    _assert_same(_checkpointed_discriminator(tmp_path / "a", 4), _checkpointed_discriminator(tmp_path / "b", 4))


def test_stage2_resume_continues_bit_for_bit(fast_config, tmp_path):
    torch.manual_seed(1)
    UniFLTrainer(fast_config(*STAGE2, "optim.max_steps=4", f"logging.output_dir={tmp_path / 'straight'}")).train()
    torch.manual_seed(2)
    UniFLTrainer(fast_config(*STAGE2, "optim.max_steps=2", f"logging.output_dir={tmp_path / 'resumed'}")).train()
    torch.manual_seed(3)
    UniFLTrainer(fast_config(*STAGE2, "optim.max_steps=4", f"logging.output_dir={tmp_path / 'resumed'}")).train(resume="latest")
    _assert_same(_lora(tmp_path / "straight"), _lora(tmp_path / "resumed"))
    _assert_same(_checkpointed_discriminator(tmp_path / "straight", 4), _checkpointed_discriminator(tmp_path / "resumed", 4))


class DropoutReward(torch.nn.Module):
    """A learned reward with dropout, as the LAION aesthetic MLP has (Dropout 0.2/0.2/0.1)."""

    alpha = 1.0

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 1, 1))

    def forward(self, images, prompts):
        # Dropout even in eval mode (the trainer scores in eval mode): a model that draws from the global
        # generator whatever its mode, the case the trainer's per-step seeding is for.
        features = torch.nn.functional.dropout(self.head[0](images * 2 - 1), 0.5, training=True)
        return self.head[1](features).flatten(1).mean(dim=1)


def dropout_reward():
    return DropoutReward()


def test_a_discriminator_with_dropout_trains_the_same_twice(fast_config, tmp_path):
    detail = 'rewards=[{aspect = "detail", kind = "module", path = "tests.test_determinism:dropout_reward"}]'
    for name, scramble in (("a", 1), ("b", 2)):
        torch.manual_seed(scramble)
        UniFLTrainer(fast_config(*STAGE2, detail, "optim.max_steps=2", f"logging.output_dir={tmp_path / name}")).train()
    _assert_same(_lora(tmp_path / "a"), _lora(tmp_path / "b"))
