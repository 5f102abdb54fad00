"""Training configuration: the dataclasses (:mod:`.schema`), presets (:mod:`.presets`) and reading TOML
files with ``--set`` overrides (:mod:`.loading`)."""

from .loading import explain, from_dict, load_config, parse_override, render_reference, to_dict
from .presets import PRESETS, preset_dict, register_preset, stage_fields
from .schema import (
    AdversarialConfig,
    AestheticConfig,
    ConfigError,
    DataConfig,
    LoggingConfig,
    LoRAConfig,
    ModelConfig,
    ModelSpec,
    OptimConfig,
    PeFLConfig,
    RegularizerConfig,
    TrainConfig,
)
from .tables import merge

__all__ = [
    "PRESETS", "AdversarialConfig", "AestheticConfig", "ConfigError", "DataConfig", "LoggingConfig", "LoRAConfig",
    "ModelConfig", "ModelSpec", "OptimConfig", "PeFLConfig", "RegularizerConfig", "TrainConfig", "explain",
    "from_dict", "load_config", "merge", "parse_override", "preset_dict", "register_preset", "render_reference", "stage_fields", "to_dict",
]
