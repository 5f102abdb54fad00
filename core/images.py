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


def grid(images: torch.Tensor, columns: int, padding: int = 2) -> Image.Image:
    """One image with the batch laid out row by row on a white background."""
    tiles = to_pil(images)
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (w + padding) + padding, rows * (h + padding) + padding), "white")
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas.paste(tile, (padding + c * (w + padding), padding + r * (h + padding)))
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 4) -> Path:
    return save_png(grid(images, columns), path)
