"""What ran a measurement: the machine, the libraries and the source's commit, said the same way everywhere
(benchmarks, the pocket world's build records, the arena's metrics)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

#: The libraries whose versions change what the pack computes.
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate")


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def ram_gib() -> float | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo", encoding="ascii") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("MemTotal:")) / 2**20
    return None


def describe_machine(device: str = "cpu") -> str:
    """``CPU <name>, <n> cores, <r> GiB RAM; Python <v>, torch <v>`` and, on CUDA, the GPU and its memory."""
    import torch

    ram = ram_gib()
    text = f"CPU {cpu_name()}, {os.cpu_count()} cores{f', {ram:.0f} GiB RAM' if ram else ''}; Python {platform.python_version()}, torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    return text


def library_versions() -> dict[str, str]:
    """The installed versions of :data:`LIBRARIES` (``"not installed"`` for one that is not)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_commit(path: str | Path) -> str:
    """The commit of the source tree holding ``path``: ``git rev-parse HEAD`` (``-dirty`` when it has
    uncommitted changes to tracked files), or a ``COMMIT`` file beside it (a copy without ``.git``); "unknown"."""
    for folder in (Path(path), *Path(path).parents):
        if (folder / "COMMIT").is_file():
            return (folder / "COMMIT").read_text(encoding="utf-8").strip()
        if (folder / ".git").exists():
            head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
            changed = subprocess.run(["git", "-C", str(folder), "diff", "--quiet", "HEAD"], capture_output=True)
            return (head.stdout.strip() or "unknown") + ("-dirty" if head.stdout.strip() and changed.returncode == 1 else "")
    return "unknown"
