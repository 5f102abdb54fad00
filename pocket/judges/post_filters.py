"""Post-filters: cheap image edits a user could apply to any model's samples without training.

A realism gain that a sharpen node gives as well is not a gain of the training method. The arena therefore
measures, beside a row, the row with the best of these filters, its strength chosen on the validation split
(:func:`choose_post_filter`); a realism claim must beat both. The filters, each ``filter(images, strength)``
on ``[B, C, H, W]`` floats in [0, 1], returning the same shape clamped to [0, 1], strength 0 the identity:

* ``unsharp_mask``: ``x + s · (x − G_σ x)``, Gaussian σ = 1 px at 64 px (scaled with the side): the
  classic sharpen, which brings back the edge contrast a blur took.
* ``laplacian_sharpen``: ``x + s · (4x − the four neighbours)``: a finer sharpen acting on single pixels,
  the scale of the world's 1–3 px textures.
* ``high_frequency_noise``: ``x + s · (n − G_σ n)``, ``n`` white Gaussian noise, σ = 1 px at 64 px: adds
  power at the finest scales without moving colours (a review measured it lowering the base's judge FD).
  The noise is seeded (``seed``, default 0): image ``i`` of a batch always gets the same noise.

Grids (:data:`POST_FILTERS`' ``strengths``) run from barely visible to clearly over-done on real renders;
the choice widens a grid whose strongest strength wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from .judges import realism
from .spectrum import spectrum_distance


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-image, per-channel Gaussian blur (scipy, reflecting borders: faster than a torch conv on a CPU)."""
    blurred = gaussian_filter(images.detach().cpu().double().numpy(), sigma=(0.0, 0.0, sigma, sigma), mode="reflect", truncate=3.0)
    return torch.from_numpy(blurred).to(images.dtype)


def _sigma(images: torch.Tensor) -> float:
    return images.shape[-1] / 64


def unsharp_mask(images: torch.Tensor, strength: float) -> torch.Tensor:
    x = images.float()
    return (x + strength * (x - _gaussian_blur(x, _sigma(x)))).clamp(0.0, 1.0)


_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])


def laplacian_sharpen(images: torch.Tensor, strength: float) -> torch.Tensor:
    x = images.float()
    kernel = _LAPLACIAN.to(x.dtype).expand(x.shape[1], 1, 3, 3)
    detail = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return (x + strength * detail).clamp(0.0, 1.0)


def high_frequency_noise(images: torch.Tensor, strength: float, seed: int = 0) -> torch.Tensor:
    x = images.float()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + strength * (noise - _gaussian_blur(noise, _sigma(x)))).clamp(0.0, 1.0)


@dataclass(frozen=True)
class PostFilter:
    """A named post-filter and the strengths :func:`choose_post_filter` starts from."""

    apply: Callable[[torch.Tensor, float], torch.Tensor]
    """``apply(images [B, C, H, W] in [0, 1], strength) -> images``; strength 0 returns the images."""
    strengths: tuple[float, ...]
    """The validation grid, weakest first (widened upwards while its strongest is the best)."""


POST_FILTERS: dict[str, PostFilter] = {
    "unsharp_mask": PostFilter(unsharp_mask, (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)),
    "laplacian_sharpen": PostFilter(laplacian_sharpen, (0.1, 0.25, 0.5, 0.75, 1.0)),
    "high_frequency_noise": PostFilter(high_frequency_noise, (0.02, 0.04, 0.08)),
}
"""The registry the arena's controls choose from (name → filter)."""

NO_FILTER = "none"
"""The candidate that leaves the images as they are: a control is never worse than its row on validation."""
WIDEN_FACTOR, MAX_WIDENINGS = 1.5, 4
"""While a filter's strongest strength ranks best of its own, :func:`choose_post_filter` tries it ×1.5, up to 4 times."""


def apply_post_filter(name: str, images: torch.Tensor, strength: float) -> torch.Tensor:
    """``images`` through post-filter ``name`` at ``strength`` (:data:`NO_FILTER`: the images, as floats)."""
    if name == NO_FILTER:
        return images.float()
    if name not in POST_FILTERS:
        raise ValueError(f"unknown post-filter {name!r}; choose one of {[NO_FILTER, *POST_FILTERS]}")
    return POST_FILTERS[name].apply(images, strength)


def _rank_sums(table: Sequence[dict], metrics: Sequence[str]) -> np.ndarray:
    """Per row, the sum over ``metrics`` of its rank (0 = lowest value; equal values in table order)."""
    ranks = np.zeros(len(table), dtype=int)
    for metric in metrics:
        ranks += np.argsort(np.argsort([row[metric] for row in table], kind="stable"), kind="stable")
    return ranks


def _best(table: Sequence[dict], metrics: Sequence[str]) -> int:
    """The row with the lowest rank sum; ties to the lower first metric, then the earlier row."""
    ranks = _rank_sums(table, metrics)
    return min(range(len(table)), key=lambda i: (ranks[i], table[i][metrics[0]], i))


def choose_post_filter(
    images: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
    real_features: torch.Tensor,
    grid: Mapping[str, Sequence[float]] | None = None,
    metrics: Sequence[str] = ("fd", "kid"),
    real_images: torch.Tensor | None = None,
) -> tuple[str, float, list[dict]]:
    """The post-filter and strength under which one row's *validation* images are most realistic.

    ``embed`` maps images to the judge's features (``lambda x: judges.embed(x, judge)``), ``real_features``
    are the validation split's real renders in that space. The candidates: no filter, and every strength of
    ``grid`` (filter name → strengths; default each registered filter's own), a filter's grid widened by
    ×:data:`WIDEN_FACTOR` while its strongest strength ranks best among its own. Each is measured: ``fd``
    and ``kid``, and ``spectrum`` (:func:`~.spectrum.spectrum_distance`) when ``real_images`` are given. The
    choice minimises the sum of a candidate's ranks on ``metrics`` (scale-free: FD and KID weigh alike),
    ties to the lower first metric, then to the earlier candidate (no filter first).

    Returns ``(name, strength, table)``; ``table`` has one dict per candidate measured:
    ``{"filter", "strength", "fd", "kid"[, "spectrum"], "rank_sum"}`` (``rank_sum`` over all candidates).
    """
    grid = {name: f.strengths for name, f in POST_FILTERS.items()} if grid is None else grid

    def measure(name: str, strength: float) -> dict:
        filtered = apply_post_filter(name, images, strength)
        row = {"filter": name, "strength": float(strength), **realism(embed(filtered), real_features)}
        if real_images is not None:
            row["spectrum"] = spectrum_distance(filtered, real_images)
        return row

    table = [measure(NO_FILTER, 0.0)]
    unknown = [m for m in metrics if m not in table[0]]
    if unknown:
        raise ValueError(f"choose_post_filter cannot rank on {unknown}; it measures {list(table[0])[2:]} (spectrum needs real_images)")
    for name, strengths in grid.items():
        if name not in POST_FILTERS:
            raise ValueError(f"unknown post-filter {name!r} in the grid; choose from {list(POST_FILTERS)}")
        own = [measure(name, s) for s in sorted(strengths)]
        for _ in range(MAX_WIDENINGS):
            if _best(own, metrics) != len(own) - 1:
                break
            own.append(measure(name, own[-1]["strength"] * WIDEN_FACTOR))
        table += own
    for row, rank in zip(table, _rank_sums(table, metrics)):
        row["rank_sum"] = int(rank)
    return (*pick_post_filter(table, metrics), table)


def pick_post_filter(table: Sequence[dict], metrics: Sequence[str]) -> tuple[str, float]:
    """``(filter, strength)`` of the row of a :func:`choose_post_filter` table with the lowest rank sum on
    ``metrics`` (e.g. ``("spectrum",)`` for the spectrum's own control from the same measurements)."""
    best = table[_best(table, metrics)]
    return best["filter"], best["strength"]


def main(argv: list[str] | None = None) -> None:
    """Print what every filter strength, and the world's blur, does to held-out real renders on the three
    realism measures, and the control chosen for a blurred set (the table docs/pocket-world.md keeps)."""
    import argparse
    import platform

    from ..world.degrade import degradation
    from .judges import JUDGE_SEEDS, embed, load_prompt_judge
    from ..world.world import PocketDataset

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    parser.add_argument("--reference", type=int, default=1024, help="real renders the sets are measured against")
    parser.add_argument("--held-out", type=int, default=256, help="other real renders, filtered")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world = PocketDataset(args.reference + args.held_out, JUDGE_SEEDS[1])
    samples = [world[i] for i in range(args.reference + args.held_out)]
    reference = torch.stack([s.image for s in samples[: args.reference]])
    held_out = torch.stack([s.image for s in samples[args.reference :]])
    judge = load_prompt_judge()
    features = lambda images: embed(images, judge)
    reference_features = features(reference)
    rng = np.random.default_rng(0)
    blurred = {s: torch.stack([degradation(x, "detail", rng, strength=s, variant="blur").image for x in samples[args.reference :]]) for s in (0.1, 0.3, 0.7)}
    sets = {"real renders": held_out} | {f"blur, strength {s} (σ {0.4 + 1.4 * s:.2f} px)": x for s, x in blurred.items()}
    sets |= {f"{name} {s}": apply_post_filter(name, held_out, s) for name, f in POST_FILTERS.items() for s in f.strengths}
    print(f"{args.held_out} real renders of stream {JUDGE_SEEDS[1]} against {args.reference} others; torch {torch.__version__}, {platform.machine()}, one thread\n")
    print("| set | spectrum distance ↓ | judge FD ↓ | judge KID ↓ |\n|---|---|---|---|")
    for name, images in sets.items():
        r = realism(features(images), reference_features)
        print(f"| {name} | {spectrum_distance(images, reference):.3f} | {r['fd']:.1f} | {r['kid']:.1f} |", flush=True)
    name, strength, table = choose_post_filter(blurred[0.7], features, reference_features, real_images=reference)
    print(f"\nThe blurred set (strength 0.7): FD/KID choose {name} {strength:g}; the spectrum alone chooses {' '.join(map(str, pick_post_filter(table, ('spectrum',))))}\n")
    print("| filter | strength | spectrum | FD | KID | rank sum (FD, KID) |\n|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['filter']} | {row['strength']:.3g} | {row['spectrum']:.3f} | {row['fd']:.1f} | {row['kid']:.1f} | {row['rank_sum']} |")


if __name__ == "__main__":
    main()
