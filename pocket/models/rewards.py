"""Decoupled aspect reward models for the pocket world, their held-out evaluators, and the build.

UniFL (§4.2) trains one reward model per aesthetic aspect — colour, layout, detail, lighting — on
preference pairs that differ in that aspect only, and compares against one *global* reward model
trained on all aspects' pairs (the ablation). Pocket-world pairs come from :mod:`.degrade`, so this
module trains exactly that set, plus a second family of scorers for evaluation:

* :class:`AspectReward` (kind ``pocket-reward``) is what UniFL trains against. A small CNN on the
  space-to-depth image (``pixel_unshuffle``: lossless, so 1–3 px textures stay visible at a quarter of
  the cost) with coordinate channels, modulated by the caption through FiLM, mean-pooled. Smooth
  activations, no batch statistics, no output squashing and a reward centred on zero: in stage 2 the
  detail model initialises the online discriminator, which then trains as a logistic classifier.
* :class:`AspectEvaluator` (kind ``pocket-evaluator``) scores held-out evaluations. Trained on other
  seeds with a different architecture (strided 5×5 stem, group-normalised residual blocks, caption
  tokens attending over image positions), so a generator that games the rewards does not game these
  for free. Never train against them.

Captions use the world's closed :data:`~.world.VOCABULARY` as word sequences: order matters, since
"a red circle left of a blue square" and "a blue square left of a red circle" share a bag of words.
Training pairs are also mirrored left–right with "left" and "right" swapped in the caption, which
keeps every pair true (relations, light direction) and doubles the data, and a tenth of the captions
are emptied, so the models also score prompt-less images (an unconditioned stage-2 discriminator).

Seeds: rewards train on pair stream 1 (α_d and accuracy from held-out stream 2); evaluators on 101
(validation 102). ``python -m unifl.pocket.models.rewards --out pocket/weights`` rebuilds every file
and ``rewards/BUILD.md``; ``--quick`` is the minutes-free version the tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.feedback.registry import register_reward_model
from ...core.feedback.rewards.files import load_reward_file, save_reward_model
from ...core.files import atomic_write_text
from ...core.progress import progress_bar
from ...core.training.reward_models import PreferencePairs, derive_alpha, pair_accuracy, score_pairs, train_reward_model
from .. import WEIGHTS_DIR
from ..world.degrade import ASPECTS, degradation
from ..world.world import VOCABULARY, WorldConfig, render, sample_scene

GLOBAL = "global"
REWARD_SEED, HELD_OUT_SEED = 1, 2
EVALUATOR_SEED, EVALUATOR_VALIDATION_SEED = 101, 102
MODEL_RESOLUTION = 64
"""Side the models see: other sizes are resized (differentiably) to it."""
STRENGTH_RANGE = (0.1, 1.0)
"""Degradation strengths of every pair set: from barely visible to obvious, so rewards grade, not just detect."""
CAPTION_DROPOUT = 0.1
"""Share of training captions replaced by the empty prompt (an unconditioned discriminator's input)."""
MAX_TOKENS = 40
"""Caption tokens kept (pocket captions have at most 29 words; longer prompts are cut)."""

_PAD, _BOS, _UNKNOWN = 0, 1, 2
_WORD_IDS = {word: i + 3 for i, word in enumerate(VOCABULARY)}
_MIRRORED_WORD = {"left": "right", "right": "left", "west": "east", "east": "west"}


def tokenize(prompts: Sequence[str], max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, L], lengths [B])``: a start token, then one id per alphabetic word (unknown words share one id).

    The start token gives an empty prompt (an unconditioned discriminator) a length of one.
    """
    rows = [[_BOS] + [_WORD_IDS.get(w, _UNKNOWN) for w in re.findall("[a-z]+", p.lower())][: max_tokens - 1] for p in prompts]
    ids = torch.full((len(rows), max(map(len, rows))), _PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(row) for row in rows])


def _to_model_input(images: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images at :data:`MODEL_RESOLUTION`, in ``[−1, 1]``; torch ops only, so gradients reach pixels."""
    images = images.float()
    if images.shape[-2:] != (MODEL_RESOLUTION, MODEL_RESOLUTION):
        shrinking = images.shape[-1] > MODEL_RESOLUTION
        images = F.interpolate(images, size=(MODEL_RESOLUTION, MODEL_RESOLUTION), mode="bilinear", align_corners=False, antialias=shrinking)
    return images * 2 - 1


def _coordinates(like: torch.Tensor) -> torch.Tensor:
    """x and y in ``[−1, 1]`` as two channels shaped like ``like`` (CoordConv): layout and light need *where*."""
    b, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1])
    return grid.unsqueeze(0).expand(b, 2, h, w)


class CaptionEncoder(nn.Module):
    """Word embeddings read by a GRU; the state after the last word summarises the caption in order."""

    def __init__(self, width: int):
        super().__init__()
        self.embedding = nn.Embedding(len(VOCABULARY) + 3, width, padding_idx=_PAD)
        self.gru = nn.GRU(width, width, batch_first=True)

    def forward(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        unique = {prompt: i for i, prompt in enumerate(dict.fromkeys(prompts))}  # pairs repeat their caption
        ids, lengths = tokenize(list(unique))
        states, _ = self.gru(self.embedding(ids.to(device)))
        encoded = states[torch.arange(len(ids), device=device), (lengths - 1).to(device)]
        return encoded[torch.tensor([unique[p] for p in prompts], device=device)]


class AspectReward(nn.Module):
    """The reward UniFL trains against: FiLM-conditioned CNN with moment pooling (~83 K parameters).

    ``images [B, 3, H, W]`` in ``[0, 1]``, ``prompts`` → ``[B]`` scores, higher is better; ``alpha``
    (α_d) is set by the loader from the file.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 48, 48), text_width: int = 48):
        super().__init__()
        self.config = {"widths": list(widths), "text_width": text_width}
        self.alpha: float | None = None
        self.text = CaptionEncoder(text_width)
        c1, c2, c3, c4 = widths
        self.stem = nn.Conv2d(12 + 2, c1, 3, padding=1)  # space-to-depth RGB (2×2×3) + coordinates, at 32 px
        self.convs = nn.ModuleList([nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.Conv2d(c3, c4, 3, padding=1)])
        self.norms = nn.ModuleList([nn.GroupNorm(8, c) for c in (c2, c3, c4)])  # per image: no batch statistics
        self.films = nn.ModuleList([nn.Linear(text_width, 2 * c) for c in (c2, c3, c4)])
        for film in self.films:  # start as the identity modulation
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.head = nn.Sequential(nn.Linear(3 * c4 + text_width, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x = F.pixel_unshuffle(_to_model_input(images), 2)
        x = F.silu(self.stem(torch.cat([x, _coordinates(x)], dim=1)))
        text = self.text(prompts, x.device)
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            scale, shift = film(text)[:, :, None, None].chunk(2, dim=1)
            x = F.silu(norm(conv(x)) * (1 + scale) + shift)
        # Mean and first spatial moments: with text-selected channels (FiLM), ``mean(f·x)`` is where the
        # named thing is, which relations ("left of") and light direction are about.
        xy = _coordinates(x)
        moments = [x.mean(dim=(2, 3)), (x * xy[:, :1]).mean(dim=(2, 3)), (x * xy[:, 1:]).mean(dim=(2, 3))]
        return self.head(torch.cat([*moments, text], dim=1)).squeeze(1)


class _ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm(x), 0.2))
        return self.skip(x) + self.conv2(F.leaky_relu(h, 0.2))


class AspectEvaluator(nn.Module):
    """Held-out scorer, a different architecture from :class:`AspectReward` on purpose.

    Strided 5×5 stem on RGB, two group-normalised residual blocks down to 8×8, learned position
    embeddings; each caption token attends over the 64 positions, and the score reads the attended
    image features against the token features (binding "red … left of" to *where red is*), next to
    mean and standard-deviation pooled image statistics.
    """

    def __init__(self, width: int = 32, text_width: int = 32):
        super().__init__()
        self.config = {"width": width, "text_width": text_width}
        self.alpha: float | None = None
        self.stem = nn.Conv2d(3, width // 2, 5, stride=2, padding=2)
        self.blocks = nn.Sequential(_ResidualBlock(width // 2, width), _ResidualBlock(width, width))
        self.position = nn.Parameter(torch.randn(1, width, 8, 8) * 0.1)
        self.embedding = nn.Embedding(len(VOCABULARY) + 3, text_width, padding_idx=_PAD)
        self.token_mixer = nn.Conv1d(text_width, width, 3, padding=1)  # each token sees its neighbours
        self.keys = nn.Conv2d(width, width, 1)
        self.values = nn.Conv2d(width, width, 1)
        self.head = nn.Sequential(nn.Linear(3 * width, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x = F.leaky_relu(self.stem(_to_model_input(images)), 0.2)
        x = self.blocks(x)
        x = x + F.interpolate(self.position, size=x.shape[-2:], mode="bilinear", align_corners=False)
        ids, lengths = tokenize(prompts)
        ids = ids.to(x.device)
        tokens = self.token_mixer(self.embedding(ids).transpose(1, 2)).transpose(1, 2)  # [B, L, C]
        keys, values = self.keys(x).flatten(2), self.values(x).flatten(2)  # [B, C, N]
        attention = torch.softmax(tokens @ keys / keys.shape[1] ** 0.5, dim=-1)  # [B, L, N]
        attended = attention @ values.transpose(1, 2)  # [B, L, C]
        mask = (ids != _PAD).unsqueeze(-1).float()
        agreement = (attended * tokens * mask).sum(1) / lengths.to(x.device).unsqueeze(-1)
        pooled = torch.cat([agreement, x.mean(dim=(2, 3)), x.flatten(2).std(dim=2)], dim=1)
        return self.head(pooled).squeeze(1)


ARCHITECTURES = {"pocket-reward": AspectReward, "pocket-evaluator": AspectEvaluator}


# ------------------------------------------------------------------------------------------- loading


def model_file(kind: str, name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where the build writes model ``name`` (an aspect or ``global``) of ``kind``."""
    return weights_dir / "rewards" / f"{name}.safetensors" if kind == "pocket-reward" else weights_dir / "evaluators" / f"aspect_{name}.safetensors"


def load_pocket_model(kind: str, path: str) -> nn.Module:
    """Build and fill the ``kind`` model of a file; ``path`` is an aspect name (shipped weights) or a file."""
    names = (*ASPECTS, GLOBAL) if kind == "pocket-reward" else ASPECTS
    if not path:
        raise ValueError(f"{kind} needs path = one of {', '.join(names)} (shipped weights) or a .safetensors file")
    file = model_file(kind, path) if path in names else Path(path)
    state, meta = load_reward_file(file)
    if meta.get("unifl.kind") != kind:
        raise ValueError(f"{file} holds a {meta.get('unifl.kind')!r} model, not {kind!r}; load it with kind = {meta.get('unifl.kind')!r}")
    model = ARCHITECTURES[kind](**json.loads(meta["unifl.config"]))
    model.load_state_dict(state)
    model.alpha = float(meta["unifl.alpha"])
    return model


@register_reward_model("pocket-reward")
def _load_reward(path: str = "") -> nn.Module:
    return load_pocket_model("pocket-reward", path)


@register_reward_model("pocket-evaluator")
def _load_evaluator(path: str = "") -> nn.Module:
    return load_pocket_model("pocket-evaluator", path)


# --------------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class LabelledPairs:
    """Pocket pairs with how each was made (for per-variant and subtle/obvious accuracy)."""

    pairs: PreferencePairs
    variants: list[str]
    strengths: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)


def generate_pairs(aspect: str, count: int, seed: int, config: WorldConfig = WorldConfig(MODEL_RESOLUTION), progress: bool = True) -> LabelledPairs:
    """``count`` pairs of one aspect; pair ``i`` depends only on ``(seed, aspect, i)`` (quick sets are prefixes).

    Same recipe as :func:`.degrade.preference_pair` (fresh scene, rendered, degraded in ``aspect``),
    with strengths from :data:`STRENGTH_RANGE` and the variant kept. Images are stored as float16.
    """
    side = config.resolution
    better = torch.empty(count, 3, side, side, dtype=torch.float16)
    worse = torch.empty_like(better)
    prompts, variants, strengths = [], [], []
    for i in progress_bar(range(count), desc=f"pairs {aspect} seed {seed}", disable=not progress, dynamic_ncols=True, leave=False):
        rng = np.random.default_rng([seed, ASPECTS.index(aspect), i])
        strength = float(rng.uniform(*STRENGTH_RANGE))
        sample = render(sample_scene(rng, config), config)
        made = degradation(sample, aspect, rng, strength, config)
        better[i], worse[i] = sample.image, made.image
        prompts.append(sample.caption)
        variants.append(made.variant)
        strengths.append(strength)
    return LabelledPairs(PreferencePairs(prompts, better, worse), variants, torch.tensor(strengths))


def mirror_left_right(batch: PreferencePairs, generator: torch.Generator) -> PreferencePairs:
    """Flip a random half of the pairs left–right and swap "left"/"right" and "west"/"east" in their captions.

    Mirroring keeps every pocket pair truthful — relations, light direction, shapes (all left–right
    symmetric up to their random rotation) — so it is free extra data. Vertical flips are not: they
    would turn triangles and stars upside down, which the world never draws.
    """
    flip = torch.rand(len(batch), generator=generator) < 0.5
    if not flip.any():
        return batch
    better, worse = batch.better.clone(), batch.worse.clone()
    better[flip], worse[flip] = better[flip].flip(-1), worse[flip].flip(-1)
    prompts = [" ".join(_MIRRORED_WORD.get(w, w) for w in p.split()) if f else p for p, f in zip(batch.prompts, flip.tolist())]
    return PreferencePairs(prompts, better, worse, batch.preference)


def drop_captions(batch: PreferencePairs, generator: torch.Generator, share: float = CAPTION_DROPOUT) -> PreferencePairs:
    """Replace a random ``share`` of the captions with the empty prompt.

    Stage 2 may run the discriminator (a copy of the detail reward) without prompts
    (``adversarial.discriminator_text_conditioned = false``); a model that met empty prompts in
    training scores them sensibly instead of reading an unseen text code.
    """
    drop = (torch.rand(len(batch), generator=generator) < share).tolist()
    return replace(batch, prompts=["" if d else p for p, d in zip(batch.prompts, drop)])


def augment_pairs(batch: PreferencePairs, generator: torch.Generator) -> PreferencePairs:
    """The build's training augmentation: :func:`mirror_left_right`, then :func:`drop_captions`."""
    return drop_captions(mirror_left_right(batch, generator), generator)


# --------------------------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildSettings:
    """Sizes of one build; :meth:`quick` shrinks every count to a smoke test of the whole pipeline."""

    train_pairs: int = 2500
    """Training pairs per aspect and seed (the global model trains on all four aspects' pairs)."""
    held_out_pairs: int = 500
    """Held-out pairs per aspect, for accuracy and α_d (seed 2; evaluators: validation seed 102)."""
    tie_share: float = 0.2
    """Share of each *other* aspect's training pairs an aspect model also sees, as ties (decoupling)."""
    steps: int = 300
    """Optimizer steps per aspect reward model."""
    global_steps: int = 600
    """Steps of the global reward model (four aspects' pairs)."""
    evaluator_steps: int = 300
    """Steps per held-out evaluator."""
    batch_size: int = 32
    lr: float = 3e-3
    alpha_quantiles: tuple[tuple[str, float], ...] = ()
    """``(name, q)``: α_d = q-quantile of the preferred rewards instead of their mean (e.g. ``("detail", 0.25)``)."""

    @staticmethod
    def quick() -> BuildSettings:
        return BuildSettings(train_pairs=32, held_out_pairs=16, steps=4, global_steps=4, evaluator_steps=4, batch_size=8)


def decoupled_training_set(aspect: str, train: dict[str, LabelledPairs], tie_share: float) -> PreferencePairs:
    """``aspect``'s own pairs as preferences plus a share of every other aspect's pairs as ties.

    Bradley–Terry on own pairs alone learns "clean beats degraded" in general: every preferred image
    is a pristine render, so sensitivity to *any* flaw lowers the loss and the colour model ends up
    judging blur too. A tie pair (two images differing only in another aspect, preference ½) costs
    loss unless the model scores them equally, which is what decoupled aspect rewards mean.
    """
    ties = [pairs.pairs.select(range(round(tie_share * len(pairs)))).with_preference(0.5) for name, pairs in train.items() if name != aspect]
    return PreferencePairs.concat([train[aspect].pairs.with_preference(1.0), *ties])


def evaluate(model: nn.Module, labelled: LabelledPairs) -> dict[str, float]:
    """Held-out accuracy overall, on subtle (strength < 0.5) and obvious pairs and per variant, and the mean margin."""
    r_w, r_l = score_pairs(model, labelled.pairs)
    right = (r_w > r_l).float() + 0.5 * (r_w == r_l).float()
    groups = {"all": torch.ones_like(right, dtype=torch.bool), "subtle": labelled.strengths < 0.5, "obvious": labelled.strengths >= 0.5}
    groups |= {variant: torch.tensor([v == variant for v in labelled.variants]) for variant in dict.fromkeys(labelled.variants)}
    return {name: float(right[mask].mean()) for name, mask in groups.items() if mask.any()} | {"margin": float((r_w - r_l).mean())}


def _train_and_save(kind: str, name: str, train: PreferencePairs, held_out: PreferencePairs, steps: int, seed: int, settings: BuildSettings, out: Path) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    model = ARCHITECTURES[kind]()
    started = time.perf_counter()
    log = train_reward_model(model, train, steps, lr=settings.lr, batch_size=settings.batch_size, augment=augment_pairs, seed=seed, progress=f"{kind} {name}")
    seconds = time.perf_counter() - started
    quantile = dict(settings.alpha_quantiles).get(name)
    model.alpha = derive_alpha(model, held_out, quantile)
    r_w, r_l = score_pairs(model, held_out)
    stats = {
        "held_out_accuracy": pair_accuracy(model, held_out),
        "alpha": model.alpha,
        "alpha_rule": "mean" if quantile is None else f"quantile {quantile}",
        "mean_preferred": float(r_w.mean()),
        "mean_worse": float(r_l.mean()),
        "final_train_loss": log.recent()[0],
        "train_seconds": seconds,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save_reward_model(
        model, model_file(kind, name, out), kind=kind, alpha=model.alpha, aspect=name, config=model.config,
        metadata={"val_accuracy": round(stats["held_out_accuracy"], 4), "alpha_rule": stats["alpha_rule"], "train_seed": seed, "steps": steps},
    )
    return model, stats


def _train_family(kind: str, seed: int, held_out_seed: int, steps: int, settings: BuildSettings, out: Path, progress: bool, with_global: bool) -> dict:
    """One seed's pairs → four decoupled aspect models (and the global one); stats and cross-aspect results."""
    held_out = {a: generate_pairs(a, settings.held_out_pairs, held_out_seed, progress=progress) for a in ASPECTS}
    train = {a: generate_pairs(a, settings.train_pairs, seed, progress=progress) for a in ASPECTS}
    models, stats = {}, {}
    for index, aspect in enumerate(ASPECTS):
        training_set = decoupled_training_set(aspect, train, settings.tie_share)
        models[aspect], stats[aspect] = _train_and_save(kind, aspect, training_set, held_out[aspect].pairs, steps, seed * 1000 + index, settings, out)
    if with_global:
        everything = PreferencePairs.concat([train[a].pairs for a in ASPECTS])
        all_held_out = PreferencePairs.concat([held_out[a].pairs for a in ASPECTS])
        models[GLOBAL], stats[GLOBAL] = _train_and_save(kind, GLOBAL, everything, all_held_out, settings.global_steps, seed * 1000 + 99, settings, out)
    cross = {name: {aspect: evaluate(model, held_out[aspect]) for aspect in ASPECTS} for name, model in models.items()}
    return {"stats": stats, "cross": cross}


def build(out: Path = WEIGHTS_DIR, settings: BuildSettings = BuildSettings(), progress: bool = True, command: str = "") -> dict:
    """Train and write the four aspect rewards, the global reward and the four evaluators; returns the report."""
    started = time.perf_counter()
    out = Path(out)
    report = {
        "settings": settings,
        "rewards": _train_family("pocket-reward", REWARD_SEED, HELD_OUT_SEED, settings.steps, settings, out, progress, with_global=True),
        "evaluators": _train_family("pocket-evaluator", EVALUATOR_SEED, EVALUATOR_VALIDATION_SEED, settings.evaluator_steps, settings, out, progress, with_global=False),
        "wall_seconds": time.perf_counter() - started,
    }
    atomic_write_text(out / "rewards" / "BUILD.md", _build_markdown(report, command))
    return report


def _build_markdown(report: dict, command: str) -> str:
    settings: BuildSettings = report["settings"]
    rewards, evaluators = report["rewards"], report["evaluators"]

    def percent(value: float) -> str:
        return f"{100 * value:.1f}"

    def cross_table(family: dict) -> list[str]:
        rows = ["| model | " + " | ".join(ASPECTS) + " |", "|---|" + "---|" * len(ASPECTS)]
        for name, row in family["cross"].items():
            rows.append(f"| {name} | " + " | ".join(f"{percent(row[a]['all'])} ({row[a]['margin']:+.2f})" for a in ASPECTS) + " |")
        return rows

    lines = [
        "# Pocket-world aspect reward models",
        "",
        "Written by `python -m unifl.pocket.models.rewards`; every number below was measured by that run.",
        "",
        f"- command: `{command or 'build()'}`",
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores shared with other jobs, "
        f"torch {torch.__version__} on CPU, {torch.get_num_threads()} thread(s)",
        f"- wall time: {report['wall_seconds']:.0f} s (pair generation, training, evaluation, writing)",
        f"- pairs: {settings.train_pairs} training and {settings.held_out_pairs} held-out pairs per aspect and seed, "
        f"{MODEL_RESOLUTION} px, strength ~ U{STRENGTH_RANGE}; each aspect model also sees the first {settings.tie_share:.0%} of every "
        "other aspect's training pairs as ties (preference ½); training batches mirrored left–right with \"left\"/\"right\" and \"west\"/\"east\" swapped, "
        f"{CAPTION_DROPOUT:.0%} of captions emptied",
        f"- rewards (`pocket-reward`, what UniFL trains against): pair seed {REWARD_SEED}, held-out seed {HELD_OUT_SEED}; "
        f"{settings.steps} steps per aspect, {settings.global_steps} for `global` (all aspects' pairs, no ties), "
        f"batch {settings.batch_size} pairs, AdamW lr {settings.lr} with warm-up and cosine decay",
        f"- evaluators (`pocket-evaluator`, a different architecture): pair seed {EVALUATOR_SEED}, validation seed "
        f"{EVALUATOR_VALIDATION_SEED}, {settings.evaluator_steps} steps each. For evaluation only: never train against them.",
        "",
        "## Rewards",
        "",
        "| model | params | held-out acc % | subtle % | obvious % | α_d (rule) | mean r(preferred) | mean r(worse) | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stats in rewards["stats"].items():
        own = rewards["cross"][name].get(name)
        subtle, obvious = (percent(own["subtle"]), percent(own["obvious"])) if own else ("–", "–")
        lines.append(
            f"| {name} | {stats['parameters']:,} | {percent(stats['held_out_accuracy'])} | {subtle} | {obvious} | "
            f"{stats['alpha']:.3f} ({stats['alpha_rule']}) | {stats['mean_preferred']:.3f} | {stats['mean_worse']:.3f} | {stats['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "## Cross-aspect held-out accuracy % (mean margin r_w − r_l); rows: model, columns: whose pairs",
        "",
        "Decoupling shows as a high diagonal and, off it, accuracy near 50 with margins small next to the diagonal's: "
        "the model barely reacts to other aspects. Accuracy counts signs only, so a small consistent margin still reads "
        "well above 50; the margin says how hard the reward would push that other aspect.",
        "",
        *cross_table(rewards),
        "",
        "## Held-out accuracy % per degradation variant (aspect model; global model)",
        "",
    ]
    for aspect in ASPECTS:
        own, shared = rewards["cross"][aspect][aspect], rewards["cross"][GLOBAL][aspect]
        variants = [k for k in own if k not in ("all", "subtle", "obvious", "margin")]
        lines.append(f"- {aspect}: " + ", ".join(f"{v} {percent(own[v])}; {percent(shared[v])}" for v in variants))
    lines += [
        "",
        "## Evaluators (held-out scorers)",
        "",
        "| evaluator | params | validation acc % | α_d | train s |",
        "|---|---|---|---|---|",
    ]
    for aspect, stats in evaluators["stats"].items():
        lines.append(f"| aspect_{aspect} | {stats['parameters']:,} | {percent(stats['held_out_accuracy'])} | {stats['alpha']:.3f} | {stats['train_seconds']:.0f} |")
    lines += ["", "Cross-aspect validation accuracy % (mean margin):", "", *cross_table(evaluators), ""]
    return "\n".join(lines)


def _parse_quantile(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in (*ASPECTS, GLOBAL) or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=Q with NAME in {(*ASPECTS, GLOBAL)}, got {text!r}")
    return name, float(value)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m unifl.pocket.models.rewards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (writes rewards/ and evaluators/ under it)")
    parser.add_argument("--quick", action="store_true", help="tiny pair sets and few steps: a smoke build, not usable weights")
    parser.add_argument("--alpha-quantile", type=_parse_quantile, action="append", default=[], metavar="NAME=Q",
                        help="α_d = Q-quantile of the preferred rewards for NAME instead of their mean, e.g. detail=0.25")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = replace(BuildSettings.quick() if args.quick else BuildSettings(), alpha_quantiles=tuple(args.alpha_quantile))
    command = "python -m unifl.pocket.models.rewards " + " ".join(argv if argv is not None else sys.argv[1:])
    report = build(args.out, settings, command=command.strip())
    print(f"wrote {args.out}/rewards and {args.out}/evaluators in {report['wall_seconds']:.0f} s")
    for family in ("rewards", "evaluators"):
        for name, stats in report[family]["stats"].items():
            print(f"  {family[:-1]} {name:8s} held-out accuracy {stats['held_out_accuracy']:.3f}  alpha {stats['alpha']:.3f}")
    return report


if __name__ == "__main__":
    main()
