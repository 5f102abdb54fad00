"""The arena's statistics: the hierarchical paired bootstrap covers a known difference and claims no zero one,
its closed-form FD and KID agree with the judges' own functions, and Holm's correction matches a hand count."""

import numpy as np
import pytest
import torch
from unifl.pocket.arena.stats import (
    FrechetToReal,
    ImageMean,
    KernelDistanceToReal,
    MeanAbsoluteGap,
    Comparison,
    WeightedSet,
    centred_interval,
    bootstrap,
    bootstrap_weights,
    holm,
    compare,
)

SEEDS, PROMPTS, PER_PROMPT = 5, 40, 2


def _rows(rng, difference: float, seed_sd: float = 0.02, prompt_sd: float = 0.15, noise_sd: float = 0.1):
    """Two rows' per-image values: a prompt effect both rows share (the same prompts and noise), a training-seed
    effect of each row's own, per-image noise; A's mean is B's plus ``difference``."""
    shared = rng.normal(0, prompt_sd, (SEEDS, PROMPTS, 1))
    rows = []
    for mean in (0.5 + difference, 0.5):
        seed_effect = rng.normal(0, seed_sd, (SEEDS, 1, 1))
        rows.append((mean + seed_effect + shared + rng.normal(0, noise_sd, (SEEDS, PROMPTS, PER_PROMPT))).reshape(SEEDS, -1))
    return rows


def test_the_weights_resample_seeds_then_prompts_and_draw_zero_is_the_point_estimate():
    weights = bootstrap_weights(SEEDS, PROMPTS, 200, seed=1)
    assert weights.shape == (200, SEEDS, PROMPTS) and (weights[0] == 1).all()
    assert (weights.sum((1, 2)) == SEEDS * PROMPTS).all()  # as many prompts drawn as there are
    per_seed = weights[1:].sum(2)
    assert set(np.unique(per_seed)) <= {PROMPTS * k for k in range(SEEDS + 1)}  # a seed is drawn whole, 0..5 times
    assert (per_seed == 0).any()  # some seeds left out of some draws


def test_a_known_difference_is_covered_and_claimed_and_a_zero_difference_is_not_claimed():
    rng = np.random.default_rng(0)
    weights = bootstrap_weights(SEEDS, PROMPTS, 1000, seed=2)
    covered, claimed_zero, claimed_true = 0, 0, 0
    trials = 40
    for _ in range(trials):
        a, b = _rows(rng, 0.05)
        result = compare(Comparison("beats", True), bootstrap(ImageMean(a, PER_PROMPT), weights), bootstrap(ImageMean(b, PER_PROMPT), weights))
        covered += result["interval"][0] <= 0.05 <= result["interval"][1]
        claimed_true += result["p"] <= 0.05
        a, b = _rows(rng, 0.0)
        zero = compare(Comparison("beats", True), bootstrap(ImageMean(a, PER_PROMPT), weights), bootstrap(ImageMean(b, PER_PROMPT), weights))
        claimed_zero += zero["p"] <= 0.05
    assert covered >= 0.8 * trials  # a 95 % interval from five seeds: somewhat narrow, never badly so
    assert claimed_true >= 0.9 * trials
    assert claimed_zero <= 0.15 * trials


def test_pairing_is_what_resolves_a_small_difference_under_a_large_shared_prompt_effect():
    rng = np.random.default_rng(3)
    a, b = _rows(rng, 0.03, prompt_sd=0.5, noise_sd=0.02, seed_sd=0.005)
    weights = bootstrap_weights(SEEDS, PROMPTS, 1000, seed=4)
    paired = compare(Comparison("beats", True), bootstrap(ImageMean(a, PER_PROMPT), weights), bootstrap(ImageMean(b, PER_PROMPT), weights))
    unpaired = compare(Comparison("beats", True), bootstrap(ImageMean(a, PER_PROMPT), weights),
                               bootstrap(ImageMean(b, PER_PROMPT), bootstrap_weights(SEEDS, PROMPTS, 1000, seed=5)))
    assert paired["p"] <= 0.01 < unpaired["p"]


def test_no_worse_uses_its_declared_margin_and_lower_is_better_is_oriented():
    weights = bootstrap_weights(SEEDS, PROMPTS, 500, seed=6)
    rng = np.random.default_rng(7)
    a, b = _rows(rng, 0.02)  # A is 0.02 *higher*: worse when lower is better
    boot_a, boot_b = bootstrap(ImageMean(a, PER_PROMPT), weights), bootstrap(ImageMean(b, PER_PROMPT), weights)
    assert compare(Comparison("beats", False), boot_a, boot_b)["p"] > 0.5
    assert compare(Comparison("no_worse", False, margin=0.0), boot_a, boot_b)["p"] > 0.5  # no margin: 0.02 worse is worse
    assert compare(Comparison("no_worse", False, margin=0.2), boot_a, boot_b)["p"] <= 0.05  # within 20 % of B's 0.5


def test_the_closed_forms_equal_the_judges_fd_and_kid_on_the_unweighted_set_and_on_a_repeated_one():
    from unifl.pocket.models.evaluators import frechet_distance
    from unifl.pocket.judges.judges import kernel_inception_distance

    rng = np.random.default_rng(8)
    features = rng.normal(0, 1, (2, 6 * 2, 8))  # 2 seeds, 6 prompts, 2 images each
    real = rng.normal(0.3, 1.2, (50, 8))
    fd, kid = FrechetToReal(features, real, 2), KernelDistanceToReal(features, real, 2)
    weights = np.zeros((2, 2, 6))  # draw 0: every prompt once; draw 1: prompt 1 of seed 0 thrice, prompt 4 of seed 1 twice
    weights[0] = 1
    weights[1, 0, 1], weights[1, 1, 4] = 3, 2
    flat = features.reshape(-1, 8)
    repeated = np.concatenate([np.repeat(features[0, 2:4], 3, 0), np.repeat(features[1, 8:10], 2, 0)])
    assert fd(weights) == pytest.approx([frechet_distance(flat, real), frechet_distance(repeated, real)], rel=1e-6)
    own_kid = [kernel_inception_distance(torch.tensor(flat), torch.tensor(real))]
    assert kid(weights)[0] == pytest.approx(own_kid[0], rel=1e-6)
    # with copies, the multiset's estimate: pairs of distinct copies (a copy of the same image pairs with itself)
    d = 8
    k = (repeated @ repeated.T / d + 1) ** 3
    within = (k.sum() - np.trace(k)) / (len(repeated) * (len(repeated) - 1))
    k_rr = (real @ real.T / d + 1) ** 3
    expected = within + (k_rr.sum() - np.trace(k_rr)) / (50 * 49) - 2 * ((repeated @ real.T / d + 1) ** 3).mean()
    assert kid(weights)[1] == pytest.approx(expected, rel=1e-6)
    general = WeightedSet(features, lambda items: frechet_distance(items, real), 2)
    assert general(weights) == pytest.approx(fd(weights), rel=1e-6)


def test_holm_matches_a_hand_computed_example():
    # m = 4, alpha 0.05. Ascending: 0.005·4 = 0.02 ≤ 0.05 reject; 0.01·3 = 0.03 reject; 0.03·2 = 0.06 > 0.05 stop.
    rejected, adjusted = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert rejected == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])  # 0.04·1 = 0.04, raised to the running 0.06
    assert holm([0.04, 0.04], 0.05)[0] == [False, False]  # each alone would pass; corrected, neither
    assert holm([0.5], 0.05) == ([False], [0.5])


def test_the_spectrum_gap_in_closed_form_is_the_mean_absolute_gap_of_weighted_means():
    rng = np.random.default_rng(9)
    values, real = rng.normal(0, 1, (2, 6 * 2, 3, 4)), rng.normal(0.2, 1, (20, 3, 4))
    weights = np.zeros((2, 2, 6))
    weights[0] = 1
    weights[1, 0, 1], weights[1, 1, 4] = 3, 2
    repeated = np.concatenate([np.repeat(values[0, 2:4], 3, 0), np.repeat(values[1, 8:10], 2, 0)])
    expected = [np.abs(values.reshape(-1, 3, 4).mean(0) - real.mean(0)).mean(), np.abs(repeated.mean(0) - real.mean(0)).mean()]
    assert MeanAbsoluteGap(values, real, 2)(weights) == pytest.approx(expected)


def test_the_spectrum_gap_equals_the_judges_spectrum_distance_where_the_judges_have_it():
    spectrum = pytest.importorskip("unifl.pocket.judges.spectrum", reason="the judges' spectrum measure is not in this checkout")
    generator = torch.Generator().manual_seed(0)
    images, real = torch.rand(2 * 4, 3, 16, 16, generator=generator), torch.rand(10, 3, 16, 16, generator=generator)
    shares = spectrum.log_band_shares(images).double().numpy().reshape(2, 4, 3, -1)
    gap = MeanAbsoluteGap(shares, spectrum.log_band_shares(real).double().numpy(), 1)(np.ones((1, 2, 4)))
    assert gap[0] == pytest.approx(spectrum.spectrum_distance(images, real), rel=1e-5)


def test_the_interval_of_a_set_statistic_holds_its_point():
    """A draw repeats some images and drops others, which makes FD larger: percentiles of the draws can leave out the
    point estimate itself; the interval is their spread placed about it."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 32))
    images = rng.normal(0.3, 1.0, size=(1, 24, 32))  # one seed, 24 prompts of one image each, 32-d features
    draws = bootstrap(FrechetToReal(images, real, 1), bootstrap_weights(1, 24, 400, seed=0))
    low, high = np.quantile(draws[1:], [0.025, 0.975])
    assert low > draws[0]  # the percentile interval misses the point here
    interval = centred_interval(draws, 0.95)
    assert interval[0] <= draws[0] <= interval[1]
    assert interval[1] - interval[0] == pytest.approx(high - low)  # as wide as the draws' spread
