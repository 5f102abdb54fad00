"""Training reward models from preference pairs, and deriving their hinge thresholds (UniFL §4.2).

UniFL trains one reward model per aesthetic aspect with the Bradley–Terry objective
``L = −log σ(r(c, x_w) − r(c, x_l))`` on pairs where ``x_w`` is preferred to ``x_l``, then uses each in
the hinge ``ReLU(α_d − r_d(x0, c))`` with ``α_d`` the mean reward of the *preferred* images of held-out
pairs (a lower quantile is an option: it asks less of the generator). Nothing here knows about a host,
an aspect or an architecture: any ``nn.Module`` called as ``model(images, prompts) -> scores [B]`` and
any source of :class:`PreferencePairs` will do, so ``unifl train-reward`` and the pocket world's build
share this code.

Files are safetensors with string metadata: ``unifl.alpha`` (what the trainer reads as α_d),
``unifl.aspect``, ``unifl.kind`` (the registry kind that loads the file), ``unifl.config`` (JSON
constructor arguments, so a loader can rebuild the module) and any validation statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar


@dataclass(frozen=True)
class PreferencePairs:
    """``len(prompts)`` pairs: ``better[i]`` is preferred to ``worse[i]`` for ``prompts[i]``.

    Images are ``[N, 3, H, W]`` in ``[0, 1]``; any float dtype (float16 halves the memory of a cached
    training set, batches are cast to float32 before scoring). ``preference[i]`` is the probability
    that ``better[i]`` wins: 1 (the default, ``None``) is a strict preference, 0.5 a tie — a pair the
    model should score equally, e.g. two images that differ only in an aspect it must ignore.
    """

    prompts: Sequence[str]
    better: torch.Tensor
    worse: torch.Tensor
    preference: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.better.shape != self.worse.shape or self.better.ndim != 4 or len(self.prompts) != len(self.better):
            raise ValueError(
                f"preference pairs need {len(self.prompts)} prompts and equal [N, 3, H, W] better/worse images, "
                f"got better {tuple(self.better.shape)} and worse {tuple(self.worse.shape)}"
            )
        if self.preference is not None and self.preference.shape != (len(self.prompts),):
            raise ValueError(f"preference must hold one probability per pair, [{len(self.prompts)}], got {tuple(self.preference.shape)}")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def strict(self) -> torch.Tensor:
        """Mask of the pairs with a winner (preference above one half): the ones accuracy is about."""
        return torch.ones(len(self), dtype=torch.bool) if self.preference is None else self.preference > 0.5

    def select(self, indices: torch.Tensor | Sequence[int]) -> PreferencePairs:
        indices = torch.as_tensor(indices, dtype=torch.long)
        preference = None if self.preference is None else self.preference[indices]
        return PreferencePairs([self.prompts[i] for i in indices.tolist()], self.better[indices], self.worse[indices], preference)

    def batches(self, batch_size: int) -> Iterator[PreferencePairs]:
        """Consecutive batches in order (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.select(range(start, min(start + batch_size, len(self))))

    def with_preference(self, probability: float) -> PreferencePairs:
        """The same pairs, every one with preference ``probability`` (0.5 turns them into ties)."""
        return PreferencePairs(self.prompts, self.better, self.worse, torch.full((len(self),), float(probability)))

    @staticmethod
    def concat(parts: Sequence[PreferencePairs]) -> PreferencePairs:
        labelled = any(part.preference is not None for part in parts)
        return PreferencePairs(
            [p for part in parts for p in part.prompts],
            torch.cat([part.better for part in parts]),
            torch.cat([part.worse for part in parts]),
            torch.cat([part.strict.float() if part.preference is None else part.preference for part in parts]) if labelled else None,
        )


Augment = Callable[[PreferencePairs, torch.Generator], PreferencePairs]


def bradley_terry_loss(r_w: torch.Tensor, r_l: torch.Tensor, preference: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(−log σ(r_w − r_l))``; with ``preference`` p, the cross-entropy ``−p log σ(d) − (1 − p) log σ(−d)``.

    Computed with ``softplus`` (no ``log(0)`` for large margins). For a tie (p = ½) the minimum is at
    ``r_w = r_l``, so tie pairs teach a model what to ignore.
    """
    margin = r_w.float() - r_l.float()
    if preference is None:
        return F.softplus(-margin).mean()
    p = preference.to(margin)
    return (p * F.softplus(-margin) + (1 - p) * F.softplus(margin)).mean()


def score_pairs(model: nn.Module, pairs: PreferencePairs, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards ``(r_w, r_l)`` of every pair, float32 on the CPU, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    r_w, r_l = [], []
    try:
        with torch.no_grad():
            for batch in pairs.batches(batch_size):
                w, l = _score_batch(model, batch, device)
                r_w.append(w.float().cpu())
                r_l.append(l.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(r_w), torch.cat(r_l)


def pair_accuracy(model: nn.Module, pairs: PreferencePairs, batch_size: int = 256) -> float:
    """Share of strict pairs whose preferred image scores higher; equal scores count as half right (chance).

    Tie pairs (preference ½) have no right answer and are left out.
    """
    r_w, r_l = score_pairs(model, pairs, batch_size)
    strict = pairs.strict
    if not strict.any():
        raise ValueError("pair_accuracy needs at least one pair with a winner (preference above 0.5)")
    return float(((r_w > r_l).float() + 0.5 * (r_w == r_l).float())[strict].mean())


def derive_alpha(model: nn.Module, held_out: PreferencePairs, quantile: float | None = None, batch_size: int = 256) -> float:
    """α_d for the hinge: the mean reward of the preferred images, or their ``quantile`` (e.g. 0.25).

    The preferred half of held-out pairs is what "good enough" looks like to this model; a lower
    quantile sets a gentler bar (useful for an aspect whose reward keeps rising on over-sharpened images).
    Only strict pairs count (a tie has no preferred image).
    """
    if quantile is not None and not 0.0 <= quantile <= 1.0:
        raise ValueError(f"alpha quantile must be in [0, 1] or None (mean), got {quantile}")
    r_w, _ = score_pairs(model, held_out, batch_size)
    r_w = r_w[held_out.strict]
    if not len(r_w):
        raise ValueError("derive_alpha needs held-out pairs with a winner (preference above 0.5)")
    return float(r_w.mean() if quantile is None else torch.quantile(r_w, quantile))


@dataclass
class TrainingLog:
    """Per-step Bradley–Terry loss and batch accuracy, for build reports and tests."""

    losses: list[float]
    accuracies: list[float]
    #: True when ``should_stop`` ended the run before its last step (``len(losses)`` steps were taken).
    stopped: bool = False

    def recent(self, steps: int = 50) -> tuple[float, float]:
        """Mean loss and accuracy over the last ``steps`` steps."""
        tail = slice(-steps, None)
        return sum(self.losses[tail]) / len(self.losses[tail]), sum(self.accuracies[tail]) / len(self.accuracies[tail])


def train_reward_model(
    model: nn.Module,
    pairs: PreferencePairs | Iterable[PreferencePairs],
    steps: int,
    lr: float = 2e-3,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    centre_weight: float = 1e-2,
    warmup_steps: int | None = None,
    max_grad_norm: float = 1.0,
    augment: Augment | None = None,
    seed: int = 0,
    progress: bool | str = True,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingLog:
    """Fit ``model`` with the Bradley–Terry loss for ``steps`` AdamW steps; returns the per-step log.

    Args:
        pairs: a cached :class:`PreferencePairs` set (shuffled minibatches of ``batch_size``, reshuffled
            each epoch from ``seed``) or any iterable of :class:`PreferencePairs` batches (a stream).
        centre_weight: weight of ``mean(((r_w + r_l) / 2)²)``. Bradley–Terry fixes only differences, so
            the offset of a reward drifts freely; pinning the midpoint of pairs at zero keeps α_d and the
            scores on one scale across aspects, and makes a reward that initialises a logistic
            discriminator start at its decision boundary (real above zero, worse below).
        warmup_steps: linear warm-up, then cosine decay to zero (default: 5 % of ``steps``).
        augment: ``augment(batch, generator) -> batch``, applied to every training batch.
        progress: a tqdm bar (its description when a string).
        should_stop: asked before every step (a host's cancel button); when it answers True the run ends
            there, the model keeps the steps taken and the log says ``stopped``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = _device_of(model)
    generator = torch.Generator().manual_seed(seed)
    source = _shuffled_batches(pairs, batch_size, generator) if isinstance(pairs, PreferencePairs) else iter(pairs)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{type(model).__name__} has no trainable parameters; unfreeze it (model.requires_grad_(True)) before training")
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    warmup = max(1, round(0.05 * steps)) if warmup_steps is None else max(1, warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    log = TrainingLog([], [])
    model.train()
    bar = progress_bar(range(steps), desc=progress if isinstance(progress, str) else "reward", disable=progress is False, dynamic_ncols=True)
    for step in bar:
        if should_stop is not None and should_stop():
            log.stopped = True
            break
        try:
            batch = next(source)
        except StopIteration:
            raise ValueError(f"the pair source ran out after {step} of {steps} steps; pass a longer stream or fewer steps") from None
        if augment is not None:
            batch = augment(batch, generator)
        r_w, r_l = _score_batch(model, batch, device)
        loss = bradley_terry_loss(r_w, r_l, batch.preference)
        objective = loss + centre_weight * ((r_w.float() + r_l.float()) / 2).pow(2).mean()
        if not torch.isfinite(objective):
            raise FloatingPointError(f"reward training loss is {objective.item()} at step {step}; lower lr (now {lr})")
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        schedule.step()
        log.losses.append(loss.item())
        strict = batch.strict.to(r_w.device)
        log.accuracies.append(float((r_w > r_l)[strict].float().mean()) if strict.any() else 0.5)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{log.recent(25)[0]:.3f}", acc=f"{log.recent(25)[1]:.2f}")
    bar.close()
    model.eval()
    return log


def _shuffled_batches(pairs: PreferencePairs, batch_size: int, generator: torch.Generator) -> Iterator[PreferencePairs]:
    if len(pairs) < batch_size:
        raise ValueError(f"{len(pairs)} pairs cannot fill a batch of {batch_size}; generate more pairs or lower batch_size")
    while True:
        order = torch.randperm(len(pairs), generator=generator)
        for start in range(0, len(pairs) - batch_size + 1, batch_size):
            yield pairs.select(order[start : start + batch_size])


def _score_batch(model: nn.Module, batch: PreferencePairs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over better and worse images together (normalisation layers see both halves)."""
    images = torch.cat([batch.better, batch.worse]).to(device, torch.float32)
    scores = model(images, list(batch.prompts) * 2)
    if scores.shape != (len(images),):
        raise ValueError(f"{type(model).__name__} returned scores of shape {tuple(scores.shape)}; a reward model returns one score per image, [B]")
    return scores[: len(batch)], scores[len(batch) :]


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
