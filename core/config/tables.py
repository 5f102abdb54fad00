"""Config tables as plain dicts, before they become dataclasses: how presets, files and overrides combine."""

from __future__ import annotations


def merge(base: dict, override: dict) -> dict:
    """Recursive dict update: tables merge, everything else (lists included) replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
