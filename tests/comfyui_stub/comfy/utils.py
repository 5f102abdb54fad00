"""Stand-in for ``comfy.utils``: progress bar, LoRA file loading, the diffusers↔LDM UNet key map."""

from __future__ import annotations

PROGRESS: list[tuple[int, int, object]] = []


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total, self.current, self.node_id = total, 0, node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        PROGRESS.append((self.current, self.total, preview))

    def update(self, value):
        self.update_absolute(self.current + value)


def unet_to_diffusers(unet_config: dict) -> dict[str, str]:
    """diffusers UNet key → host UNet key. The stand-in UNet (tiny_host.LDMUNet) keeps the diffusers
    UNet under ``.unet``, so the host path is the diffusers path with a ``unet.`` prefix."""
    return {key: f"unet.{key}" for key in unet_config.get("_diffusers_keys", [])}


def load_torch_file(path: str, safe_load: bool = False, device=None, return_metadata: bool = False):
    from safetensors.torch import load_file

    return load_file(str(path))
