"""A stand-in for the few torchvision calls the peers' data loaders make (torchvision does not import beside
the CPU torch here). Not named ``torchvision``: transformers would then believe torchvision exists."""

from __future__ import annotations

import enum
import random
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image


class InterpolationMode(enum.Enum):
    NEAREST = Image.NEAREST
    BILINEAR = Image.BILINEAR
    BICUBIC = Image.BICUBIC
    LANCZOS = Image.LANCZOS


def resize(image: Image.Image, size, interpolation=InterpolationMode.BILINEAR) -> Image.Image:
    """Shorter side to ``size`` (an int), as torchvision's ``resize``."""
    size = size[0] if isinstance(size, (list, tuple)) else size
    w, h = image.size
    scale = size / min(w, h)
    resample = interpolation.value if isinstance(interpolation, InterpolationMode) else interpolation
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def crop(image: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    return image.crop((left, top, left + width, top + height))


def center_crop(image: Image.Image, size) -> Image.Image:
    size = size[0] if isinstance(size, (list, tuple)) else size
    w, h = image.size
    return crop(image, (h - size) // 2, (w - size) // 2, size, size)


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    mean, std = torch.as_tensor(mean).view(-1, 1, 1), torch.as_tensor(std).view(-1, 1, 1)
    return (tensor - mean) / std


def hflip(image):
    return image.transpose(Image.FLIP_LEFT_RIGHT) if isinstance(image, Image.Image) else image.flip(-1)


class RandomCrop:
    def __init__(self, size):
        self.size = size if isinstance(size, (list, tuple)) else (size, size)

    @staticmethod
    def get_params(image: Image.Image, output_size) -> tuple[int, int, int, int]:
        w, h = image.size
        th, tw = output_size
        return random.randint(0, h - th), random.randint(0, w - tw), th, tw

    def __call__(self, image):
        top, left, h, w = self.get_params(image, self.size)
        return crop(image, top, left, h, w)


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, image):
        return center_crop(image, self.size)


class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image):
        return resize(image, self.size, self.interpolation)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image):
        return hflip(image) if random.random() < self.p else image


class ToTensor:
    def __call__(self, image):
        return to_tensor(image)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, tensor):
        return normalize(tensor, self.mean, self.std)


class Lambda:
    def __init__(self, function):
        self.function = function

    def __call__(self, x):
        return self.function(x)


class Compose:
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x


functional = SimpleNamespace(resize=resize, crop=crop, center_crop=center_crop, to_tensor=to_tensor, normalize=normalize, hflip=hflip)
transforms = SimpleNamespace(
    InterpolationMode=InterpolationMode, RandomCrop=RandomCrop, CenterCrop=CenterCrop, Resize=Resize, RandomHorizontalFlip=RandomHorizontalFlip,
    ToTensor=ToTensor, Normalize=Normalize, Lambda=Lambda, Compose=Compose, functional=functional,
)
