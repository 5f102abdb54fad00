"""Named starting points for configs (``preset = "sd15"`` in a TOML file, or ``--preset``).

Presets hold only what differs from the dataclass defaults. They name no reward/perception weight
files: those are the user's local files, added as ``[[rewards]]``/``[[perception]]`` tables.
"""

from __future__ import annotations

from .config import ConfigError

# Weight-free feedback models that exist everywhere: the honest default where no learned model exists.
# Their thresholds α_d sit above what an untrained model scores, so the hinge has work to do.
STATISTIC_REWARDS = [
    {"aspect": "color", "kind": "colorfulness", "threshold": 0.5},
    {"aspect": "detail", "kind": "sharpness", "threshold": -1.0},
    {"aspect": "lighting", "kind": "exposure", "threshold": 0.3},
]

PRESETS: dict[str, dict] = {
    # Stable Diffusion 1.5 at its native 512 px; LoRA learning rates are ~10x full fine-tuning ones.
    "sd15": {
        "model": {"architecture": "sd15"},
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
    # The embedded pocket world: its pretrained model, perception models and aspect reward models.
    "pocket": {
        "model": {"path": "pocket"},
        "data": {"images": "pocket", "resolution": 64, "num_pocket_images": 8192, "pocket_seed": 1},
        "rewards": [{"aspect": aspect, "kind": "pocket-reward", "path": aspect} for aspect in ("color", "layout", "detail", "lighting")],
        "perception": [
            {"aspect": "structure", "kind": "pocket-instance"},
            {"aspect": "layout", "kind": "pocket-semantic"},
            {"aspect": "style", "kind": "pocket-features"},
        ],
        "lora": {"rank": 16, "alpha": 16.0, "targets": "attention+ff"},
        # The pocket detail reward is at heart an edge detector: a discriminator started from it was fooled by
        # tile lines painted over every background within 60 steps (4-step FD 343-407 against 198 without the
        # term, at weights 0.1-1). Started from the layout reward, with a learning rate that lets it keep up
        # with the LoRA's, it has no such shortcut. Measured in docs/pocket-world.md.
        "adversarial": {"weight": 0.1, "discriminator_from": "layout", "discriminator_lr": 3e-4},
        "optim": {"learning_rate": 2e-4, "batch_size": 4, "max_steps": 100, "warmup_steps": 10},
        "logging": {"validation_cfg": 3.0, "checkpoint_every": 50, "validate_every": 0, "keep_checkpoints": 1},
    },
    # A tiny random SD1.5-architecture model (tests, benchmarks, the fallback demo): every code path, seconds on a CPU.
    "tiny": {
        "data": {"images": "pocket", "resolution": 64, "num_pocket_images": 256},
        "rewards": STATISTIC_REWARDS,
        "perception": [{"aspect": "style", "kind": "random-features"}],
        "lora": {"rank": 4, "alpha": 4.0},
        "optim": {"learning_rate": 1e-3, "max_steps": 10},
        "logging": {"checkpoint_every": 5, "validate_every": 0, "tensorboard": False},
    },
}


def preset_dict(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    import copy

    return copy.deepcopy(PRESETS[name])
