"""What the pocket world adds to the core, through the core's registries: its model (``model.path =
"pocket"``), its images (``data.images = "pocket"``), its reward and perception kinds, the ``pocket``
reward backbone of ``train-reward`` and the ``pocket`` and ``tiny`` presets.

The core never imports the pocket world; the entry points that offer it (the CLI, the ComfyUI nodes, the
webui tab) call :func:`register` once.
"""

from __future__ import annotations

from ..core.config.presets import STATISTIC_REWARDS
from . import WEIGHTS_DIR

MODEL_DIR = WEIGHTS_DIR / "ldm"

PRESETS: dict[str, dict] = {
    # The embedded pocket world: its pretrained model, perception models and aspect reward models.
    "pocket": {
        "model": {"path": "pocket"},
        "data": {"images": "pocket", "resolution": 64, "source_images": 8192, "source_seed": 1},
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
        # The learning rates are the tuning run's choices on the validation split (pocket/arena/tuned/README.md):
        # stage 1's prompt accuracy fell at every rate tried, so it takes the smallest (the aesthetic term pushes
        # every aspect past real renders: docs/paper-choices.md); stage 2's 4-step FD is best at 2e-4, and the
        # discriminator's rate barely moves it (FD 41.7-42.2 over 1e-5 … 4.7e-3).
        "adversarial": {"weight": 0.1, "discriminator_from": "layout", "discriminator_lr": 1.875e-3},
        "optim": {"learning_rate": 6.4e-6, "batch_size": 4, "max_steps": 100, "warmup_steps": 10},
        "logging": {"validation_cfg": 3.0, "checkpoint_every": 50, "validate_every": 0, "keep_checkpoints": 1},
        "stages": {"2": {"optim": {"learning_rate": 2e-4}}},
    },
    # A tiny random SD1.5-architecture model on pocket images (tests, benchmarks): every code path, seconds on a CPU.
    "tiny": {
        "data": {"images": "pocket", "resolution": 64, "source_images": 256},
        "rewards": STATISTIC_REWARDS,
        "perception": [{"aspect": "style", "kind": "random-features"}],
        "lora": {"rank": 4, "alpha": 4.0},
        "optim": {"learning_rate": 1e-3, "max_steps": 10},
        "logging": {"checkpoint_every": 5, "validate_every": 0, "tensorboard": False},
        "stages": {"2": {"optim": {"learning_rate": 5e-4}}},  # a per-stage value, so that forms and tests meet one
    },
}

_registered = False


def register() -> None:
    """Add the pocket world to the core's registries (idempotent)."""
    global _registered
    if _registered:
        return
    from ..core.config.presets import register_preset
    from ..core.data import register_image_source
    from ..core.diffusion.loading import register_model_source
    from ..core.lora.kohya import register_architecture
    from ..core.training.aspect_rewards import register_reward_backbone
    from .models import perception as _perception  # noqa: F401  (pocket-features, pocket-instance, pocket-semantic)
    from .world.data import PocketImages
    from .models.rewards import MODEL_RESOLUTION, AspectReward

    register_preset("pocket", PRESETS["pocket"])
    register_preset("tiny", PRESETS["tiny"])
    register_image_source("pocket", PocketImages)
    # The pocket model is SD1.5-shaped but not SD1.5: its LoRAs say "pocket", so no SD1.5 model takes them.
    register_architecture("pocket", shaped_like="sd15")
    register_model_source("pocket", MODEL_DIR, architecture="pocket", missing_hint="rebuild it with `unifl pocket build --only ldm`")
    register_reward_backbone("pocket", AspectReward, kind="pocket-reward", resolution=MODEL_RESOLUTION)
    _registered = True
