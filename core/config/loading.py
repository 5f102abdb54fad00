"""Reading configs: TOML files and presets merged with ``--set`` overrides into :class:`TrainConfig`, and
the field documentation (``--explain``, ``docs/config-reference.md``) generated from the dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..files import NotARegularFile, TextFileError, read_text
from .schema import ConfigError, TrainConfig
from .tables import merge

#: Old config keys → their new names (the error says so in one line).
RENAMED = {"data.num_pocket_images": "data.source_images", "data.pocket_seed": "data.source_seed"}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from nested dicts, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if path in RENAMED:
            raise ConfigError(f"config key {path!r} was renamed to {RENAMED[path]!r}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(fields)}."
            raise ConfigError(f"unknown config key {path!r}.{hint}")
        kwargs[key] = _coerce(value, hints[key], fields[key], path)
    return cls(**kwargs)


def _coerce(value, hint, f: dataclasses.Field, path: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    item = f.metadata.get("item")
    if item is not None:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list of tables ([[{path}]])")
        return [from_dict(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    origin = typing.get_origin(hint)
    if hint is float or (origin is typing.Union and float in typing.get_args(hint)):
        if value is None and type(None) in typing.get_args(hint):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} = {value!r}: expected a number")
        return float(value)
    expected = {int: int, str: str, bool: bool, list: list}.get(hint)
    if expected is int and isinstance(value, bool) or expected and not isinstance(value, expected):
        if expected is str and isinstance(value, int) and f.name == "stage":
            return str(value)
        raise ConfigError(f"{path} = {value!r}: expected {expected.__name__}")
    return value


def to_dict(obj) -> dict:
    """A TOML-ready nested dict (``None`` fields omitted: TOML has no null)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [to_dict(v) for v in value]
        if value is not None:
            out[f.name] = value
    return out


def parse_override(text: str) -> dict:
    """``"optim.learning_rate=1e-5"`` → ``{"optim": {"learning_rate": 1e-5}}`` (the value is parsed as TOML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: use KEY=VALUE, e.g. --set optim.max_steps=200")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings: --set model.path=/models/x.safetensors
    node: dict = {}
    root = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return root


def load_config(path: str | Path | None = None, overrides: list[str] = (), preset: str | None = None) -> TrainConfig:
    """Preset (from the file's ``preset = "…"`` key or ``preset``, with its values for the run's stage) ← TOML file
    ← ``--set`` overrides."""
    from .presets import preset_dict

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(read_text(path, "config file"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
        except (TextFileError, NotARegularFile) as err:  # a folder, /dev/zero, a named pipe: named as what they are
            raise ConfigError(str(err)) from None
    preset = data.pop("preset", None) or preset
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{path}: preset = {preset!r}: name a preset, e.g. preset = 'sd15'")
    chosen = data
    for text in overrides:
        chosen = merge(chosen, parse_override(text))
    merged = merge(preset_dict(preset, str(chosen.get("stage", "1"))), chosen) if preset else chosen
    try:
        return from_dict(TrainConfig, merged).validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def explain(cls=TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help)`` for every field, nested, for docs and ``--explain``."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            rows += explain(hint, key + ".")
        elif "item" in f.metadata:
            rows.append((f"[[{key}]]", "[]", f.metadata["help"]))
            rows += explain(f.metadata["item"], key + "[].")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows


def render_reference() -> str:
    """``docs/config-reference.md``, generated from the dataclasses (a test keeps the file current)."""
    lines = [
        "# Config reference",
        "",
        "Generated from `core/config/schema.py` by `python -m unifl.core.config > docs/config-reference.md`;",
        "`unifl train --explain` prints the same. Where the paper is silent, `paper-choices.md` says why.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{key}` | `{default}` | {text} |" for key, default, text in explain()]
    return "\n".join(lines) + "\n"

