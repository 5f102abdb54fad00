"""Every numeric config field has a range checked at load time: a new field without one fails here."""

from __future__ import annotations

import dataclasses

import pytest
from unifl.core.config import ConfigError, TrainConfig, load_config
from unifl.core.config import schema

#: Numeric fields checked by a rule of their own in ``TrainConfig.validate``.
CHECKED_APART = {"lora.dropout", "optim.seed", "data.resolution"}


def numeric_fields() -> list[str]:
    keys = []
    for section in dataclasses.fields(TrainConfig):
        table = section.default_factory
        if isinstance(table, type) and dataclasses.is_dataclass(table):  # a [section]; lists of tables are checked per entry
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(table) if f.type in ("int", "float")]
    return keys


def test_every_numeric_field_has_a_range():
    ranged = set(schema.AT_LEAST_ONE) | set(schema.COUNTS_FROM_ZERO) | set(schema.NON_NEGATIVE) | set(schema.POSITIVE) | set(schema.LEARNING_RATES) | set(schema.GUIDANCE_SCALES) | CHECKED_APART
    fields = numeric_fields()
    assert len(fields) > 25
    assert sorted(set(fields) - ranged) == [], "give these fields a range in core/config/schema.py"


@pytest.mark.parametrize("key", numeric_fields())
def test_every_numeric_field_refuses_nan_or_a_negative_value(key):
    section, name = key.split(".")
    default = getattr(getattr(TrainConfig(), section), name)
    bad = "-1" if isinstance(default, int) else "nan"
    with pytest.raises(ConfigError, match=rf"{key} = "):
        load_config(None, [f"{key}={bad}"], preset="tiny")


def test_the_config_layer_knows_the_values_of_the_layers_above():
    from unifl.core.diffusion.schedule import SPACINGS
    from unifl.core.lora.peft import TARGET_PRESETS

    assert schema.LORA_TARGETS == tuple(TARGET_PRESETS) and schema.TIMESTEP_SPACINGS == SPACINGS


def test_every_preset_passes_its_own_checks():
    from unifl.core.config import PRESETS

    for name in PRESETS:
        load_config(None, [], preset=name)
