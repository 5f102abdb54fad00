"""The arena's judges: grounded in the pocket world's truth, trained on a stream nothing else saw.

The world knows what every prompt asks for (:class:`~.world.Scene`), so a generated image is judged
against that spec, not against a learned taste that a reward hack could share:

* **Prompt accuracy** (:func:`prompt_checks`). :class:`PromptJudge` reads an image the way the world
  describes it: per pixel the shape, colour, size and pattern of the object there (or background), a
  heat map peaking at each object's centre, and per image the background tone and the light direction.
  :func:`read_scene` turns that into objects (one per heat-map peak, its attributes voted over the
  pixels nearest to it); :func:`prompt_checks` then asks of each prompt, against its scene spec: is the
  object **count** right, does each prompted object have its **shape**, **colour** and **size**, does each
  **stated relation** hold between the objects found, are the **background tone** and the **light
  direction** right. A prompt's score is the share of its checks that pass; nothing is learned there.
* **Prompt accuracy, version 2** (:func:`prompt_scores_v2`, ``version=2``): the same reading scored against
  everything the image shows, so what was not asked costs. Every find above a confidence cut
  (:data:`RULE_V2`, chosen on real renders of the validation stream) is matched one-to-one to the prompted
  objects (:func:`match_v2`); shape, colour and size each score the F1 of the matched pairs that agree on
  it (an extra object lowers precision, a missing one recall), and the count is a kind of check of its own,
  weighing as much as shape. Version 1 stays, unchanged, for comparison.
* **Realism** (:func:`realism`): the Fréchet distance and the kernel inception distance (KID, unbiased
  at any n) in the 128-d embedding of the judge's own trunk (:meth:`PromptJudge.embed`). That trunk was
  trained only on the world's truth (what is where, in which colour, size and *pattern*: the pattern head
  makes it see the 1–3 px textures that few-step sampling blurs), on its own seeds, and never on a
  degradation label, so the hacks that fool the aspect rewards have no reason to move it.
* **Aspects** (:func:`aspect_shortfall`): the held-out aspect evaluators, read as a shortfall against
  what real renders of the same scenes score. Above real counts as no better than real.

The judge trains on pocket stream :data:`JUDGE_SEEDS` ``[0]`` and is validated on ``[1]``: streams no
reward, perception model, evaluator or LDM was built from (``python -m unifl.pocket.judges.build_judges``). It
never gives a gradient to anything; it is frozen before any arena model is scored.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..models.evaluators import ResidualBlock, frechet_distance
from ..models.perception import (
    conv_bn_relu,
    load_weights,
    mean_max_pool,
    model_input,
    shipped_weights,
    upsample_to,
)
from ..world.world import (
    BACKGROUND_TONES,
    LIGHT_DIRECTIONS,
    OPPOSITE_DIRECTION,
    PALETTE,
    PATTERNS,
    SHAPES,
    SIZES,
    Scene,
    WorldConfig,
    relation,
)

JUDGE_SEEDS = (301, 302)
"""(train, validation) pocket streams of the prompt judge: no other model was built from them."""

OBJECT_GROUPS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(PALETTE), "size": tuple(SIZES), "pattern": PATTERNS}
"""Per-pixel attributes the judge reads: class ``1 + index`` on object pixels, 0 on the background."""
SCENE_GROUPS: dict[str, tuple[str, ...]] = {"tone": tuple(BACKGROUND_TONES), "light": LIGHT_DIRECTIONS}
"""Per-image attributes the judge reads."""
CHECKS = ("count", "shape", "colour", "size", "relation", "tone", "light")
"""What :func:`prompt_checks` checks, in report order (pattern is read but not checked: see the docs)."""

PEAK_THRESHOLD = 0.35
"""A heat-map local maximum above this is an object (the heat map's target is 1 at a centre)."""
MATCH_CANDIDATES = 6
"""At most this many found objects (the most confident) are matched to the prompt's one to three."""
PEAK_WINDOW = 7
"""Side in pixels (at 64 px) of the non-maximum suppression window: closer peaks are one object."""


def centre_sigma(radius: float, resolution: int) -> float:
    """Width in pixels of an object's centre bump: a third of its radius, at least 1.5 px."""
    return max(1.5, radius * resolution / 3)


class PromptJudge(nn.Module):
    """Dilated residual encoder to 16 px, decoder to 32 px, refinement at 64 px; dense and image heads."""

    kind = "pocket-prompt-judge"
    width = 64
    dimension = 2 * width

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 24, stride=2)  # 32 px
        self.low = conv_bn_relu(24, 24)
        self.encoder = nn.Sequential(
            conv_bn_relu(24, self.width, stride=2),  # 16 px
            ResidualBlock(self.width), ResidualBlock(self.width, dilation=2), ResidualBlock(self.width, dilation=4),
        )
        self.decoder = conv_bn_relu(self.width + 24, 32)
        self.refine = conv_bn_relu(32 + 3, 32)
        self.object_sizes = [1 + len(v) for v in OBJECT_GROUPS.values()]
        self.dense = nn.Conv2d(32, sum(self.object_sizes) + 1, 1)  # attribute logits + centre heat-map logit
        self.scene_sizes = [len(v) for v in SCENE_GROUPS.values()]
        # Light direction is *where* the image is brighter: read it from a 4×4 grid of pooled features.
        self.scene = nn.Sequential(nn.Flatten(), nn.Linear(self.width * 16, 64), nn.ReLU(), nn.Linear(64, sum(self.scene_sizes)))

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = model_input(images)
        low = self.low(self.stem(x))
        return x, low, self.encoder(low)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """``(object logits per group [B, 1+K, 64, 64], centre logit [B, 64, 64], scene logits per group)``."""
        x, low, deep = self._features(images)
        decoded = self.decoder(torch.cat([upsample_to(deep, low), low], 1))
        dense = self.dense(self.refine(torch.cat([upsample_to(decoded, x), x], 1)))
        *groups, centre = dense.split([*self.object_sizes, 1], dim=1)
        scene = self.scene(F.adaptive_avg_pool2d(deep, 4)).split(self.scene_sizes, dim=1)
        return list(groups), centre[:, 0], list(scene)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 128]``: mean and max per channel of the 16 px trunk, the realism feature space."""
        return mean_max_pool(self._features(images)[2])


def load_prompt_judge(path: str = "") -> PromptJudge:
    """The prompt judge from ``path`` (``''``: the shipped ``weights/judges/prompt.safetensors``), frozen."""
    model = load_weights(PromptJudge(), path or shipped_weights("judges", "prompt"))
    return model.requires_grad_(False)


# ------------------------------------------------------------------------------------------------ targets


def judge_targets(scene: Scene, instance_ids: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training targets of one rendered scene: object maps ``[4, H, W]``, centre heat map ``[H, W]``, scene ``[2]``.

    ``instance_ids`` is ``0`` on the background and ``j + 1`` on the visible pixels of object ``j``.
    """
    maps = torch.zeros(len(OBJECT_GROUPS), resolution, resolution, dtype=torch.int64)
    heat = torch.zeros(resolution, resolution)
    coords = torch.arange(resolution, dtype=torch.float32) + 0.5
    for j, obj in enumerate(scene.objects):
        mask = instance_ids == j + 1
        for g, (group, values) in enumerate(OBJECT_GROUPS.items()):
            maps[g][mask] = 1 + values.index(getattr(obj, group))
        cx, cy = obj.centre[0] * resolution, obj.centre[1] * resolution
        sigma = centre_sigma(obj.radius, resolution)
        bump = torch.exp(-((coords[None, :] - cx) ** 2 + (coords[:, None] - cy) ** 2) / (2 * sigma**2))
        heat = torch.maximum(heat, bump)
    scene_target = torch.tensor([SCENE_GROUPS["tone"].index(scene.background.tone), SCENE_GROUPS["light"].index(scene.lighting.direction)])
    return maps, heat, scene_target


def mirror(images: torch.Tensor, maps: torch.Tensor, heat: torch.Tensor, scene: torch.Tensor) -> tuple:
    """Left–right mirror of a batch and its targets: the light from the left now comes from the right."""
    light = [SCENE_GROUPS["light"].index(OPPOSITE_DIRECTION[d]) if d in ("left", "right") else i for i, d in enumerate(SCENE_GROUPS["light"])]
    scene = scene.clone()
    scene[:, 1] = torch.tensor(light)[scene[:, 1]]
    return images.flip(-1), maps.flip(-1), heat.flip(-1), scene


def judge_loss(model: PromptJudge, images: torch.Tensor, maps: torch.Tensor, heat: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per attribute map (background pixels weighted 0.2: they are most pixels and easy), a
    weighted logistic loss on the centre heat map (pixels near a centre weighted up to 10×), and
    cross-entropy of the scene attributes."""
    groups, centre, scene_logits = model(images)
    weight = torch.tensor([0.2] + [1.0] * 16)
    loss = sum(F.cross_entropy(logits, maps[:, g], weight=weight[: logits.shape[1]]) for g, logits in enumerate(groups))
    loss = loss + 4 * F.binary_cross_entropy_with_logits(centre, heat, weight=1 + 9 * heat)
    return loss + sum(F.cross_entropy(logits, scene[:, g]) for g, logits in enumerate(scene_logits))


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FoundObject:
    """An object the judge found: its attributes (voted over its pixels) and centre (fractions, x right)."""

    shape: str
    colour: str
    size: str
    pattern: str
    centre: tuple[float, float]
    pixels: int
    score: float = 1.0
    """Heat-map value at the peak: the judge's confidence that an object is centred there."""


@dataclass(frozen=True)
class Reading:
    objects: tuple[FoundObject, ...]
    tone: str
    light: str


@torch.no_grad()
def read_scenes(judge: PromptJudge, images: torch.Tensor, batch_size: int = 128) -> list[Reading]:
    """What the judge sees in each image (``[N, 3, H, W]`` in ``[0, 1]``, any size: read at 64 px)."""
    readings = []
    for start in range(0, len(images), batch_size):
        groups, centre, scene = judge(images[start : start + batch_size].float())
        labels = torch.stack([g.argmax(1) for g in groups], 1).numpy()  # [B, 4, H, W]
        heat = torch.sigmoid(centre)
        peaks = (heat == F.max_pool2d(heat[:, None], PEAK_WINDOW, 1, PEAK_WINDOW // 2)[:, 0]) & (heat > PEAK_THRESHOLD)
        tones, lights = (s.argmax(1).tolist() for s in scene)
        for b in range(len(labels)):
            found = peaks[b].nonzero().numpy()
            scores = heat[b][peaks[b]].numpy() if len(found) else np.zeros(0)
            order = np.argsort(-scores, kind="stable")  # strongest first (nonzero() and the mask share row-major order)
            readings.append(Reading(_objects(labels[b], found[order], scores[order]), SCENE_GROUPS["tone"][tones[b]], SCENE_GROUPS["light"][lights[b]]))
    return readings


def _objects(labels: np.ndarray, peaks: np.ndarray, scores: np.ndarray) -> tuple[FoundObject, ...]:
    """One object per peak; its pixels are the object pixels nearer to it than to any other peak."""
    if len(peaks) == 0:
        return ()
    size = labels.shape[-1]
    rows, cols = np.nonzero(labels[0] > 0)
    owner = np.argmin((rows[:, None] - peaks[None, :, 0]) ** 2 + (cols[:, None] - peaks[None, :, 1]) ** 2, axis=1) if len(rows) else np.zeros(0, int)
    found = []
    for k, (row, col) in enumerate(peaks):
        mine = owner == k
        votes = labels[:, rows[mine], cols[mine]] if mine.any() else labels[:, row : row + 1, col]
        attributes = []
        for g, values in enumerate(OBJECT_GROUPS.values()):
            counts = np.bincount(votes[g], minlength=len(values) + 1)[1:]
            attributes.append(values[int(counts.argmax())] if counts.any() else values[0])
        found.append(FoundObject(*attributes, centre=((col + 0.5) / size, (row + 0.5) / size), pixels=int(mine.sum()), score=float(scores[k])))
    return tuple(found)


# ----------------------------------------------------------------------------------------------- checks


def _stated_relations(scene: Scene, config: WorldConfig) -> list[tuple[int, int, str]]:
    """The relations the caption states: consecutive objects ``(i, i + 1)`` joined by a relation, not "and"."""
    pairs = []
    for i, (a, b) in enumerate(zip(scene.objects, scene.objects[1:])):
        stated = relation(a, b, config.relation_margin)
        if stated is not None:
            pairs.append((i, i + 1, stated))
    return pairs


def _match(scene: Scene, found: Sequence[FoundObject]) -> list[FoundObject | None]:
    """Per prompted object, the found object credited to it (or None): the assignment with the most
    agreeing shape/colour/size attributes among the :data:`MATCH_CANDIDATES` most confident finds; ties go
    to the more confident. (An image of clutter has many peaks; only the count check sees them all.)"""
    wanted = scene.objects
    found = sorted(found, key=lambda f: -f.score)[:MATCH_CANDIDATES]
    best, best_score = [None] * len(wanted), -1
    for chosen in itertools.permutations(range(len(found)), min(len(found), len(wanted))):
        score = sum((f.shape == w.shape) + (f.colour == w.colour) + (f.size == w.size) for w, f in zip(wanted, (found[c] for c in chosen)))
        if score > best_score:
            best, best_score = [found[c] for c in chosen] + [None] * (len(wanted) - len(chosen)), score
    return best


def prompt_checks(scene: Scene, reading: Reading, config: WorldConfig = WorldConfig()) -> dict[str, list[bool]]:
    """Every check of one prompt against what the judge read (see :data:`CHECKS`); a missing object fails
    its shape, colour and size checks and every stated relation it is part of. A stated relation holds
    when the found centres stand in it (the world's own :func:`~.world.relation`, without its margin)."""
    matched = _match(scene, reading.objects)
    checks = {name: [] for name in CHECKS}
    checks["count"].append(len(reading.objects) == len(scene.objects))
    for wanted, found in zip(scene.objects, matched):
        for attribute in ("shape", "colour", "size"):
            checks[attribute].append(found is not None and getattr(found, attribute) == getattr(wanted, attribute))
    for i, j, stated in _stated_relations(scene, config):
        a, b = matched[i], matched[j]
        checks["relation"].append(a is not None and b is not None and _relation_of(a, b) == stated)
    checks["tone"].append(reading.tone == scene.background.tone)
    checks["light"].append(reading.light == scene.lighting.direction)
    return checks


def _relation_of(a: FoundObject, b: FoundObject) -> str:
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def prompt_accuracy(
    images: torch.Tensor, scenes: Sequence[Scene], judge: PromptJudge, config: WorldConfig = WorldConfig(), version: int = 1
) -> dict[str, float]:
    """The judge reads ``images`` and :func:`prompt_accuracy_from_readings` scores them with judge ``version``."""
    if len(images) != len(scenes):
        raise ValueError(f"prompt_accuracy: {len(images)} images but {len(scenes)} scenes; give the scene of each image")
    return prompt_accuracy_from_readings(read_scenes(judge, images), scenes, config, version)


def prompt_accuracy_from_readings(
    readings: Sequence[Reading], scenes: Sequence[Scene], config: WorldConfig = WorldConfig(), version: int = 1
) -> dict[str, float]:
    """One reading (:func:`read_scenes`, the costly part) scored by either judge version.

    Version 1: ``prompt_accuracy`` (mean over prompts of the share of its checks that pass), ``all_correct``
    (share of prompts passing every check) and the accuracy of each check kind over all its instances
    (:data:`CHECKS`). Version 2: :func:`prompt_scores_v2`'s columns (:data:`CHECKS_V2`, ``precision``,
    ``recall``, ``extra_objects``, ``missing_objects``).
    """
    if len(readings) != len(scenes):
        raise ValueError(f"prompt_accuracy: {len(readings)} readings but {len(scenes)} scenes; give the scene of each image")
    if version == 2:
        return prompt_scores_v2(readings, scenes, config)
    if version != 1:
        raise ValueError(f"prompt judge version {version} does not exist; choose 1 or 2")
    per_prompt, pooled = [], {name: [] for name in CHECKS}
    for scene, reading in zip(scenes, readings):
        checks = prompt_checks(scene, reading, config)
        per_prompt.append([c for values in checks.values() for c in values])
        for name, values in checks.items():
            pooled[name] += values
    return {
        "prompt_accuracy": float(np.mean([np.mean(p) for p in per_prompt])),
        "all_correct": float(np.mean([all(p) for p in per_prompt])),
        **{name: float(np.mean(values)) if values else float("nan") for name, values in pooled.items()},
    }


def per_prompt_accuracy(readings: Sequence[Reading], scenes: Sequence[Scene], config: WorldConfig = WorldConfig(), version: int = 1) -> np.ndarray:
    """``[N]``: each prompt's score (the share of its checks that pass, or version 2's mean over check
    kinds), whose mean is ``prompt_accuracy``: what a paired bootstrap over prompts resamples."""
    if len(readings) != len(scenes):
        raise ValueError(f"per_prompt_accuracy: {len(readings)} readings but {len(scenes)} scenes; give the scene of each image")
    if version == 2:
        return np.array([np.mean(list(_checks_v2(scene, reading, config, RULE_V2)[0].values())) for scene, reading in zip(scenes, readings)])
    if version != 1:
        raise ValueError(f"prompt judge version {version} does not exist; choose 1 or 2")
    return np.array([np.mean([c for values in prompt_checks(scene, reading, config).values() for c in values]) for scene, reading in zip(scenes, readings)])


# ------------------------------------------------------------------------------------- checks, version 2
#
# Version 1 credits each prompted object with the best of the most confident finds and counts the objects in
# one check of 8–10, so an image of clutter passes shape and size by luck and loses little (a review measured
# random 4–5-object scenes at 0.369 against prompts, random 1–3-object ones at 0.268). Version 2 scores what
# was asked against everything the image shows: each attribute as an F1 over one-to-one matches (an extra
# object costs precision, a missing one recall), and the count as a kind of check of its own.

CHECKS_V2 = ("count", "shape", "colour", "size", "relation", "tone", "light")
"""Version 2's kinds of check, each one term of a prompt's score (``relation`` only where the caption states
one). ``count``: the number found equals the number asked; ``shape``/``colour``/``size``: the F1 of the
matched pairs that agree on it, ``2·agreeing / (found + asked)``; ``relation``: the share of stated relations
holding between the matched objects; ``tone``, ``light``: as in version 1."""


@dataclass(frozen=True)
class MatchingRuleV2:
    """Which of the judge's finds count as objects the image shows (chosen on real renders only)."""

    min_score: float
    """A find whose heat-map peak is at least this is an object; :data:`PEAK_THRESHOLD` is the floor."""


MIN_SCORE_GRID_V2 = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8)
"""The confidence cuts ``python -m unifl.pocket.judges.build_judges --rule-v2`` sweeps (from the reading's floor)."""
RULE_V2 = MatchingRuleV2(min_score=0.35)
"""Frozen: the cut that scored real renders of the judge's validation stream (clean, blurred, low-res) best
against their own scenes (``weights/judges/prompt_v2.json``); never chosen on a model's samples."""


def match_v2(scene: Scene, found: Sequence[FoundObject]) -> list[FoundObject | None]:
    """Per prompted object, the found object matched to it one-to-one (or None): the assignment of all finds
    with the most agreeing shape/colour/size attributes, ties to the more confident; a pair agreeing on
    nothing is no match."""
    wanted = scene.objects
    if not found or not wanted:
        return [None] * len(wanted)
    agreement = np.array([[(f.shape == w.shape) + (f.colour == w.colour) + (f.size == w.size) for f in found] for w in wanted], dtype=float)
    confidence = np.array([f.score for f in found])[None, :]
    rows, cols = linear_sum_assignment(agreement + 1e-3 * confidence, maximize=True)  # the bonus sums below one agreement
    matched: list[FoundObject | None] = [None] * len(wanted)
    for row, col in zip(rows, cols):
        if agreement[row, col] > 0:
            matched[row] = found[col]
    return matched


def _checks_v2(scene: Scene, reading: Reading, config: WorldConfig, rule: MatchingRuleV2) -> tuple[dict[str, float], int, int, int]:
    """``(checks, found, asked, fully right)``: the kinds of check and the object counts behind precision/recall."""
    found = tuple(f for f in reading.objects if f.score >= rule.min_score)
    matched = match_v2(scene, found)
    asked = len(scene.objects)
    shown = len(found) + asked
    checks = {"count": float(len(found) == asked)}
    for attribute in ("shape", "colour", "size"):
        agreeing = sum(f is not None and getattr(f, attribute) == getattr(w, attribute) for w, f in zip(scene.objects, matched))
        checks[attribute] = 2 * agreeing / shown if shown else 1.0
    stated = _stated_relations(scene, config)
    if stated:
        checks["relation"] = float(np.mean([matched[i] is not None and matched[j] is not None and _relation_of(matched[i], matched[j]) == s for i, j, s in stated]))
    checks["tone"] = float(reading.tone == scene.background.tone)
    checks["light"] = float(reading.light == scene.lighting.direction)
    right = sum(f is not None and (f.shape, f.colour, f.size) == (w.shape, w.colour, w.size) for w, f in zip(scene.objects, matched))
    return checks, len(found), asked, right


def prompt_checks_v2(scene: Scene, reading: Reading, config: WorldConfig = WorldConfig(), rule: MatchingRuleV2 = RULE_V2) -> dict[str, float]:
    """Version 2's checks of one prompt (:data:`CHECKS_V2`), each in [0, 1]; the prompt's score is their mean."""
    return _checks_v2(scene, reading, config, rule)[0]


def prompt_scores_v2(readings: Sequence[Reading], scenes: Sequence[Scene], config: WorldConfig = WorldConfig(), rule: MatchingRuleV2 = RULE_V2) -> dict[str, float]:
    """``prompt_accuracy`` (mean over prompts of the mean of its kinds of check), ``all_correct`` (share of
    prompts scoring 1), the mean of each kind (:data:`CHECKS_V2`, over the prompts that have it),
    ``precision`` and ``recall`` (found objects right on shape, colour and size, over all found and over all
    asked), ``extra_objects`` and ``missing_objects`` (per prompt, beyond or short of the count asked)."""
    if len(readings) != len(scenes):
        raise ValueError(f"prompt_scores_v2: {len(readings)} readings but {len(scenes)} scenes; give the scene of each image")
    per_prompt, kinds, found, asked, right = [], {name: [] for name in CHECKS_V2}, [], [], []
    for scene, reading in zip(scenes, readings):
        checks, n_found, n_asked, n_right = _checks_v2(scene, reading, config, rule)
        per_prompt.append(np.mean(list(checks.values())))
        for name, value in checks.items():
            kinds[name].append(value)
        found.append(n_found), asked.append(n_asked), right.append(n_right)
    found, asked = np.array(found), np.array(asked)
    return {
        "prompt_accuracy": float(np.mean(per_prompt)),
        "all_correct": float(np.mean(np.isclose(per_prompt, 1.0))),
        **{name: float(np.mean(values)) if values else float("nan") for name, values in kinds.items()},
        "precision": float(sum(right) / found.sum()) if found.sum() else float("nan"),
        "recall": float(sum(right) / asked.sum()) if asked.sum() else float("nan"),
        "extra_objects": float(np.mean(np.maximum(0, found - asked))),
        "missing_objects": float(np.mean(np.maximum(0, asked - found))),
    }


# ----------------------------------------------------------------------------------------------- realism


@torch.no_grad()
def embed(images: torch.Tensor, judge: PromptJudge, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([judge.embed(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)])


def kernel_inception_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Unbiased MMD² with the cubic polynomial kernel ``(x·y / d + 1)³`` (Bińkowski et al. 2018), on the
    whole sets: unbiased at any n (no subset averaging needed at these sizes), so it can be slightly
    negative when two sets come from one distribution."""
    a, b = (torch.as_tensor(f).double() for f in (feats_a, feats_b))
    m, n, d = len(a), len(b), a.shape[1]
    if min(m, n) < 2:
        raise ValueError(f"kernel_inception_distance needs at least 2 samples per set, got {m} and {n}")
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def realism(features: torch.Tensor, real_features: torch.Tensor) -> dict[str, float]:
    """FD and KID of generated features against real ones (the judge's features are not normalised, so KID
    comes out in the units of FD's squares, not the ×10⁻³ of Inception features: compare it across rows)."""
    return {"fd": frechet_distance(features, real_features), "kid": kernel_inception_distance(features, real_features)}


def aspect_shortfall(scores: dict[str, float], real_scores: dict[str, float]) -> dict[str, float]:
    """Per aspect ``max(0, real − model)``, and their mean: 0 is as good as real, above real is no better."""
    gaps = {aspect: max(0.0, real_scores[aspect] - scores[aspect]) for aspect in real_scores}
    return gaps | {"mean": float(np.mean(list(gaps.values())))}
