"""The pocket world as a training image source (``data.images = "pocket"``)."""

from __future__ import annotations

import torch

from .world import PocketDataset, WorldConfig, sample_prompts


class PocketImages(torch.utils.data.Dataset):
    """The embedded pocket world's procedural samples as training items (image, caption, exact masks)."""

    def __init__(self, length: int, seed: int, resolution: int):
        self.world = PocketDataset(length, seed, WorldConfig(resolution=resolution))

    def __len__(self) -> int:
        return len(self.world)

    def captions(self) -> list[str]:
        return sample_prompts(len(self.world), self.world.seed, self.world.config)

    def __getitem__(self, index: int) -> dict:
        s = self.world[index]
        # Instance labels in the pocket instance segmenter's class space (0-based shape index, no background);
        # the semantic mask keeps 0 = background, k = shape k - 1, as the semantic segmenter predicts it.
        return {"image": s.image, "caption": s.caption, "instance_masks": s.instance_masks, "instance_labels": s.instance_labels - 1, "semantic_mask": s.semantic_mask}
