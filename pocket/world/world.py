"""Pocket world: procedural captioned scenes with exact masks, a CPU-sized stand-in for SD's training data.

UniFL needs three things from its data: captions to condition on, images whose *colour, layout, detail
and lighting* can each be judged, and segmentation ground truth for perceptual feedback. Real Stable
Diffusion data and weights are unavailable offline, so this module draws small scenes whose every fact
is known exactly:

* one to three objects (``SHAPES``) in a named ``PALETTE`` colour, ``SIZES`` small/medium/large, filled
  with a ``PATTERNS`` texture (stripes, checks, dots: 1–3 px at 64 px, so few-step sampling visibly
  blurs them) in a lighter or darker shade of their colour;
* a muted, textured background (grain, tiles, speckles, hatching), every pattern given a per-pixel grain;
* directional light: a brightness ramp from the lit side, drop shadows cast away from it, and a global
  brightness/contrast level kept inside a well-exposed band (the ``lighting`` degradation leaves it).

Geometry is resolution-free: centres and radii are fractions of the image side (x right, y down), so a
:class:`Scene` renders at 32, 64 or 128 px alike. Rendering is vectorised numpy on small windows around
each object, with analytic anti-aliasing (pixel coverage from a signed distance, ``clip(0.5 − d, 0, 1)``).
Objects are painted back to front onto a canvas padded so that no window is ever clipped, which keeps
shadows and objects pushed past the border (layout degradations) simple.

Masks follow the image exactly: an instance owns a pixel when its coverage there is above one half and
no object painted later covers it above one half. The semantic mask labels pixels by **shape class**
(``0`` background, ``k`` = ``SHAPES[k − 1]``), because shape is what "layout" and segmentation feedback
reason about; ``instance_labels`` use the same ids.

Captions are written from the scene in a closed vocabulary (``VOCABULARY``, alphabetic words only, so a
word-level CLIP tokenizer covers it): ``"a large red striped circle left of a small blue square on a dark
grey tiled background lit from the west"``. Solid objects carry no pattern word; stripe orientation, exact
tints, rotation and exposure are deliberately left out, as real captions leave details out. With two or
three objects the caption chains them in scene order, and each consecutive pair is joined by a relation
only when it is unambiguous (see :func:`relation`), otherwise by ``"and"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "ring", "star", "cross", "diamond")
NUM_CLASSES = len(SHAPES) + 1  # background + shapes: the semantic mask's label count

PALETTE = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.97, 0.55, 0.10),
    "yellow": (0.95, 0.87, 0.15),
    "green": (0.16, 0.68, 0.25),
    "blue": (0.15, 0.35, 0.90),
    "purple": (0.55, 0.20, 0.75),
    "pink": (0.97, 0.50, 0.72),
    "white": (0.96, 0.96, 0.96),
}
SIZES = {"small": 0.09, "medium": 0.13, "large": 0.18}  # shape scale as a fraction of the image side
PATTERNS = ("solid", "striped", "checkered", "dotted")

BACKGROUND_COLOURS = {
    "grey": (0.50, 0.50, 0.50),
    "beige": (0.62, 0.56, 0.45),
    "slate": (0.42, 0.48, 0.56),
    "olive": (0.50, 0.50, 0.34),
}
BACKGROUND_TONES = {"dark": 0.55, "light": 1.2}  # multiplies the muted colour; light stays unclipped when lit
BACKGROUND_PATTERNS = ("grainy", "tiled", "speckled", "hatched")

LIGHT_DIRECTIONS = ("left", "right", "top", "bottom")
OPPOSITE_DIRECTION = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
# The caption names the light's side by compass words of its own: with "left"/"right" shared by the relations
# ("left of"), a denoiser learnt the vertical light from the caption and never the horizontal one, and with
# words of its own it learnt both in the same steps (weights/ldm/TRIALS.md, "Why the light direction is at
# chance"). The scene keeps the image's sides; only the caption's word changes.
LIGHT_WORDS = {"left": "west", "right": "east", "top": "north", "bottom": "south"}
RELATIONS = ("left of", "right of", "above", "below")

# Unit shapes (scale 1, centred, y down). Sizes are chosen so that shapes of one size look similarly big.
_RING_INNER = 0.55
_STAR_OUTER, _STAR_INNER = 1.15, 0.5
_POLYGONS = {
    "square": np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
    "triangle": 1.2 * np.array([(math.cos(a), math.sin(a)) for a in np.radians([-90, 30, 150])]),
    "diamond": np.array([(0.0, -1.1), (0.8, 0.0), (0.0, 1.1), (-0.8, 0.0)]),
    "star": np.stack(  # five points, alternating outer tips and inner notches, first tip up
        [np.cos(np.radians(np.arange(10) * 36.0 - 90.0)), np.sin(np.radians(np.arange(10) * 36.0 - 90.0))], axis=1
    ) * np.where(np.arange(10) % 2 == 0, _STAR_OUTER, _STAR_INNER)[:, None],
    "cross": np.array(
        [(-0.35, -1), (0.35, -1), (0.35, -0.35), (1, -0.35), (1, 0.35), (0.35, 0.35),
         (0.35, 1), (-0.35, 1), (-0.35, 0.35), (-1, 0.35), (-1, -0.35), (-0.35, -0.35)]
    ),
}
# Unit-shape geometry (radius 1), public for judges that fit shape templates (evaluators.py).
UNIT_EXTENT = {"circle": 1.0, "ring": 1.0, **{name: float(np.hypot(*v.T).max()) for name, v in _POLYGONS.items()}}
_EDGES = {  # per polygon: edge starts and edge vectors, [V, 1, 1] each, ready to broadcast over a pixel window
    name: tuple(c.astype(np.float32)[:, None, None] for c in (*v.T, *(np.roll(v, -1, axis=0) - v).T))
    for name, v in _POLYGONS.items()
}
UNIT_AREA = {
    "circle": math.pi,
    "ring": math.pi * (1 - _RING_INNER**2),
    **{name: 0.5 * abs(float(np.dot(v[:, 0], np.roll(v[:, 1], -1)) - np.dot(v[:, 1], np.roll(v[:, 0], -1))))
       for name, v in _POLYGONS.items()},
}

# Texture scales as fractions of the image side: 4 px stripe/check period and 5 px dot lattice at 64 px.
_PATTERN_PERIOD = {"striped": 1 / 16, "checkered": 1 / 16, "dotted": 5 / 64}
_PATTERN_SHARE = {"solid": 0.0, "striped": 0.5, "checkered": 0.5, "dotted": math.pi * 0.3**2}  # of the shade
_TILE_PERIOD, _HATCH_PERIOD = 1 / 8, 1 / 16
_SHADOW_OFFSET = 0.03  # 2 px at 64 px


@dataclass(frozen=True)
class WorldConfig:
    """How scenes are drawn and rendered; two equal configs and seeds give identical data."""

    resolution: int = 64
    """Side of the square RGB image in pixels; scene geometry is resolution-free."""
    min_objects: int = 1
    """Fewest objects in a scene."""
    max_objects: int = 3
    """Most objects in a scene (relations appear from two on)."""
    min_visible_fraction: float = 0.6
    """Each object's visible mask must cover at least this share of its analytic area, else resample."""
    min_visible_pixels: int = 8
    """…and at least this many pixels, so a segmenter has something to find even at 32 px."""
    relation_margin: float = 0.12
    """A relation is stated only when centres differ by more than this (fraction of the side) on its axis."""
    min_background_contrast: float = 0.3
    """Smallest RGB distance between an object's mean colour (tint and pattern) and the background colour."""
    max_tries: int = 200
    """Rejection-sampling budget per scene before giving up (never reached with the defaults)."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object: what the caption names plus the exact geometry and tint the renderer uses."""

    shape: str
    colour: str
    rgb: tuple[float, float, float]  # the palette colour with a little jitter; degradations replace it
    pattern: str
    pattern_angle: float  # radians: stripe orientation and lattice rotation of checks and dots
    size: str
    radius: float  # scale of the unit shape, fraction of the image side
    centre: tuple[float, float]  # (x, y), fractions of the image side, x right, y down
    rotation: float  # radians, small: a rotated square must still read as a square

    @property
    def class_id(self) -> int:
        """Semantic label: 1 + index in ``SHAPES`` (0 is the background)."""
        return SHAPES.index(self.shape) + 1

    @property
    def mean_rgb(self) -> tuple[float, float, float]:
        """The colour the object shows on average: its tint mixed with its pattern's shade."""
        base = np.asarray(self.rgb)
        mean = base + (pattern_shade(base) - base) * _PATTERN_SHARE[self.pattern]
        return tuple(float(c) for c in mean)

    @property
    def area(self) -> float:
        """Analytic area as a fraction of the image area (ignores the frame and occlusion)."""
        return UNIT_AREA[self.shape] * self.radius**2

    @property
    def extent(self) -> float:
        """Radius of the bounding circle, fraction of the image side."""
        return self.radius * UNIT_EXTENT[self.shape]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box ``(x0, y0, x1, y1)`` of the unclipped shape, fractions of the image side."""
        cx, cy = self.centre
        if self.shape in ("circle", "ring"):
            r = self.radius
            return (cx - r, cy - r, cx + r, cy + r)
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        v = _POLYGONS[self.shape] * self.radius
        xs, ys = cx + c * v[:, 0] - s * v[:, 1], cy + s * v[:, 0] + c * v[:, 1]
        return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


@dataclass(frozen=True)
class BackgroundSpec:
    tone: str  # "dark" | "light"
    colour: str  # a BACKGROUND_COLOURS name
    rgb: tuple[float, float, float]  # tone × muted colour
    pattern: str  # a BACKGROUND_PATTERNS name
    seed: int  # seeds the per-pixel grain, so the scene alone fixes every pixel


@dataclass(frozen=True)
class LightingSpec:
    direction: str  # side the light comes from: LIGHT_DIRECTIONS
    strength: float  # brightness ramp amplitude: ×(1 + strength/2) at the lit edge, ×(1 − strength/2) opposite
    shadow: float  # darkening under drop shadows cast away from the light, 0 = none
    brightness: float  # global gain
    contrast: float  # global contrast around mid-grey 0.5


@dataclass(frozen=True)
class Scene:
    objects: tuple[ObjectSpec, ...]  # back to front (painting order) and caption order
    background: BackgroundSpec
    lighting: LightingSpec
    texture: float = 1.0  # contrast of every pattern and of background texture; 0 = flat, same mean colour


@dataclass(frozen=True)
class Sample:
    """A rendered scene; ``instance_labels`` and ``semantic_mask`` use class ids ``1 + SHAPES.index``."""

    image: torch.Tensor  # float32 [3, H, W] in [0, 1]
    instance_masks: torch.Tensor  # bool [N, H, W], visible parts, pairwise disjoint
    instance_labels: torch.Tensor  # int64 [N]
    semantic_mask: torch.Tensor  # int64 [H, W], 0 = background
    caption: str
    scene: Scene


# ----------------------------------------------------------------------------------------------- sampling


def sample_scene(rng: np.random.Generator, config: WorldConfig = WorldConfig()) -> Scene:
    """Draw a well-composed scene: objects inside the frame, each at least mostly visible, readable colours.

    The object count is drawn once (uniform), then scenes with that count are redrawn until one passes
    (rejection sampling): attributes keep their simple independent distributions, only conditioned on
    being legible, and crowded scenes are not under-represented.
    """
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    for _ in range(config.max_tries):
        scene = _propose_scene(count, rng, config)
        if scene is not None and _legible(scene, config):
            return scene
    raise RuntimeError(f"no legible scene in {config.max_tries} tries; loosen {config}")


def _propose_scene(count: int, rng: np.random.Generator, config: WorldConfig) -> Scene | None:
    objects: list[ObjectSpec] = []
    for _ in range(count):
        obj = _place(_draw_object(rng), objects, rng)
        if obj is None:
            return None
        objects.append(obj)
    background = None
    for _ in range(10):
        candidate = _draw_background(rng)
        if all(math.dist(o.mean_rgb, candidate.rgb) >= config.min_background_contrast for o in objects):
            background = candidate
            break
    if background is None:
        return None
    lighting = LightingSpec(
        direction=_pick(rng, LIGHT_DIRECTIONS),
        strength=float(rng.uniform(0.3, 0.5)),
        shadow=float(rng.uniform(0.3, 0.45)),
        brightness=float(rng.uniform(0.93, 1.07)),
        contrast=float(rng.uniform(0.92, 1.08)),
    )
    return Scene(tuple(objects), background, lighting)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """Uniform choice, several times cheaper than ``rng.choice`` on a tuple of strings."""
    return options[int(rng.integers(len(options)))]


def _draw_object(rng: np.random.Generator) -> ObjectSpec:
    colour, size = _pick(rng, tuple(PALETTE)), _pick(rng, tuple(SIZES))
    rgb = np.clip(np.array(PALETTE[colour]) + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    return ObjectSpec(
        shape=_pick(rng, SHAPES),
        colour=colour,
        rgb=tuple(float(c) for c in rgb),
        pattern=_pick(rng, PATTERNS),
        pattern_angle=float(rng.uniform(0.0, math.pi)),
        size=size,
        radius=SIZES[size] * float(rng.uniform(0.92, 1.08)),
        centre=(0.5, 0.5),
        rotation=float(rng.uniform(-0.2, 0.2)),
    )


def _place(obj: ObjectSpec, placed: Sequence[ObjectSpec], rng: np.random.Generator) -> ObjectSpec | None:
    """A centre inside the frame, not too close to the others: a cheap filter before the exact mask check.

    Bounding circles may overlap by up to 40 % of their radii: a few percent of objects end up slightly
    occluded (as the world wants), and :func:`_legible` rejects the rare scene where one is hidden too much.
    """
    reach = obj.extent + 0.02
    for _ in range(20):
        centre = tuple(float(c) for c in rng.uniform(reach, 1.0 - reach, 2))
        if all(math.dist(centre, p.centre) >= 0.6 * (obj.extent + p.extent) for p in placed):
            return replace(obj, centre=centre)
    return None


def _draw_background(rng: np.random.Generator) -> BackgroundSpec:
    tone, colour = _pick(rng, tuple(BACKGROUND_TONES)), _pick(rng, tuple(BACKGROUND_COLOURS))
    rgb = np.clip(np.array(BACKGROUND_COLOURS[colour]) * BACKGROUND_TONES[tone], 0.0, 1.0)
    return BackgroundSpec(tone, colour, tuple(float(c) for c in rgb), _pick(rng, BACKGROUND_PATTERNS),
                          int(rng.integers(2**31)))


def _legible(scene: Scene, config: WorldConfig) -> bool:
    pad, footprints = _footprints(scene, config.resolution)
    visible = _visible_masks(footprints, pad, config.resolution).sum(axis=(1, 2))
    for obj, pixels in zip(scene.objects, visible):
        if pixels < config.min_visible_pixels or pixels < config.min_visible_fraction * obj.area * config.resolution**2:
            return False
    return True


# ----------------------------------------------------------------------------------------------- geometry


@dataclass
class _Footprint:
    """An object's window on the padded canvas: coverage in [0, 1] and local (unrotated) pixel coordinates."""

    rows: slice
    cols: slice
    coverage: np.ndarray  # float32 [h, w]
    u: np.ndarray  # local x in pixels, float32 [h, w]
    v: np.ndarray  # local y in pixels


def _shadow_shift(scene: Scene, resolution: int) -> tuple[int, int]:
    """(dy, dx) in pixels, away from the light."""
    step = max(1, round(_SHADOW_OFFSET * resolution))
    return {"left": (0, step), "right": (0, -step), "top": (step, 0), "bottom": (-step, 0)}[scene.lighting.direction]


def _footprints(scene: Scene, resolution: int) -> tuple[int, list[_Footprint]]:
    """Every object's window, plus the canvas padding that keeps all windows (and shadows) unclipped."""
    res = resolution
    shift = max(abs(s) for s in _shadow_shift(scene, res))
    overhang = 0.0
    for obj in scene.objects:
        reach = obj.extent * res + 2
        for c in obj.centre:
            overhang = max(overhang, reach - c * res, c * res + reach - res)
    pad = int(math.ceil(overhang)) + shift + 1
    footprints = []
    for obj in scene.objects:
        reach = obj.extent * res + 2
        cx, cy = obj.centre[0] * res + pad, obj.centre[1] * res + pad
        x0, x1 = int(math.floor(cx - reach)), int(math.ceil(cx + reach))
        y0, y1 = int(math.floor(cy - reach)), int(math.ceil(cy + reach))
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        c, s = math.cos(obj.rotation), math.sin(obj.rotation)
        u, v = c * dx + s * dy, -s * dx + c * dy  # rotate the pixel grid back into the shape's frame
        scale = obj.radius * res
        distance = unit_sdf(obj.shape, u / scale, v / scale) * scale
        coverage = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)
        footprints.append(_Footprint(slice(y0, y1), slice(x0, x1), coverage, u, v))
    return pad, footprints


def unit_sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to the unit shape (negative inside)."""
    if shape == "circle":
        return np.hypot(x, y) - 1.0
    if shape == "ring":
        mid, half_width = (1.0 + _RING_INNER) / 2, (1.0 - _RING_INNER) / 2
        return np.abs(np.hypot(x, y) - mid) - half_width
    return _polygon_sdf(x, y, *_EDGES[shape])


def _polygon_sdf(x, y, ax, ay, ex, ey) -> np.ndarray:
    """Exact signed distance to a simple polygon, all edges at once (Inigo Quilez's sdPolygon, vectorised).

    ``(ax, ay)`` are the edges' start points and ``(ex, ey)`` their vectors; inside is decided by the parity
    of edge crossings of a ray, so the star and cross (not convex) work like the rest.
    """
    wx, wy = x[None] - ax, y[None] - ay  # [V, h, w]
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    bx, by = wx - ex * t, wy - ey * t
    distance = np.sqrt((bx * bx + by * by).min(axis=0))
    above_start, below_end, left_of_edge = y[None] >= ay, y[None] < ay + ey, ex * wy > ey * wx
    crossings = (above_start == below_end) & (below_end == left_of_edge)
    inside = np.logical_xor.reduce(crossings, axis=0)
    return np.where(inside, -distance, distance)


def _visible_masks(footprints: list[_Footprint], pad: int, resolution: int) -> np.ndarray:
    """bool [N, H, W]: coverage > 1/2 and not covered > 1/2 by any object painted later."""
    size = resolution + 2 * pad
    inner = slice(pad, pad + resolution)
    masks = np.zeros((len(footprints), resolution, resolution), dtype=bool)
    taken = np.zeros((resolution, resolution), dtype=bool)
    full = np.zeros((size, size), dtype=bool)
    for k in range(len(footprints) - 1, -1, -1):
        fp = footprints[k]
        full[:] = False
        full[fp.rows, fp.cols] = fp.coverage > 0.5
        own = full[inner, inner]
        masks[k] = own & ~taken
        taken |= own
    return masks


# ---------------------------------------------------------------------------------------------- rendering


def render(scene: Scene, config: WorldConfig = WorldConfig()) -> Sample:
    """Paint the scene back to front and derive its masks and caption."""
    res = config.resolution
    pad, footprints = _footprints(scene, res)
    size = res + 2 * pad
    canvas = np.zeros((3, size, size), dtype=np.float32)
    canvas[:, pad : pad + res, pad : pad + res] = _background(scene.background, scene.texture, res)
    shift_y, shift_x = _shadow_shift(scene, res)
    for obj, fp in zip(scene.objects, footprints):
        if scene.lighting.shadow > 0:
            rows = slice(fp.rows.start + shift_y, fp.rows.stop + shift_y)
            cols = slice(fp.cols.start + shift_x, fp.cols.stop + shift_x)
            canvas[:, rows, cols] *= 1.0 - scene.lighting.shadow * fp.coverage
        window = canvas[:, fp.rows, fp.cols]
        window += (_object_colour(obj, fp, scene.texture, res) - window) * fp.coverage
    image = _light(canvas[:, pad : pad + res, pad : pad + res], scene.lighting)
    masks = _visible_masks(footprints, pad, res)
    labels = np.array([obj.class_id for obj in scene.objects], dtype=np.int64)
    semantic = np.zeros((res, res), dtype=np.int64)
    for mask, label in zip(masks, labels):
        semantic[mask] = label
    return Sample(
        image=torch.from_numpy(np.ascontiguousarray(image)),
        instance_masks=torch.from_numpy(masks),
        instance_labels=torch.from_numpy(labels),
        semantic_mask=torch.from_numpy(semantic),
        caption=caption(scene, config),
        scene=scene,
    )


def _background(bg: BackgroundSpec, texture: float, res: int) -> np.ndarray:
    """Muted base colour × (1 + zero-mean texture); the mean colour does not depend on ``texture``."""
    rng = np.random.default_rng(bg.seed)
    coords = np.arange(res, dtype=np.float32) + 0.5
    x, y = coords[None, :], coords[:, None]
    field = 0.03 * rng.standard_normal((res, res), dtype=np.float32)  # grain on every background
    if bg.pattern == "grainy":
        field += 0.08 * rng.standard_normal((res, res), dtype=np.float32)
    elif bg.pattern == "tiled":
        period = _TILE_PERIOD * res
        grout = ((x % period) < 1.0) | ((y % period) < 1.0)
        tiles = rng.uniform(-0.06, 0.06, (int(res // period) + 2,) * 2).astype(np.float32)
        field += tiles[(y // period).astype(int), (x // period).astype(int)] - 0.25 * grout
    elif bg.pattern == "speckled":
        field += 0.3 * (rng.random((res, res), dtype=np.float32) < 0.06)
    else:  # hatched: thin diagonal lines
        period = _HATCH_PERIOD * res * math.sqrt(2)
        field += 0.1 * np.clip(2.5 * np.sin(2 * math.pi * (x + y) / period) - 1.5, 0.0, 1.0)
    field -= field.mean()
    base = np.asarray(bg.rgb, dtype=np.float32)[:, None, None]
    return base * (1.0 + texture * field)[None]


def _object_colour(obj: ObjectSpec, fp: _Footprint, texture: float, res: int) -> np.ndarray:
    """[3, h, w] colour: base mixed with a shade by the pattern; ``texture`` fades it towards its mean."""
    base = np.asarray(obj.rgb, dtype=np.float32)
    if obj.pattern == "solid":
        return np.broadcast_to(base[:, None, None], (3, *fp.coverage.shape))
    shade = pattern_shade(base)
    period = _PATTERN_PERIOD[obj.pattern] * res
    c, s = math.cos(obj.pattern_angle), math.sin(obj.pattern_angle)
    along, across = c * fp.u + s * fp.v, -s * fp.u + c * fp.v
    phase = 2 * math.pi / period
    sharpness = max(0.6, period / (2 * math.pi))  # ≈ 1 px transitions: anti-aliased at any resolution
    if obj.pattern == "striped":
        amount = np.clip(0.5 + sharpness * np.sin(phase * along), 0.0, 1.0)
    elif obj.pattern == "checkered":
        amount = np.clip(0.5 + 1.5 * sharpness * np.sin(phase * along) * np.sin(phase * across), 0.0, 1.0)
    else:  # dotted
        du = (along % period) - period / 2
        dv = (across % period) - period / 2
        amount = np.clip(0.3 * period - np.hypot(du, dv) + 0.5, 0.0, 1.0)
    mean = float((amount * fp.coverage).sum() / max(float(fp.coverage.sum()), 1e-6))
    amount = mean + texture * (amount - mean)
    return base[:, None, None] + (shade - base)[:, None, None] * amount[None]


def pattern_shade(rgb: np.ndarray) -> np.ndarray:
    """The second colour of a pattern: darker for light colours, lighter for dark ones (same hue)."""
    luminance = float(rgb @ np.array([0.299, 0.587, 0.114], dtype=rgb.dtype))
    return rgb * 0.62 if luminance > 0.6 else rgb + (1.0 - rgb) * 0.45


def _light(image: np.ndarray, light: LightingSpec) -> np.ndarray:
    """Directional ramp (lit edge brighter), then contrast around 0.5 and global gain, clipped to [0, 1]."""
    res = image.shape[-1]
    ramp = (np.arange(res, dtype=np.float32) + 0.5) / res - 0.5  # −0.5 … 0.5 along x or y
    if light.direction in ("left", "top"):
        ramp = -ramp
    ramp = ramp[None, None, :] if light.direction in ("left", "right") else ramp[None, :, None]
    lit = image * (1.0 + light.strength * ramp)
    lit = (lit - 0.5) * light.contrast + 0.5
    return np.clip(lit * light.brightness, 0.0, 1.0, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- captions


def relation(a: ObjectSpec, b: ObjectSpec, margin: float) -> str | None:
    """Where ``a`` is relative to ``b`` along the axis they differ most on, or None when that is < margin."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if max(abs(dx), abs(dy)) < margin:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def describe(obj: ObjectSpec) -> str:
    """``"a large red striped circle"``; solid objects carry no pattern word."""
    pattern = "" if obj.pattern == "solid" else f" {obj.pattern}"
    return f"a {obj.size} {obj.colour}{pattern} {obj.shape}"


def caption(scene: Scene, config: WorldConfig = WorldConfig()) -> str:
    """Objects in scene order, consecutive pairs joined by their relation (or ``"and"``), then background and light.

    A scene without objects (only made by hand, never sampled) reads ``"a dark grey tiled background …"``.
    """
    parts = [describe(obj) for obj in scene.objects[:1]]
    for previous, obj in zip(scene.objects, scene.objects[1:]):
        parts += [relation(previous, obj, config.relation_margin) or "and", describe(obj)]
    bg, light = scene.background, scene.lighting
    setting = f"a {bg.tone} {bg.colour} {bg.pattern} background lit from the {LIGHT_WORDS[light.direction]}"
    parts.append(f"on {setting}" if parts else setting)
    return " ".join(parts)


VOCABULARY: list[str] = sorted(
    {"a", "and", "on", "background", "lit", "from", "the"}
    | {word for r in RELATIONS for word in r.split()}
    | set(SIZES) | set(PALETTE) | set(PATTERNS) - {"solid"} | set(SHAPES)
    | set(BACKGROUND_TONES) | set(BACKGROUND_COLOURS) | set(BACKGROUND_PATTERNS) | set(LIGHT_WORDS.values())
)
"""Every word a caption can contain (lower-case, alphabetic), for a word-level tokenizer."""


# ------------------------------------------------------------------------------------------------ dataset


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of the stream ``seed``: items are independent of access order."""
    return np.random.default_rng([seed, index])


def sample_prompts(n: int, seed: int = 0, config: WorldConfig = WorldConfig()) -> list[str]:
    """The first ``n`` captions of ``PocketDataset(n, seed, config)``, without rendering any image."""
    return [caption(sample_scene(item_rng(seed, i), config), config) for i in range(n)]


class PocketDataset(Dataset):
    """``length`` rendered samples; item ``i`` depends only on ``(seed, i, config)``."""

    def __init__(self, length: int, seed: int = 0, config: WorldConfig = WorldConfig()):
        self.length, self.seed, self.config = length, seed, config

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        return sample_scene(item_rng(self.seed, index % self.length), self.config)

    def __getitem__(self, index: int) -> Sample:
        return render(self.scene(index), self.config)


def collate(samples: Sequence[Sample]) -> dict:
    """Stack images and semantic masks; keep per-image instance masks/labels (variable N) and scenes as lists."""
    return {
        "image": torch.stack([s.image for s in samples]),
        "semantic_mask": torch.stack([s.semantic_mask for s in samples]),
        "instance_masks": [s.instance_masks for s in samples],
        "instance_labels": [s.instance_labels for s in samples],
        "caption": [s.caption for s in samples],
        "scene": [s.scene for s in samples],
    }
