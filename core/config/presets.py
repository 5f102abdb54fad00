"""Named starting points for configs (``preset = "sd15"`` in a TOML file, or ``--preset``).

Presets hold only what differs from the dataclass defaults. The core's presets name no reward or
perception weight files: those are the user's local files, added as ``[[rewards]]``/``[[perception]]``
tables. Other packages add presets of their own with :func:`register_preset` (the pocket world adds
``pocket`` and ``tiny``).
"""

from __future__ import annotations

import copy

from .schema import ConfigError
from .tables import merge

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


STAGES_KEY = "stages"
"""A preset's values for one stage only: ``{"stages": {"2": {...}}}`` applies over the rest of the preset in a
stage-2 run. Stage 2 continues stage 1's LoRA with other terms and is tuned on its own (its learning rate, say)."""


def register_preset(name: str, values: dict) -> None:
    """Make ``preset = name`` available; ``values`` holds only what differs from the dataclass defaults (and, under
    :data:`STAGES_KEY`, what differs for one stage)."""
    PRESETS[name] = values


def preset_dict(name: str, stage: str = "1") -> dict:
    """The preset's values for a run of ``stage``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = copy.deepcopy(PRESETS[name])
    return merge(values, values.pop(STAGES_KEY, {}).get(str(stage), {}))


def stage_fields(name: str) -> set[str]:
    """Dotted keys (``optim.learning_rate``) the preset sets differently for some stage: what a form refills when
    the user switches stage."""
    def keys(table: dict, prefix: str = "") -> set[str]:
        return set().union(*(keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"} for k, v in table.items()))

    return set().union(*(keys(values) for values in PRESETS.get(name, {}).get(STAGES_KEY, {}).values()))
