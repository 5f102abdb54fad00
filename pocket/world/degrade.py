"""Per-aspect degradations of pocket-world scenes: the "worse" half of aesthetic preference pairs.

UniFL's decoupled aesthetic reward models each judge one aspect (colour, layout, detail, lighting). To
train such a model from pairs, the two images of a pair must differ along that aspect only, so every
degradation here edits the :class:`~.world.Scene` (or, for blur-like detail loss, the rendered image) in
one respect and re-renders with everything else (background grain, tints, patterns, light) unchanged:

* ``color``: objects dulled (desaturated towards grey), hue-rotated off the palette (clashing with the
  caption), or muddied towards brown. Masks, positions, background and light are untouched.
* ``layout``: objects mirrored so the caption's relations are false, crammed into a corner, pushed
  partly out of the frame, or piled onto each other. Colours, textures and light are untouched (shadows
  follow their objects).
* ``detail``: Gaussian blur, lower effective resolution (area down-sampling, bilinear up), or textures
  faded to their mean colour. All three keep the mean colour.
* ``lighting``: flat light (no ramp, no shadows), light from the opposite side to the caption's,
  under- or over-exposure, or a washed-out low contrast. Geometry and colours are untouched.

``strength`` in [0, 1] sets how far a variant goes (for colour, ``corner``, ``pile_up``, detail, ``flat``
and exposure/contrast, 0 is the original image), except ``layout``'s ``mirror``, which is all-or-nothing.
Variants that cannot act on a scene (``mirror`` without a stated relation, ``pile_up`` with one object)
are never drawn for it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, zoom

from .world import (
    OPPOSITE_DIRECTION,
    Sample,
    Scene,
    WorldConfig,
    relation,
    render,
    sample_scene,
)

ASPECTS = ("color", "layout", "detail", "lighting")
VARIANTS = {
    "color": ("desaturate", "hue_shift", "muddy"),
    "layout": ("mirror", "corner", "cut_off", "pile_up"),
    "detail": ("blur", "lowres", "flatten"),
    "lighting": ("flat", "reversed", "underexposed", "overexposed", "low_contrast"),
}
_MUD = np.array([0.42, 0.34, 0.22])
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Degradation:
    """A degraded image and how it was made; ``scene`` is what was rendered (masks: ``render(scene)``)."""

    image: torch.Tensor  # float32 [3, H, W] in [0, 1]
    scene: Scene  # the edited scene; unchanged for image-space variants (blur, lowres)
    aspect: str
    variant: str
    strength: float


def degradation(
    source: Scene | Sample,
    aspect: str,
    rng: np.random.Generator,
    strength: float = 0.7,
    config: WorldConfig = WorldConfig(),
    variant: str | None = None,
) -> Degradation:
    """Make ``source`` worse along ``aspect`` only; ``variant`` is drawn from the applicable ones if None."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; choose one of {ASPECTS}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    scene = source.scene if isinstance(source, Sample) else source
    if isinstance(source, Sample) and source.image.shape[-1] != config.resolution:
        raise ValueError(f"sample is {source.image.shape[-1]} px but config.resolution is {config.resolution}")
    options = _applicable(scene, aspect, config)
    if variant is None:
        variant = str(rng.choice(options))
    elif variant not in options:
        raise ValueError(f"variant {variant!r} does not apply to this scene's {aspect}; choose one of {options}")

    if aspect == "detail" and variant in ("blur", "lowres"):
        image = source.image if isinstance(source, Sample) else render(scene, config).image
        edited = _blur(image, strength, config.resolution) if variant == "blur" else _lowres(image, strength)
        return Degradation(edited, scene, aspect, variant, strength)
    edit = {"color": _recolour, "layout": _relayout, "detail": _flatten, "lighting": _relight}[aspect]
    worse = edit(scene, variant, strength, rng, config)
    return Degradation(render(worse, config).image, worse, aspect, variant, strength)


def degrade(
    source: Scene | Sample,
    aspect: str,
    rng: np.random.Generator,
    strength: float = 0.7,
    config: WorldConfig = WorldConfig(),
    variant: str | None = None,
) -> torch.Tensor:
    """The image of :func:`degradation`."""
    return degradation(source, aspect, rng, strength, config, variant).image


def preference_pair(
    rng: np.random.Generator, config: WorldConfig, aspect: str, strength: float | None = None
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """``(caption, better, worse)``: a fresh scene and its degradation; strength ∈ U(0.4, 1) when None."""
    scene = sample_scene(rng, config)
    better = render(scene, config)
    if strength is None:
        strength = float(rng.uniform(0.4, 1.0))
    return better.caption, better.image, degrade(better, aspect, rng, strength, config)


def _applicable(scene: Scene, aspect: str, config: WorldConfig) -> tuple[str, ...]:
    options = VARIANTS[aspect]
    if aspect == "layout":
        if not _stated_axes(scene, config):
            options = tuple(v for v in options if v != "mirror")
        if len(scene.objects) < 2:
            options = tuple(v for v in options if v != "pile_up")
    return options


# ----------------------------------------------------------------------------------------------- colour


def _recolour(scene: Scene, variant: str, strength: float, rng: np.random.Generator, config) -> Scene:
    turn = float(rng.uniform(0.17, 0.42)) * float(rng.choice([-1.0, 1.0]))  # 60°–150°: off any palette hue
    objects = []
    for obj in scene.objects:
        rgb = np.asarray(obj.rgb)
        if variant == "desaturate":  # dull: towards own grey, then a little towards mid-grey
            grey = float(rgb @ _LUMA)
            rgb = rgb + (grey - rgb) * 0.85 * strength
            rgb = rgb + (0.5 - rgb) * 0.3 * strength
        elif variant == "hue_shift":
            hue, lightness, saturation = colorsys.rgb_to_hls(*rgb)
            if saturation * min(lightness, 1 - lightness) < 0.05:  # white has no hue to turn: tint it
                saturation, lightness = 0.7 * strength, min(lightness, 0.75)
            rgb = np.array(colorsys.hls_to_rgb((hue + turn * strength) % 1.0, lightness, saturation))
        else:  # muddy
            rgb = rgb + (_MUD - rgb) * 0.65 * strength
        objects.append(replace(obj, rgb=tuple(float(c) for c in np.clip(rgb, 0.0, 1.0))))
    return replace(scene, objects=tuple(objects))


# ----------------------------------------------------------------------------------------------- layout


def _stated_axes(scene: Scene, config: WorldConfig) -> set[str]:
    axes = set()
    for a, b in zip(scene.objects, scene.objects[1:]):
        stated = relation(a, b, config.relation_margin)
        if stated is not None:
            axes.add("x" if stated in ("left of", "right of") else "y")
    return axes


def _relayout(scene: Scene, variant: str, strength: float, rng: np.random.Generator, config) -> Scene:
    centres = np.array([obj.centre for obj in scene.objects])
    extents = np.array([obj.extent for obj in scene.objects])
    if variant == "mirror":  # every stated relation turns false, composition otherwise intact
        for axis in _stated_axes(scene, config):
            index = 0 if axis == "x" else 1
            centres[:, index] = 1.0 - centres[:, index]
    elif variant == "corner":  # shrink the layout towards one corner: crowded, overlapping, clipped
        corner = rng.integers(0, 2, 2).astype(float)
        centres = corner + (centres - corner) * (1.0 - 0.85 * strength)
    elif variant == "cut_off":  # push one object across its nearest border
        k = int(rng.integers(len(centres)))
        gaps = np.concatenate([centres[k], 1.0 - centres[k]])  # left, top, right, bottom
        side = int(np.argmin(gaps))
        outside = 0.2 + 0.45 * strength  # share of the bounding box beyond the frame
        edge = extents[k] * (1.0 - 2.0 * outside)
        centres[k, side % 2] = edge if side < 2 else 1.0 - edge
    else:  # pile_up: everything slides onto the group's centre
        centres = centres + (centres.mean(axis=0) - centres) * 0.9 * strength
    objects = tuple(replace(obj, centre=(float(x), float(y))) for obj, (x, y) in zip(scene.objects, centres))
    return replace(scene, objects=objects)


# ----------------------------------------------------------------------------------------------- detail


def _flatten(scene: Scene, variant: str, strength: float, rng, config) -> Scene:
    return replace(scene, texture=scene.texture * (1.0 - strength))


def _blur(image: torch.Tensor, strength: float, resolution: int) -> torch.Tensor:
    """Gaussian blur, σ from 0.4 to 1.8 px at 64 px (scipy: ~20× faster than torch's CPU conv at this size)."""
    sigma = (0.4 + 1.4 * strength) * resolution / 64
    blurred = gaussian_filter(image.numpy(), sigma=(0.0, sigma, sigma), mode="reflect", truncate=3.0)
    return torch.from_numpy(blurred).clamp_(0.0, 1.0)


def _lowres(image: torch.Tensor, strength: float) -> torch.Tensor:
    """Render-at-lower-resolution look: anti-aliased down-sampling, bilinear up-sampling (pixel-aligned grids)."""
    factor = 1.5 + 2.5 * strength  # 1.5× to 4× fewer pixels per side
    full = np.asarray(image.shape[-2:])
    small = np.maximum(2, np.round(full / factor)).astype(int)
    smooth = gaussian_filter(image.numpy(), sigma=(0.0, *(0.35 * full / small)), mode="reflect", truncate=3.0)
    down = zoom(smooth, (1.0, *(small / full)), order=1, mode="nearest", grid_mode=True)
    up = zoom(down, (1.0, *(full / small)), order=1, mode="nearest", grid_mode=True)
    return torch.from_numpy(up).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- lighting


def _relight(scene: Scene, variant: str, strength: float, rng, config) -> Scene:
    light = scene.lighting
    if variant == "flat":
        light = replace(light, strength=light.strength * (1 - strength), shadow=light.shadow * (1 - strength))
    elif variant == "reversed":  # ramp and shadows from the side opposite to the caption's
        light = replace(light, direction=OPPOSITE_DIRECTION[light.direction],
                        strength=light.strength * (0.5 + strength))
    elif variant == "underexposed":
        light = replace(light, brightness=light.brightness * (1 - 0.6 * strength))
    elif variant == "overexposed":
        light = replace(light, brightness=light.brightness * (1 + 0.8 * strength))
    else:  # low_contrast
        light = replace(light, contrast=light.contrast * (1 - 0.7 * strength))
    return replace(scene, lighting=light)

