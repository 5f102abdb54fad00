"""Bradley–Terry reward training, accuracy and α_d on toy models whose right answers are known."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from unifl.core.feedback.rewards.files import load_reward_file, save_reward_model
from unifl.core.training.reward_models import PreferencePairs, bradley_terry_loss, derive_alpha, pair_accuracy, score_pairs, train_reward_model


class Brightness(nn.Module):
    """``weight · mean(image) + bias``: the toy reward, right when ``weight > 0`` and brighter is better."""

    def __init__(self, weight: float = -1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, images, prompts):
        return self.weight * images.mean(dim=(1, 2, 3)) + self.bias


class TwoChannels(nn.Module):
    """Reads channel 0 and channel 1 separately, so a test can see which one it learned to use."""

    def __init__(self):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(2))

    def forward(self, images, prompts):
        return images[:, :2].mean(dim=(2, 3)) @ self.weights


def constant_images(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()


def brightness_pairs(n: int, seed: int = 0) -> PreferencePairs:
    """Better images are brighter by a random amount."""
    g = torch.Generator().manual_seed(seed)
    worse = torch.rand(n, generator=g) * 0.5
    better = worse + 0.05 + torch.rand(n, generator=g) * 0.4
    return PreferencePairs([f"p{i}" for i in range(n)], constant_images(better), constant_images(worse))


def test_bradley_terry_loss_values():
    r = torch.tensor([0.3, -1.0])
    assert bradley_terry_loss(r, r).item() == pytest.approx(math.log(2))
    assert bradley_terry_loss(torch.tensor([20.0]), torch.tensor([0.0])).item() < 1e-8
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([1000.0])).item() == pytest.approx(1000.0)  # finite, no log(0)
    r_w, r_l = torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.7])
    expected = -torch.log(torch.sigmoid(r_w - r_l)).mean()
    assert bradley_terry_loss(r_w, r_l).item() == pytest.approx(expected.item(), rel=1e-6)
    assert bradley_terry_loss(r_w, r_l, torch.ones(2)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_tie_loss_is_minimal_at_equal_scores():
    margin = torch.linspace(-2, 2, 41, requires_grad=True)
    losses = torch.stack([bradley_terry_loss(m.view(1), torch.zeros(1), torch.tensor([0.5])) for m in margin])
    assert losses.argmin().item() == 20  # margin 0
    losses[20].backward()
    assert margin.grad[20].item() == pytest.approx(0.0, abs=1e-7)


def test_pair_accuracy_counts_wins_ties_half_and_skips_tie_pairs():
    # Brightness(+1) scores mean brightness: pairs 0, 1 right, pair 2 wrong, pair 3 an exact tie.
    pairs = PreferencePairs(["a"] * 4, constant_images([0.9, 0.6, 0.1, 0.5]), constant_images([0.2, 0.5, 0.4, 0.5]))
    assert pair_accuracy(Brightness(1.0), pairs) == pytest.approx(2.5 / 4)
    assert pair_accuracy(Brightness(-1.0), pairs) == pytest.approx(1.5 / 4)
    labelled = PreferencePairs(pairs.prompts, pairs.better, pairs.worse, torch.tensor([1.0, 1.0, 0.5, 1.0]))
    assert pair_accuracy(Brightness(1.0), labelled) == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="winner"):
        pair_accuracy(Brightness(1.0), pairs.with_preference(0.5))


def test_derive_alpha_is_the_mean_or_quantile_of_preferred_rewards():
    better = torch.tensor([0.1, 0.2, 0.3, 0.4, 1.0])
    pairs = PreferencePairs(["a"] * 5, constant_images(better), constant_images(torch.zeros(5)))
    model = Brightness(2.0)
    assert derive_alpha(model, pairs) == pytest.approx(2.0 * better.mean().item(), rel=1e-6)
    assert derive_alpha(model, pairs, quantile=0.25) == pytest.approx(2.0 * 0.2, rel=1e-6)
    assert derive_alpha(model, pairs, quantile=0.0) == pytest.approx(0.2, rel=1e-6)
    with pytest.raises(ValueError, match="quantile"):
        derive_alpha(model, pairs, quantile=1.5)


def test_training_learns_the_preference_and_centres_the_reward():
    model = Brightness(-1.0)  # starts wrong: prefers darker images
    train, held_out = brightness_pairs(256, seed=0), brightness_pairs(128, seed=1)
    assert pair_accuracy(model, held_out) == 0.0
    log = train_reward_model(model, train, steps=150, lr=0.1, batch_size=32, seed=0, progress=False)
    assert model.weight.item() > 0
    assert pair_accuracy(model, held_out) == 1.0
    assert log.recent(20)[0] < log.losses[0]
    r_w, r_l = score_pairs(model, held_out)
    midpoint = ((r_w + r_l) / 2).mean().item()
    assert abs(midpoint) < 0.25 * (r_w - r_l).mean().item()  # offset pinned near zero by centre_weight
    assert not model.training


def _shifted_pairs(n: int, channels: list[int], seed: int, preference=None) -> PreferencePairs:
    """Constant images; ``better`` is ``worse`` shifted by one random Δ ∈ (−0.3, 0.3) in ``channels``."""
    g = torch.Generator().manual_seed(seed)
    worse = (0.3 + 0.4 * torch.rand(n, 3, generator=g)).view(n, 3, 1, 1).expand(n, 3, 4, 4).clone()
    delta = (torch.rand(n, generator=g) - 0.5) * 0.6
    better = worse.clone()
    better[:, channels] += delta.view(n, 1, 1, 1)
    return PreferencePairs(["x"] * n, better, worse, None if preference is None else preference(delta))


def test_tie_pairs_teach_the_model_to_ignore_a_channel():
    """Soft preferences σ(5Δ) follow a shift of channels 0 *and* 1 together; ties shift channel 1 alone.

    Preferences alone only fix w0 + w1 = 5 (from zero, symmetry splits it 2.5/2.5); with the ties the
    one answer is w0 = 5, w1 = 0.
    """
    preferences = _shifted_pairs(256, [0, 1], seed=0, preference=lambda delta: torch.sigmoid(5 * delta))
    ties = _shifted_pairs(256, [1], seed=1).with_preference(0.5)
    settings = dict(steps=300, lr=0.1, batch_size=32, weight_decay=0.0, centre_weight=0.0, progress=False)
    confounded, decoupled = TwoChannels(), TwoChannels()
    train_reward_model(confounded, preferences, **settings)
    train_reward_model(decoupled, PreferencePairs.concat([preferences, ties]), **settings)
    assert confounded.weights.tolist() == pytest.approx([2.5, 2.5], abs=0.5)
    assert decoupled.weights.tolist() == pytest.approx([5.0, 0.0], abs=0.5)


def test_training_is_deterministic_from_the_seed():
    runs = []
    for _ in range(2):
        model = Brightness(-1.0)
        train_reward_model(model, brightness_pairs(64), steps=20, lr=0.05, batch_size=16, seed=3, progress=False)
        runs.append((model.weight.item(), model.bias.item()))
    assert runs[0] == runs[1]


def test_should_stop_ends_training_after_the_step_in_progress():
    asked = []

    def stop_before_the_fourth_step():
        asked.append(True)
        return len(asked) == 4

    model = Brightness(-1.0)
    log = train_reward_model(model, brightness_pairs(64), steps=100, lr=0.05, batch_size=16, progress=False, should_stop=stop_before_the_fourth_step)
    assert log.stopped and len(log.losses) == len(log.accuracies) == 3 and len(asked) == 4
    assert model.weight.item() != -1.0 and not model.training  # the steps taken stay in the model, left in eval mode
    finished = train_reward_model(Brightness(-1.0), brightness_pairs(64), steps=3, lr=0.05, batch_size=16, progress=False, should_stop=lambda: False)
    assert not finished.stopped and len(finished.losses) == 3


def test_streams_augmentation_and_their_errors():
    batches = [brightness_pairs(8, seed=s) for s in range(5)]
    seen = []

    def augment(batch, generator):
        seen.append(len(batch))
        return batch

    train_reward_model(Brightness(), iter(batches), steps=5, lr=0.01, augment=augment, progress=False)
    assert seen == [8] * 5
    with pytest.raises(ValueError, match="ran out after 5 of 6"):
        train_reward_model(Brightness(), iter(batches), steps=6, lr=0.01, progress=False)
    with pytest.raises(ValueError, match="cannot fill a batch"):
        train_reward_model(Brightness(), brightness_pairs(4), steps=1, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_reward_model(Brightness().requires_grad_(False), brightness_pairs(8), steps=1, batch_size=8, progress=False)

    class OneScoreForAll(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, images, prompts):
            return self.p.expand(1)

    with pytest.raises(ValueError, match=r"one score per image, \[B\]"):
        train_reward_model(OneScoreForAll(), brightness_pairs(8), steps=1, batch_size=8, progress=False)


def test_pairs_validate_their_shapes():
    with pytest.raises(ValueError, match="equal"):
        PreferencePairs(["a"], torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="one probability per pair"):
        PreferencePairs(["a"], torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(2))
    both = PreferencePairs.concat([brightness_pairs(3), brightness_pairs(2).with_preference(0.5)])
    assert both.preference.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]
    assert both.strict.tolist() == [True, True, True, False, False]


def test_save_and_load_round_trip_with_metadata(tmp_path):
    model = Brightness(0.7)
    path = save_reward_model(model, tmp_path / "sub" / "m.safetensors", kind="toy", alpha=0.125, aspect="color",
                             config={"width": 3}, metadata={"val_accuracy": 0.91, "note": "x"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]  # no temporary file left
    state, meta = load_reward_file(path)
    assert torch.equal(state["weight"], torch.tensor(0.7))
    assert float(meta["unifl.alpha"]) == 0.125
    assert meta["unifl.kind"] == "toy" and meta["unifl.aspect"] == "color"
    assert json.loads(meta["unifl.config"]) == {"width": 3}
    assert float(meta["unifl.val_accuracy"]) == 0.91 and meta["unifl.note"] == "x"


def test_file_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match="safetensors"):
        save_reward_model(Brightness(), tmp_path / "m.pt", kind="toy", alpha=0.0, aspect="a")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_reward_file(tmp_path / "missing.safetensors")
    bare = tmp_path / "bare.safetensors"
    save_file({"weight": torch.zeros(())}, str(bare))
    with pytest.raises(ValueError, match=r"bare.safetensors has no 'unifl.alpha'"):
        load_reward_file(bare)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors file"):
        load_reward_file(junk)
