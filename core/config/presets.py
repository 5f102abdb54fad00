"""Named starting points for configs (``preset = "sd15"`` in a TOML file, or ``--preset``).

Presets hold only what differs from the dataclass defaults. The core's presets name no reward or
perception weight files: those are the user's local files, added as ``[[rewards]]``/``[[perception]]``
tables. Other packages add presets of their own with :func:`register_preset` (the pocket world adds
``pocket`` and ``tiny``).
"""

from __future__ import annotations

import copy

from .schema import ConfigError

# Weight-free feedback models that exist everywhere: the honest default where no learned model exists.
# Their thresholds α_d sit above what an untrained model scores, so the hinge has work to do.
STATISTIC_REWARDS = [
    {"aspect": "color", "kind": "colorfulness", "threshold": 0.5},
    {"aspect": "detail", "kind": "sharpness", "threshold": -1.0},
    {"aspect": "lighting", "kind": "exposure", "threshold": 0.3},
]

PRESETS: dict[str, dict] = {
    # Stable Diffusion 1.5 at its native 512 px; LoRA learning rates are ~10x full fine-tuning ones. The
    # frozen UNet and text encoder are stored in the dtype the mixed-precision forward computes in (bf16, as
    # in sdxl): fp32 storage would only double the model's memory (a webui holds its own copy beside it).
    "sd15": {
        "model": {"architecture": "sd15", "dtype": "bf16"},
        "data": {"resolution": 512},
        "optim": {"learning_rate": 5e-5, "batch_size": 1, "gradient_accumulation_steps": 4, "max_steps": 2000, "mixed_precision": "bf16", "warmup_steps": 50},
        "logging": {"validation_cfg": 7.5, "checkpoint_every": 200, "validate_every": 200},
    },
    # SDXL base at 1024 px; the VAE stays fp32 (model.vae_dtype) because it overflows in fp16.
    "sdxl": {
        "model": {"architecture": "sdxl", "dtype": "bf16"},
        "data": {"resolution": 1024},
        "optim": {"learning_rate": 3e-5, "batch_size": 1, "gradient_accumulation_steps": 4, "max_steps": 2000, "mixed_precision": "bf16", "warmup_steps": 50},
        "logging": {"validation_cfg": 6.0, "checkpoint_every": 200, "validate_every": 200},
    },
}


def register_preset(name: str, values: dict) -> None:
    """Make ``preset = name`` available; ``values`` holds only what differs from the dataclass defaults."""
    PRESETS[name] = values


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
