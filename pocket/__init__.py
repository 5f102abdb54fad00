"""Pocket world: a procedural captioned image world with exact masks and per-aspect preference pairs.

It stands in for Stable Diffusion's data on machines without weights or datasets, small enough that a
tiny latent diffusion model, segmenters and reward models train on a CPU. See :mod:`.world` for the
scenes, rendering, captions and masks and :mod:`.degrade` for the aspect-wise "worse" images.
"""

from pathlib import Path

#: The shipped weights: the pocket LDM, its perception and reward models, held-out judges, add-ons.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
