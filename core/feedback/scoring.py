"""``unifl score``: score images with reward models, from the command line or from Python.

For comparing a base model's samples with a UniFL LoRA's, for choosing a reward's hinge threshold α_d
from the scores of images you consider good, and for checking that a reward model's files load and
score sensibly before a long training run. Rewards are named as in a config: a kind and a local path
(``aesthetic=laion-aesthetic:/models/laion``); each is loaded, run over every image and released
before the next, so two large CLIP models never share memory.

Prompts matter to the prompt-aware scorers (PickScore, CLIP score, HPSv2, ImageReward): one prompt for
all images (``--prompt``), or each image's caption from the ``.txt`` file beside it (``--prompts-from
captions``, the training-data convention). Without either, every prompt is empty.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from ..data import IMAGE_SUFFIXES
from ..files import atomic_write_text, read_text
from ..images import ImageReadError, read_rgb, rgb_array

MASK_SUFFIXES = (".instances.png", ".semantic.png")


class ScoreError(ValueError):
    """Bad input to ``unifl score`` (an image, caption or ``--reward`` spec), with the fix."""


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files, and the images directly inside folders (sorted; PeFL mask files skipped)."""
    images: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIXES))
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif path.exists():
            raise ScoreError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a folder of images")
        else:
            raise ScoreError(f"{path}: no such file or folder")
    if not images:
        raise ScoreError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return images


def caption_prompts(images: Sequence[Path]) -> list[str]:
    """Each image's caption: the text of the ``.txt`` file with the same name beside it."""
    missing = [image for image in images if not image.with_suffix(".txt").is_file()]
    if missing:
        raise ScoreError(f"{len(missing)} image(s) have no caption file, e.g. {missing[0]}: add {missing[0].with_suffix('.txt').name}, or give --prompt")
    return [read_text(image.with_suffix(".txt"), "caption file").strip() for image in images]


def parse_reward_spec(spec: str) -> tuple[str, str, str]:
    """``"NAME=KIND:PATH"`` (or ``"NAME=KIND"`` for a weight-free kind) → ``(name, kind, path)``."""
    name, equals, rest = spec.partition("=")
    kind, _, path = rest.partition(":")
    if not equals or not name.strip() or not kind.strip():
        raise ScoreError(f"--reward {spec!r}: expected NAME=KIND:PATH, e.g. aesthetic=laion-aesthetic:/models/laion (or NAME=KIND for a kind without files)")
    return name.strip(), kind.strip(), path.strip()


def load_image(path: Path) -> torch.Tensor:
    """``[3, H, W]`` RGB in ``[0, 1]``, upright as the photo's EXIF orientation says (:func:`~unifl.core.images.read_rgb`)."""
    try:
        return torch.from_numpy(rgb_array(read_rgb(path))).permute(2, 0, 1)
    except ImageReadError as err:
        raise ScoreError(str(err)) from None


def score_images(
    image_paths: Sequence[str | Path],
    rewards: Mapping[str, tuple[str, str]],
    prompts: Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """One row per image: ``{"image", "prompt", <reward name>: score, …}``.

    ``rewards`` maps a column name to ``(kind, path)`` as a config's ``[[rewards]]`` gives them;
    ``prompts`` has one entry per image (default: empty prompts).
    """
    from .loading import load_reward_model

    paths = [Path(p) for p in image_paths]
    prompts = list(prompts) if prompts is not None else [""] * len(paths)
    if len(prompts) != len(paths):
        raise ScoreError(f"got {len(prompts)} prompt(s) for {len(paths)} image(s); give one per image")
    rows = [{"image": str(path), "prompt": prompt} for path, prompt in zip(paths, prompts)]
    for name, (kind, path) in rewards.items():
        model = load_reward_model(kind, path).to(device)
        for indices, images in _batches(paths, batch_size):
            with torch.no_grad():
                scores = model(images.to(device), [prompts[i] for i in indices])
            if not isinstance(scores, torch.Tensor) or scores.shape != (len(indices),):
                raise ScoreError(f"reward {name!r} ({kind}) returned {getattr(scores, 'shape', type(scores).__name__)} for {len(indices)} image(s); a reward model returns one score per image, shape [B]")
            for i, score in zip(indices, scores.float().cpu().tolist()):
                rows[i][name] = score
        del model
    return rows


def _batches(paths: Sequence[Path], batch_size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Consecutive images of one size, at most ``batch_size`` at a time, with their indices."""
    indices: list[int] = []
    images: list[torch.Tensor] = []
    for index, path in enumerate(paths):
        image = load_image(path)
        if images and (image.shape != images[0].shape or len(images) == batch_size):
            yield indices, torch.stack(images)
            indices, images = [], []
        indices.append(index)
        images.append(image)
    if images:
        yield indices, torch.stack(images)


def format_table(rows: Sequence[dict], names: Sequence[str]) -> str:
    """A plain-text table: one line per image, a score column per reward, and the means."""
    header = ["image", *names]
    body = [[row["image"], *(f"{row[name]:.4f}" for name in names)] for row in rows]
    means = ["mean", *(f"{np.mean([row[name] for row in rows]):.4f}" for name in names)]
    widths = [max(len(line[i]) for line in (header, *body, means)) for i in range(len(header))]
    rule = ["-" * width for width in widths]
    return "\n".join(_table_line(cells, widths) for cells in (header, rule, *body, rule, means))


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Names left-aligned, numbers right-aligned."""
    return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths)))


def score_paths(out: str | Path) -> tuple[Path, Path]:
    """The two files :func:`write_scores` writes for ``out``: ``OUT.csv`` and ``OUT.json`` (``out``'s own
    ``.csv``/``.json`` suffix dropped first)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".csv", ".json") else out
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")


def write_scores(rows: Sequence[dict], rewards: Mapping[str, tuple[str, str]], out: str | Path) -> tuple[Path, Path]:
    """``OUT.csv`` (image, prompt, one column per reward) and ``OUT.json`` (rows, rewards, means)."""
    csv_path, json_path = score_paths(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image", "prompt", *rewards], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    summary = {
        "rewards": {name: {"kind": kind, "path": path} for name, (kind, path) in rewards.items()},
        "mean": {name: float(np.mean([row[name] for row in rows])) for name in rewards},
        "images": list(rows),
    }
    atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")
    return csv_path, json_path
