"""Shared fixtures: tiny real diffusers models (random weights, built from configs, offline)."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models do tiny ops: one thread is faster than two fighting over two cores (and CI has two).
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# The tests use the pocket world's model, images, kinds and presets, as the CLI and the UIs do.
from unifl.pocket.plugin import register  # noqa: E402

register()


@pytest.fixture(scope="session")
def tiny_sd15_dir(tmp_path_factory):
    """A tiny SD1.5-architecture pipeline saved as a diffusers folder (the loader path users take)."""
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd15")
    build_tiny_pipeline("sd15", seed=0).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_pipeline("sdxl", seed=0).save_pretrained(str(folder))
    return folder


# The smallest honest training run: short schedules, 32 px pocket images, two steps.
FAST = [
    "optim.max_steps=2", "data.resolution=32", "data.source_images=16",
    "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]",
    "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
    "adversarial.inference_steps=2", "adversarial.grad_levels=[0, 1]",
    "logging.checkpoint_every=1", "logging.validate_every=0", "logging.tensorboard=false",
]


@pytest.fixture
def fast_config(tiny_sd15_dir, tmp_path):
    """``fast_config(*overrides)`` → a validated tiny-preset TrainConfig writing into tmp_path."""
    from unifl.core.config import load_config

    def make(*overrides: str):
        return load_config(None, [f"model.path={tiny_sd15_dir}", f"logging.output_dir={tmp_path / 'run'}", *FAST, *overrides], preset="tiny")

    return make
