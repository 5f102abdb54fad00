"""Training data: real images with captions (and masks for PeFL), and prompt lists.

Folder format (documented in ``docs/data-format.md``)::

    data/
      0001.png                 the image (png/jpg/jpeg/webp)
      0001.txt                 its caption (required)
      0001.instances.png       optional: instance ids, 0 = background, k = instance k (8- or 16-bit)
      0001.instances.json      with it: {"labels": [class of instance 1, class of instance 2, …]}
      0001.semantic.png        optional: semantic class per pixel, 255 = ignore

Batches are chosen by a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .files import read_text
from .images import ImageReadError, check_rgb_readable, read_label_map, read_rgb, rgb_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: An image is enlarged at most this much (its short side to ``data.resolution``): a 1x1 image, or a
#: 1-pixel-wide strip, would teach flat colour; below it the folder is refused, naming the image.
MAX_UPSCALE = 8
#: Beyond this ratio of long to short side the centre crop keeps under a quarter of an image: a warning names them.
WARN_ASPECT_RATIO = 4
log = logging.getLogger("unifl")


class DataError(ValueError):
    """Bad training data, with the file named and the fix."""


def _is_mask_file(path: Path) -> bool:
    return path.name.endswith((".instances.png", ".semantic.png"))


def _resize_crop(img: Image.Image, resolution: int, resample) -> Image.Image:
    scale = resolution / min(img.size)
    size = (max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale)))
    img = img.resize(size, resample)
    left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images + captions (+ instance/semantic masks) from a folder, resized and centre-cropped."""

    def __init__(self, folder: str | Path, resolution: int):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"image folder {self.folder} does not exist; set data.images to a folder of images with .txt captions, or to a source name ('pocket')")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not _is_mask_file(p))
        if not self.paths:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        missing = [p for p in self.paths if not p.with_suffix(".txt").is_file()]
        if missing:
            raise DataError(f"{len(missing)} image(s) in {self.folder} have no caption file, e.g. {missing[0].name}: add {missing[0].with_suffix('.txt').name} with its caption")
        elongated = []
        for path in self.paths:  # headers only: an unreadable, unconvertible or tiny file stops the run now, not hours in
            try:
                width, height = check_rgb_readable(path)
            except ImageReadError as err:
                raise DataError(str(err)) from None
            if min(width, height) * MAX_UPSCALE < resolution:
                raise DataError(f"{path}: {width}x{height} pixels; training at data.resolution = {resolution} would enlarge it more than {MAX_UPSCALE} times: "
                                f"use images at least {-(-resolution // MAX_UPSCALE)} px on the short side, or remove it")
            if max(width, height) > WARN_ASPECT_RATIO * min(width, height):
                elongated.append(f"{path.name} ({width}x{height})")
        if elongated:
            log.warning("UniFL: %d image(s) in %s are more than %d times as long as wide, e.g. %s: training sees only their centre square",
                        len(elongated), self.folder, WARN_ASPECT_RATIO, elongated[0])
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def captions(self) -> list[str]:
        return [self._caption(p) for p in self.paths]

    def _caption(self, path: Path) -> str:
        return read_text(path.with_suffix(".txt"), "caption file").strip()

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = read_rgb(path)
        except ImageReadError as err:
            raise DataError(str(err)) from None
        item = {"caption": self._caption(path), "path": str(path)}
        item["image"] = torch.from_numpy(rgb_array(_resize_crop(image, self.resolution, Image.BICUBIC))).permute(2, 0, 1)
        stem = path.with_suffix("")
        instances = Path(f"{stem}.instances.png")
        if instances.is_file():
            ids = self._mask(instances, image.size)
            labels_file = Path(f"{stem}.instances.json")
            if not labels_file.is_file():
                raise DataError(f"{instances} has no {labels_file.name} with the instance labels: write {{\"labels\": [class of instance 1, …]}}")
            labels = _instance_labels(labels_file)
            present = [k for k in range(1, len(labels) + 1) if (ids == k).any()]
            item["instance_masks"] = torch.stack([ids == k for k in present]) if present else torch.zeros(0, *ids.shape, dtype=torch.bool)
            item["instance_labels"] = torch.tensor([labels[k - 1] for k in present], dtype=torch.long)
        semantic = Path(f"{stem}.semantic.png")
        if semantic.is_file():
            item["semantic_mask"] = self._mask(semantic, image.size)
        return item

    def _mask(self, path: Path, image_size: tuple[int, int]) -> torch.Tensor:
        try:
            mask = read_label_map(path)
        except ImageReadError as err:
            raise DataError(str(err)) from None
        if mask.size != image_size:
            raise DataError(f"mask {path} is {mask.size[0]}x{mask.size[1]} but its image is {image_size[0]}x{image_size[1]}: masks must have the image's size")
        return torch.from_numpy(np.asarray(_resize_crop(mask, self.resolution, Image.NEAREST)).astype(np.int64))


def _instance_labels(path: Path) -> list[int]:
    """The ``labels`` list of an ``.instances.json`` file: one integer class a instance."""
    try:
        labels = json.loads(read_text(path, "instance labels file"))["labels"]
    except (json.JSONDecodeError, KeyError, TypeError):
        labels = None
    if not (isinstance(labels, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels)):
        raise DataError(f"{path}: expected {{\"labels\": [class of instance 1, class of instance 2, …]}} with non-negative integers")
    return labels


#: Procedural image sources named by a word in ``data.images`` (the pocket world registers ``"pocket"``):
#: name → ``factory(count, seed, resolution)`` returning a dataset of training items.
IMAGE_SOURCES: dict[str, Callable[[int, int, int], torch.utils.data.Dataset]] = {}


def register_image_source(name: str, factory: Callable[[int, int, int], torch.utils.data.Dataset]) -> None:
    IMAGE_SOURCES[name] = factory


def image_dataset(images: str, resolution: int, source_images: int, source_seed: int) -> torch.utils.data.Dataset:
    """A registered source's images (``source_images`` of them, seeded) or an image folder."""
    if images in IMAGE_SOURCES:
        return IMAGE_SOURCES[images](source_images, source_seed, resolution)
    return ImageFolderDataset(images, resolution)


def collate(items: Sequence[dict]) -> dict:
    """Stack images; keep captions and per-image masks (variable instance counts) as lists."""
    batch = {"image": torch.stack([it["image"] for it in items]), "caption": [it["caption"] for it in items]}
    if all("instance_masks" in it for it in items):
        batch["targets"] = [{"masks": it["instance_masks"], "labels": it["instance_labels"]} for it in items]
    if all("semantic_mask" in it for it in items):
        batch["semantic_mask"] = torch.stack([it["semantic_mask"] for it in items])
    return batch


def load_prompts(path: str | Path, fix: str = "set data.prompts to a text file with one prompt per line") -> list[str]:
    """The non-blank lines of a prompt file, stripped; a missing file (``fix`` says what to do) or one
    without a prompt is refused."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"prompt file {path} does not exist; {fix}")
    prompts = [line.strip() for line in read_text(path, "prompt file").splitlines() if line.strip()]
    if not prompts:
        raise DataError(f"prompt file {path} is empty: it needs at least one prompt, one per line")
    return prompts


def batch_indices(seed: int, micro_step: int, batch_size: int, size: int, *, stream: int = 0, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset indices of one micro-batch: epochs are seeded permutations, walked in order.

    A pure function of its arguments, which is what makes ``--resume`` exact: no sampler state to save.
    ``micro_step`` counts micro-batches since the start of training, ``stream`` separates independent
    data streams (real images vs prompts), ``rank``/``world`` shard the global batch across processes.
    """
    first = micro_step * batch_size * world + rank * batch_size
    out = []
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(hash((seed, stream, epoch)) & 0x7FFFFFFF))
        out.append(int(order[offset]))
    return out
