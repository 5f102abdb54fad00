"""Pocket world: a procedural captioned image world with exact masks and per-aspect preference pairs.

It stands in for Stable Diffusion's data on machines without weights or datasets, small enough that a
tiny latent diffusion model, segmenters and reward models train on a CPU. See :mod:`.world` for the
scenes, rendering, captions and masks and :mod:`.degrade` for the aspect-wise "worse" images.
"""
