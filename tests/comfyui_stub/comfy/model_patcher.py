"""Stand-in for ``comfy.model_patcher.ModelPatcher``: clone, patches, object lookup."""

from __future__ import annotations

import copy

import torch


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.patches: dict[str, list] = {}
        self.object_patches: dict[str, object] = {}
        self.model_options: dict = {"transformer_options": {}}

    def clone(self) -> "ModelPatcher":
        n = ModelPatcher(self.model, self.load_device, self.offload_device)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.object_patches = dict(self.object_patches)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def get_model_object(self, name: str):
        return self.object_patches[name] if name in self.object_patches else getattr(self.model, name)

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list[str]:
        keys = set(self.model.state_dict().keys())
        added = []
        for key, patch in patches.items():
            if key in keys:
                self.patches.setdefault(key, []).append((strength_patch, patch, strength_model))
                added.append(key)
        return added

    def model_patches_models(self) -> list:
        return []

    def patch_model(self, *args, **kwargs):
        return self.model

    def patched_weight(self, key: str) -> torch.Tensor:
        """The weight with this patcher's LoRA patches applied (what ComfyUI computes at load)."""
        weight = self.model.state_dict()[key].float().clone()
        for strength, (kind, (up, down, alpha)), _ in self.patches.get(key, []):
            assert kind == "lora"
            scale = (float(alpha) / down.shape[0]) if alpha is not None else 1.0
            delta = up.float().flatten(1) @ down.float().flatten(1)
            weight += strength * scale * delta.reshape(weight.shape)
        return weight
