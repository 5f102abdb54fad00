"""A realism measure that a blur or a sharpen cannot game in either direction: the power spectrum.

FD and KID in a learned feature space reward whatever moves the features towards real ones; a blurry
generator's features move towards real under a sharpening filter, so a post-filter can buy realism that the
model does not have (the arena's filtered controls exist for that). The power spectrum states what a
filter changes: a blur takes power from the high frequencies, a sharpen or added noise puts power there, so
any filter moves a real render's spectrum away from the real one, and a model's spectrum must match real
renders' at every scale to score well.

:func:`radial_power_spectrum`: per image and channel, the mean removed and a 2-D Hann window applied (so the
frame's edges do not leak power into every frequency), the power of the 2-D FFT averaged over rings of one
cycle per image side: band ``k`` holds the frequencies of radius ``k − ½ ≤ r < k + ½``, ``k = 1 … H/2``
(32 bands at 64 px; the corners beyond the Nyquist radius are left out). :func:`spectrum_distance`: each
image's spectrum as shares of its own power (:func:`log_band_shares`, the shape), averaged in logs over a
set, and the mean over channels and bands of the absolute log-ratio between the two sets: every band, from
layout-sized structure to single-pixel texture, weighs the same, and a ratio reads alike whether a band
holds much power or little.

What it does not see, by design: the mean colour (removed) and a contrast change that scales every band
alike (FD and KID see both). What it credits: a filter that gives a blurry model's images the real
spectrum's shape (a sharpen that exactly undoes a blur); only over-doing or under-doing is caught, which is
why the arena's filtered controls stay.
"""

from __future__ import annotations

import torch


def _ring_means(size: int) -> torch.Tensor:
    """``[H·(H/2+1), H/2]``: averages the frequencies of a real FFT (``rfft2``: half the plane, the other half
    its mirror) over each band, band ``k`` in column ``k − 1``: the radius in cycles per image side, rounded;
    the mean (0) and the corners past Nyquist belong to none. Columns 1 … H/2−1 stand for two frequencies."""
    rows = torch.fft.fftfreq(size, dtype=torch.float64) * size
    cols = torch.fft.rfftfreq(size, dtype=torch.float64) * size
    rings = torch.round(torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)).long().flatten()
    twice = torch.full((len(cols),), 2.0, dtype=torch.float64)
    twice[0] = twice[-1] = 1.0
    weights = twice.repeat(size)
    members = (rings[:, None] == torch.arange(1, size // 2 + 1)[None, :]).double() * weights[:, None]
    return (members / members.sum(0, keepdim=True)).float()


def radial_power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """``[B, C, H/2]``: each image's power per radial band (band ``k`` at index ``k − 1``) of ``[B, C, H, H]``
    images in [0, 1] (float32: its round-off is far below the differences measured)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"radial_power_spectrum needs square [B, C, H, H] images, got {tuple(images.shape)}")
    x = images.float()
    size = x.shape[-1]
    window = torch.hann_window(size, periodic=False)
    x = (x - x.mean(dim=(-2, -1), keepdim=True)) * (window[:, None] * window[None, :])
    spectrum = torch.fft.rfft2(x)
    power = (spectrum.real**2 + spectrum.imag**2) / size**2
    return power.flatten(-2) @ _ring_means(size)


def log_band_shares(images: torch.Tensor) -> torch.Tensor:
    """``[B, C, H/2]``: the log of the share of each image's (AC) power in each band: the spectrum's shape.

    Scenes differ in contrast far more than in how their power falls off with frequency, so each image's
    spectrum is divided by its total before a set is averaged (in logs): the set's mean shape then settles
    with a few dozen images, where a mean of raw power follows its most contrasted few. A flat image has no
    shape: its shares are 0 (log floored at 1e-12), far from any real spectrum."""
    power = radial_power_spectrum(images)
    shares = power / power.sum(-1, keepdim=True).clamp(min=1e-30)
    return shares.clamp(min=1e-12).log()


def spectrum_distance(images: torch.Tensor, real_images: torch.Tensor) -> float:
    """Mean over channels and radial bands of ``|mean ln share − mean ln share_real|`` (:func:`log_band_shares`
    averaged over each set): 0 when the spectra have one shape; a real set against another real set sits at
    its sampling noise (about 0.09 for 64 images against 256, 0.07 for 256 against 1024)."""
    if images.shape[1:] != real_images.shape[1:]:
        raise ValueError(f"spectrum_distance compares sets of one image size, got {tuple(images.shape[1:])} and {tuple(real_images.shape[1:])}")
    return shares_distance(log_band_shares(images), log_band_shares(real_images))


def shares_distance(shares: torch.Tensor, real_shares: torch.Tensor) -> float:
    """:func:`spectrum_distance` from per-image :func:`log_band_shares`: computed once, a bootstrap over
    images resamples their rows instead of transforming the images again."""
    return float((shares.mean(0) - real_shares.mean(0)).abs().mean())


def per_band_log_ratio(images: torch.Tensor, real_images: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """``[H/2]`` (``[C, H/2]`` per channel): a set's mean log share per band minus the real set's: where it
    has too much power (> 0) or too little (< 0), e.g. a blur's deficit at high frequencies."""
    ratio = log_band_shares(images).mean(0) - log_band_shares(real_images).mean(0)
    return ratio if per_channel else ratio.mean(0)
