"""Preference pairs from a JSONL file (``docs/preference-pairs.md``), one pair per line, image paths
relative to the file::

    {"prompt": "a cat on a sofa", "image_a": "img/0001a.png", "image_b": "img/0001b.png", "preferred": "a", "aspect": "color"}

``preferred`` is ``"a"``, ``"b"`` or ``"tie"`` (a tie teaches a model what its aspect is *not* about).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import DataError
from ..files import read_text
from ..images import ImageReadError, read_rgb
from .reward_models import PreferencePairs

REQUIRED_KEYS = ("prompt", "image_a", "image_b", "preferred", "aspect")


def read_pairs(path: str | Path, resolution: int) -> dict[str, PreferencePairs]:
    """Pairs by aspect, images resized to ``resolution``²; every bad row is reported with its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pair file {path} does not exist")
    rows, problems = [], []
    for number, line in enumerate(read_text(path, "pair file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: not JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: a {type(row).__name__}, not a JSON object")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            problems.append(f"line {number}: missing {', '.join(missing)}")
            continue
        not_text = [k for k in REQUIRED_KEYS if not isinstance(row[k], str)]
        if not_text:
            problems.append(f"line {number}: {', '.join(not_text)} must be text")
            continue
        if row["preferred"] not in ("a", "b", "tie"):
            problems.append(f"line {number}: preferred = {row['preferred']!r}, use 'a', 'b' or 'tie'")
            continue
        for key in ("image_a", "image_b"):
            if not (path.parent / row[key]).is_file():
                problems.append(f"line {number}: {key} {path.parent / row[key]} does not exist")
        rows.append(row)
    if len(problems) == 1:
        raise DataError(f"{path}: {problems[0]}")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(f"{path}: {len(problems)} bad row(s):\n  {shown}")
    if not rows:
        raise DataError(f"{path} holds no pairs")
    by_aspect: dict[str, list[dict]] = {}
    for row in rows:
        by_aspect.setdefault(row["aspect"], []).append(row)
    return {aspect: _to_pairs(path.parent, group, resolution) for aspect, group in by_aspect.items()}


def _load_image(path: Path, resolution: int) -> torch.Tensor:
    try:
        image = read_rgb(path).resize((resolution, resolution), Image.BICUBIC)
    except ImageReadError as err:
        raise DataError(str(err)) from None
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def _to_pairs(root: Path, rows: list[dict], resolution: int) -> PreferencePairs:
    # "better" is the preferred image; for a tie the order is arbitrary and the preference ½.
    better = [row["image_b"] if row["preferred"] == "b" else row["image_a"] for row in rows]
    worse = [row["image_a"] if row["preferred"] == "b" else row["image_b"] for row in rows]
    stack = lambda names: torch.stack([_load_image(root / n, resolution) for n in names]).to(torch.float16) / 255  # noqa: E731
    preference = torch.tensor([0.5 if row["preferred"] == "tie" else 1.0 for row in rows])
    return PreferencePairs([row["prompt"] for row in rows], stack(better), stack(worse), preference)


def split(pairs: PreferencePairs, fraction: float, seed: int) -> tuple[PreferencePairs, PreferencePairs]:
    """A seeded train/validation split; at least one pair on each side."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    held = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    if len(pairs) < 2:
        raise DataError(f"{len(pairs)} pair(s) cannot be split into training and validation; add pairs or pass --val")
    return pairs.select(order[held:]), pairs.select(order[:held])
