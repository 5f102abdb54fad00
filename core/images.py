"""Small image utilities: the one reader of image files, tensors ↔ PIL, grids, atomic PNG writes."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from .files import NotARegularFile, atomic_write_bytes, open_regular

#: What transparent pixels become: images with alpha are composited onto white, as A1111 flattens a
#: transparent img2img input (its ``img2img_background_color`` defaults to #ffffff). The colour a PNG
#: stores under a transparent pixel is arbitrary, often black or left-over paint: never train on it.
TRANSPARENT_BACKGROUND = (255, 255, 255)
#: Modes Pillow converts to RGB faithfully on its own.
_PLAIN_MODES = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
#: 16-bit greyscale (``I`` is how Pillow holds a 16-bit PNG read as 32-bit integers).
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
#: Modes a mask (one class or instance id a pixel) may have.
LABEL_MODES = {"1", "L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageReadError(ValueError):
    """An image file UniFL cannot read, or cannot read as the colours it shows; the message names the file and the fix."""


def read_rgb(path: str | Path) -> Image.Image:
    """The image file at ``path`` as 8-bit RGB, upright as its EXIF orientation says.

    Every mode Pillow opens is converted for what it means (see :func:`to_rgb`) or refused with an
    :class:`ImageReadError` naming the file: 16-bit images are scaled, not clipped to white, and
    transparent pixels are composited onto :data:`TRANSPARENT_BACKGROUND`.
    """
    with _opened(path) as image:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image), path)


def check_rgb_readable(path: str | Path) -> tuple[int, int]:
    """Refuse, from its header alone, an image :func:`read_rgb` would refuse (not an image, a float or
    unknown mode); return its stored ``(width, height)``. A data folder is checked when a run starts,
    not hours into it. Damaged pixel data is only found when the image is decoded."""
    with _opened(path) as image:
        _check_mode(image.mode, path)
        return image.size


@contextmanager
def _opened(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open`` of a regular file (a named pipe would block for ever) whose every failure, while
    opening or decoding, is an :class:`ImageReadError` naming the file."""
    try:
        with open_regular(path, "image") as fh, Image.open(fh) as image:
            yield image
    except NotARegularFile as err:
        raise ImageReadError(str(err)) from None
    except ImageReadError:
        raise
    except Exception as err:  # Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error, DecompressionBombError …
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def _check_mode(mode: str, name: str | Path) -> None:
    if mode == "F":
        raise ImageReadError(f"{name}: 32-bit floating-point pixels have no standard range (depth or HDR data?); save it as an 8- or 16-bit PNG")
    if mode not in _PLAIN_MODES | _ALPHA_MODES | _SIXTEEN_BIT_MODES:
        raise ImageReadError(f"{name}: Pillow reads it as mode {mode!r}, which UniFL does not convert; save it as an 8-bit RGB PNG or JPEG")


def to_rgb(image: Image.Image, name: str | Path = "image") -> Image.Image:
    """``image`` as 8-bit RGB: alpha composited onto white, 16-bit grey scaled by 1/257, other modes by Pillow."""
    mode = image.mode
    _check_mode(mode, name)
    if mode in _ALPHA_MODES or "transparency" in image.info:  # tRNS: a palette or colour key marked transparent
        rgba = image.convert("LA").convert("RGBA") if mode == "La" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{name}: 32-bit integer pixels ({values.min()} … {values.max()}) outside the 16-bit range; save it as an 8- or 16-bit PNG")
        return Image.fromarray(np.rint(values / 257).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def read_label_map(path: str | Path) -> Image.Image:
    """A mask file (one instance or class id a pixel): 8/16-bit grey or palette, returned as Pillow reads it."""
    with _opened(path) as image:
        image.load()
        mask = image.copy()
    if mask.mode not in LABEL_MODES:
        raise ImageReadError(f"mask {path} is a {mask.mode} image, but a mask holds one id a pixel: save it as an 8- or 16-bit greyscale or palette PNG")
    return mask


def rgb_array(image: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` float32 in ``[0, 1]`` of an RGB image."""
    return np.asarray(image, dtype=np.float32) / 255.0


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
