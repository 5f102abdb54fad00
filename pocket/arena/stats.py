"""Differences between rows as a hierarchical paired bootstrap, and Holm's correction over one family of claims.

Every row of an arena shares its prompts and noise within a replicate (training seed ``s`` samples prompt ``p``
with the same noise seeds in every row), so rows are compared *paired*. One bootstrap draw resamples the
training seeds with replacement, then, within each drawn seed, the prompts with replacement (a prompt keeps all
its images); the draw is a weight per (seed, prompt): how often it was drawn. The same weights are used for
every row, so a difference between two rows is the difference of their statistics under one draw.

A statistic is anything that maps those weights to a number (:class:`RowStatistic`): a mean of per-image values
(prompt accuracy), or a measure of the whole weighted image set against the real images (FD, KID, a spectrum
distance), recomputed per draw. All weights one is the point estimate.

A claim tests ``A − B > 0`` for "A beats B" (oriented so that positive is better) and ``A − B > −margin·|B|``
for "A is no worse than B", with the margin declared in advance; its one-sided p-value is the normal tail of the
oriented difference over its bootstrap standard error (:func:`compare`). Holm's step-down
procedure then controls the family-wise error rate over every test in the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from scipy.stats import norm


def bootstrap_weights(seeds: int, prompts: int, draws: int, seed: int = 0) -> np.ndarray:
    """``[draws, seeds, prompts]`` counts: draw ``d`` picks ``seeds`` training seeds with replacement, then for each
    pick ``prompts`` prompts of that seed with replacement. Draw 0 is no resampling (all ones): the point estimate."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((draws, seeds, prompts))
    picked_seeds = rng.integers(0, seeds, (draws, seeds))
    picked_prompts = rng.integers(0, prompts, (draws, seeds, prompts))
    draw = np.broadcast_to(np.arange(draws)[:, None, None], picked_prompts.shape)
    np.add.at(weights, (draw, np.broadcast_to(picked_seeds[:, :, None], picked_prompts.shape), picked_prompts), 1.0)
    weights[0] = 1.0
    return weights


class RowStatistic(Protocol):
    """A row's number under each draw's prompt weights ``[draws, seeds, prompts]`` → ``[draws]``."""

    def __call__(self, weights: np.ndarray) -> np.ndarray: ...


def _groups(values: np.ndarray, images_per_prompt: int) -> np.ndarray:
    """``[seeds, prompts·k, ...]`` per image → ``[seeds·prompts, k, ...]`` per prompt (images are stored prompt by prompt)."""
    seeds, images = values.shape[:2]
    return values.reshape(seeds * (images // images_per_prompt), images_per_prompt, *values.shape[2:])


@dataclass
class ImageMean:
    """The weighted mean of a per-image value, ``values`` ``[seeds, prompts·k]`` (prompt accuracy, all checks)."""

    values: np.ndarray
    images_per_prompt: int

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = weights.reshape(len(weights), -1)
        sums = _groups(np.asarray(self.values, dtype=np.float64), self.images_per_prompt).sum(1)
        return w @ sums / (w.sum(1) * self.images_per_prompt)


@dataclass
class FrechetToReal:
    """FD of the weighted image set's features ``[seeds, prompts·k, D]`` against a fixed real set ``[N, D]``.

    Each draw's mean and covariance come from per-prompt sums (one matrix product for all draws), and
    ``tr((Σa Σr)^½) = tr((Σr^½ Σa Σr^½)^½)`` with ``Σr^½`` computed once: a symmetric eigendecomposition per
    draw instead of a general matrix square root."""

    features: np.ndarray
    real: np.ndarray
    images_per_prompt: int

    def __post_init__(self):
        from scipy.linalg import sqrtm

        groups = _groups(np.asarray(self.features, dtype=np.float64), self.images_per_prompt)
        self._sum = groups.sum(1)  # [G, D]
        self._outer = np.einsum("gki,gkj->gij", groups, groups).reshape(len(groups), -1)  # [G, D·D]
        real = np.asarray(self.real, dtype=np.float64)
        self._mu_real = real.mean(0)
        sigma_real = np.cov(real, rowvar=False)
        self._trace_real = float(np.trace(sigma_real))
        root = np.real(sqrtm(sigma_real))
        self._root_real = (root + root.T) / 2

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = weights.reshape(len(weights), -1)
        d = self._sum.shape[1]
        total = w.sum(1) * self.images_per_prompt
        mu = w @ self._sum / total[:, None]
        sigma = ((w @ self._outer).reshape(-1, d, d) - total[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (total - 1)[:, None, None]
        inner = np.linalg.eigvalsh(self._root_real @ sigma @ self._root_real)
        trace = np.trace(sigma, axis1=1, axis2=2)
        return ((mu - self._mu_real) ** 2).sum(1) + trace + self._trace_real - 2 * np.sqrt(np.clip(inner, 0, None)).sum(1)


@dataclass
class KernelDistanceToReal:
    """KID (unbiased MMD², cubic kernel ``(x·y/d + 1)³``, as :func:`unifl.pocket.judges.judges.kernel_inception_distance`)
    of the weighted image set against a fixed real set: a drawn image pairs with every other drawn copy, never
    with the same copy (the multiset's own unbiased estimate). Kernel sums are kept per pair of prompts."""

    features: np.ndarray
    real: np.ndarray
    images_per_prompt: int

    def __post_init__(self):
        groups = _groups(np.asarray(self.features, dtype=np.float64), self.images_per_prompt)
        x = groups.reshape(-1, groups.shape[-1])
        real = np.asarray(self.real, dtype=np.float64)
        d, n, g, k = x.shape[1], len(real), len(groups), self.images_per_prompt
        k_xx = (x @ x.T / d + 1) ** 3
        self._pairs = k_xx.reshape(g, k, g, k).sum((1, 3))  # [G, G]
        self._self = np.diag(k_xx).reshape(g, k).sum(1)
        self._cross = ((x @ real.T / d + 1) ** 3).mean(1).reshape(g, k).sum(1)
        k_rr = (real @ real.T / d + 1) ** 3
        self._within_real = float((k_rr.sum() - np.trace(k_rr)) / (n * (n - 1)))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = weights.reshape(len(weights), -1)
        total = w.sum(1) * self.images_per_prompt
        within = (np.einsum("bg,gh,bh->b", w, self._pairs, w) - w @ self._self) / (total * (total - 1))
        return within + self._within_real - 2 * w @ self._cross / total


@dataclass
class MeanAbsoluteGap:
    """``mean |weighted mean of per-image vectors − real mean|`` over the vectors' entries: the spectrum distance
    (:func:`unifl.pocket.judges.spectrum.spectrum_distance`, each image's log band shares ``[C, K]`` averaged over a set)
    in closed form per draw. ``values`` ``[seeds, prompts·k, ...]``, ``real`` ``[N, ...]``."""

    values: np.ndarray
    real: np.ndarray
    images_per_prompt: int

    def __post_init__(self):
        groups = _groups(np.asarray(self.values, dtype=np.float64), self.images_per_prompt)
        self._sum = groups.sum(1).reshape(len(groups), -1)
        self._real = np.asarray(self.real, dtype=np.float64).reshape(len(self.real), -1).mean(0)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = weights.reshape(len(weights), -1)
        mean = w @ self._sum / (w.sum(1) * self.images_per_prompt)[:, None]
        return np.abs(mean - self._real).mean(1)


@dataclass
class WeightedSet:
    """Any measure of a whole image set, ``measure(items)`` on the items repeated as drawn (a spectrum distance
    on images, say): the general fallback, one call per draw."""

    items: np.ndarray
    """``[seeds, prompts·k, ...]``"""
    measure: Callable[[np.ndarray], float]
    images_per_prompt: int

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        flat = self.items.reshape(-1, *self.items.shape[2:])
        counts = np.repeat(weights.reshape(len(weights), -1), self.images_per_prompt, axis=1).astype(int)
        return np.array([float(self.measure(np.repeat(flat, c, axis=0))) for c in counts])


def bootstrap(statistic: RowStatistic, weights: np.ndarray) -> np.ndarray:
    """The statistic under every draw (``[draws]``; entry 0 is the point estimate)."""
    return np.asarray(statistic(weights), dtype=np.float64)


@dataclass(frozen=True)
class Comparison:
    """One comparison of a family: "A beats B" or "A is no worse than B" on one metric."""

    kind: str  # "beats" | "no_worse"
    higher_is_better: bool
    margin: float = 0.0
    """"no_worse" only: how far below B (a fraction of ``|B|``) still counts as no worse; declared in advance."""


def centred_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The draws' spread about their median, placed about the point estimate (entry 0 of ``draws``):
    ``[θ̂ − (m − q_low), θ̂ + (q_high − m)]``.

    Not the plain percentile interval: the draws of a set statistic sit above its point (a draw repeats some
    images and drops others, and fewer distinct images make FD and KID larger), far enough that percentiles of
    the draws can leave the point out (an FD of 285 with percentiles [281, 454] was seen in a smoke run). That
    shift is the resampling's, not the rows': every row has as many images, and a difference of two rows under
    the same draws cancels most of it. So the interval says how far the number moves from sample to sample,
    around the number reported, as the p-value (point over the draws' standard error) does."""
    tail = (1 - confidence) / 2
    low, middle, high = np.quantile(draws[1:], [tail, 0.5, 1 - tail])
    return float(draws[0] - (middle - low)), float(draws[0] + (high - middle))


def compare(comparison: Comparison, a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict:
    """Point difference ``A − B``, its bootstrap interval (:func:`centred_interval`), and the one-sided p-value
    of ``comparison``.

    The p-value is the normal tail of the oriented point difference over its bootstrap standard error: Holm's
    smallest threshold over a family of ~100 tests is ~5·10⁻⁴, below what the share of a thousand draws can
    resolve, while the standard error is steady at a thousand."""
    sign = 1.0 if comparison.higher_is_better else -1.0
    oriented = sign * (a - b)
    if comparison.kind == "no_worse":
        oriented = oriented + comparison.margin * np.abs(b)
    elif comparison.kind != "beats":
        raise ValueError(f"unknown comparison kind {comparison.kind!r}: 'beats' or 'no_worse'")
    low, high = centred_interval(a - b, confidence)
    spread = float(np.std(oriented[1:], ddof=1))
    if spread > 0:
        p = float(norm.sf(oriented[0] / spread))
    else:
        p = 0.0 if oriented[0] > 0 else 1.0
    return {"difference": float(a[0] - b[0]), "interval": [float(low), float(high)], "confidence": confidence, "p": p}


def holm(p_values: list[float], alpha: float = 0.05) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level ``alpha``, and the adjusted
    p-values (``max over j ≤ i of min(1, (m − j + 1)·p_(j))`` in ascending order)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return [a <= alpha for a in adjusted], adjusted
