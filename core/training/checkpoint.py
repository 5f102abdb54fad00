"""Resumable checkpoints.

A checkpoint is a folder ``checkpoints/step-000123/`` holding the LoRA (safetensors), the optimizer
state(s) (``torch.save`` of plain tensors and numbers, read back with ``weights_only=True``), the
discriminator in stage 2, and ``state.json``. It is written to a temporary folder and renamed, so a
kill mid-save leaves the previous checkpoint intact. Data order and noise are pure functions of
(seed, step), so no RNG state is needed for an exact resume.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(run_dir: str | Path, resume: str) -> Path:
    """``"latest"`` → the newest complete checkpoint of ``run_dir``; otherwise a checkpoint folder path."""
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {Path(run_dir) / 'checkpoints'}; start without --resume")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no state.json)")
    return path


def save_checkpoint(run_dir: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, dict], state: dict, keep: int) -> Path:
    """Write one checkpoint atomically, then drop all but the newest ``keep``."""
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        for name, sd in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
        for name, sd in optimizers.items():
            torch.save(sd, tmp / f"{name}.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict], dict]:
    path = Path(path)
    tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
    optimizers = {p.stem: torch.load(p, map_location="cpu", weights_only=True) for p in path.glob("*.pt")}
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return tensors, optimizers, state
