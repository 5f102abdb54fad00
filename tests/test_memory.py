"""A job's freed memory goes back to the system (glibc keeps it otherwise; see core/memory.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unifl.core.memory import _glibc, release_freed_memory

# In a child: allocate and free ~400 MiB in blocks below glibc's mmap threshold (so they come from the heap,
# as a training step's small tensors do), then read the resident size before and after the trim.
CHILD = r"""
import sys
from unifl.core.memory import release_freed_memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

blocks, kept = [], []
for _ in range(6400):  # a small block kept after each large one: the freed memory lies between live
    blocks.append(bytearray(64 * 1024 - 64))  # blocks, so free() cannot shrink the heap, only a trim can
    kept.append(bytearray(1024))
del blocks
before = rss_mib()
trimmed = release_freed_memory()
after = rss_mib()
print(before, after, trimmed)
"""


@pytest.mark.skipif(_glibc() is None, reason="malloc_trim is glibc's; this C library returns memory on its own terms")
def test_memory_a_finished_job_freed_goes_back_to_the_system():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, env={"MALLOC_ARENA_MAX": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr
    before, after, trimmed = done.stdout.split()
    assert trimmed == "True"
    assert float(before) - float(after) > 200, f"resident {before} MiB before the trim, {after} MiB after"


def test_without_glibc_it_only_collects_garbage(monkeypatch):
    monkeypatch.setattr("unifl.core.memory._glibc", lambda: None)
    assert release_freed_memory() is False
