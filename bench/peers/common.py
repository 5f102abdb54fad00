"""What the peer glue shares: run-time patches of a peer's script, a wall-clock budget, a UNet-call
counter, the LoRA hand-over to the arena, and the record of exactly what ran.

Peer code is theirs and never enters this repository: the glue reads the script from the path it is
given (a local copy of the peer's public repository at the commit ``make peers`` fetches), applies the patches
listed in ``docs/peers.md`` as exact text replacements (each must match once, so a changed upstream
script fails loudly instead of running unpatched), writes the patched copy into the run folder and runs
it in this process. ``result.json`` records the commit or version, the patches, the steps taken, the
images seen, the UNet evaluations and the wall time.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LORA_RANK, LORA_ALPHA = 16, 16.0
"""The pocket preset's LoRA, given to every peer: rank 16, alpha 16 (scale 1)."""
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
"""The pocket preset's ``attention+ff`` layers (unifl.core.lora.peft), by the leaf names peft matches."""
BATCH_SIZE, LEARNING_RATE = 4, 2e-4
"""The pocket preset's batch and learning rate: every peer's default. The arena sweeps each peer's learning rate on
its validation split (``ArenaSettings.learning_rates``) and passes the chosen one with ``--learning-rate``."""
POCKET_CFG = 3.0
"""The pocket model's guidance scale (SD's is 7.5): CFG ranges in the peers' scripts are scaled to it."""


@dataclass
class Patch:
    why: str
    old: str
    new: str
    count: int = 1


@dataclass
class Budget:
    """Stops a peer's loop at the first step past ``seconds`` (from the glue's start) or ``max_steps``.

    Only one given: that one. Both given (smoke runs): once both are reached, so a smoke run takes a
    few steps even when the UniFL run it is matched with took a second.
    """

    seconds: float
    max_steps: int
    log_path: Path | None = None
    """Where the peer's own per-step ``logs`` dict goes as CSV (``logs.csv``: the arena plots it)."""
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    stopped: bool = False
    rows: list = field(default_factory=list)

    def spent(self, step: int, logs: dict | None = None) -> bool:
        if logs and self.log_path is not None and step > self.steps:
            self._log(step, logs)
        self.steps = step
        out_of_time = self.seconds > 0 and time.perf_counter() - self.started >= self.seconds
        out_of_steps = self.max_steps > 0 and step >= self.max_steps
        if self.seconds > 0 and self.max_steps > 0:
            self.stopped = out_of_time and out_of_steps
        else:
            self.stopped = out_of_time or out_of_steps
        return self.stopped

    def _log(self, step: int, logs: dict) -> None:
        import csv

        self.rows.append({"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}, "seconds": round(time.perf_counter() - self.started, 2)})
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        with self.log_path.open("w", newline="") as handle:  # rewritten whole: the keys may change between steps
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)


def count_unet_calls() -> dict:
    """Count the images through any ``UNet2DConditionModel`` in this process (teacher, student, target alike) as
    ``counter["unet"]``; ``counter["feedback"]`` is for the peer's feedback models (``unifl.pocket.arena.counting``)."""
    from unifl.pocket.arena.counting import count_unet, new_counter

    counter = new_counter()
    count_unet(counter)
    return counter


def peer_arguments(description: str, source_help: str, data_help: str, source_default: str | None = None):
    """The command line every peer glue shares (the arena calls each the same way)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", type=type(source_default) if source_default else Path, required=source_default is None, default=source_default, help=source_help)
    parser.add_argument("--data", type=Path, required=source_default is None, default=Path(), help=data_help)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-seconds", type=float, default=0.0)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE, help=f"default {LEARNING_RATE:g} (the pocket preset's)")
    parser.add_argument("--lora", choices=("unifl", "own"), default="unifl",
                        help="unifl: the pocket preset's LoRA (rank 16, alpha 16, attention + feed-forward); own: the peer script's defaults")
    return parser


def patched_copy(script: Path, patches: list[Patch], run_dir: Path) -> Path:
    text = script.read_text(encoding="utf-8")
    for patch in patches:
        found = text.count(patch.old)
        if found != patch.count:
            raise RuntimeError(f"{script}: the patch '{patch.why}' expects its text {patch.count}× but found it {found}× (another version of the script?)")
        text = text.replace(patch.old, patch.new)
    target = run_dir / f"_patched_{script.name}"
    target.write_text(text, encoding="utf-8")
    return target


def run_script(script: Path, argv: list[str], budget: Budget, names: dict | None = None) -> None:
    """Run a (patched) peer script as ``__main__`` with ``argv``; ``_unifl_budget`` (and ``names``, what
    the patches refer to) are in its globals."""
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    runpy.run_path(str(script), init_globals={"_unifl_budget": budget, **(names or {})}, run_name="__main__")


def diffusers_lora(state: dict) -> dict:
    """A peft UNet state dict in diffusers' ``unet.<module>.lora_A.weight`` layout (peft's own
    ``base_model.model.`` prefix removed: with it ``load_lora_weights`` finds no module)."""
    out = {}
    for key, tensor in state.items():
        key = key.replace("base_model.model.", "")
        out[key if key.startswith("unet.") else f"unet.{key}"] = tensor.float().contiguous()
    return out


def save_lora(state: dict, run_dir: Path, scale: float) -> dict:
    from safetensors.torch import save_file

    path = run_dir / "lora.safetensors"
    save_file(diffusers_lora(state), str(path))
    return {"format": "diffusers", "path": str(path), "scale": scale}


def write_result(run_dir: Path, **fields) -> None:
    path = run_dir / "result.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(fields, indent=2))
    os.replace(temporary, path)


def pocket_model() -> Path:
    from unifl.pocket.plugin import MODEL_DIR

    return MODEL_DIR


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
