"""Small image utilities: tensors ↔ PIL, grids, atomic PNG writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write_bytes


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """BCHW float in [0, 1] → RGB PIL images."""
    arrays = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def grid(images: torch.Tensor, columns: int) -> Image.Image:
    """One image with the batch laid out row by row (diffusers' ``make_image_grid``; a last row that is
    not full is filled with white tiles)."""
    from diffusers.utils import make_image_grid

    tiles = to_pil(images)
    rows = (len(tiles) + columns - 1) // columns
    tiles += [Image.new("RGB", tiles[0].size, "white")] * (rows * columns - len(tiles))
    return make_image_grid(tiles, rows=rows, cols=columns)


def save_png(image: Image.Image, path: str | Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 4) -> Path:
    return save_png(grid(images, columns), path)
