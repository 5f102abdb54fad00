"""Give a host process back the memory a finished UniFL job freed.

A host (A1111/Forge, ComfyUI, ``unifl webui``) lives for days and runs many jobs. glibc's allocator keeps
freed heap memory for reuse instead of returning it to the system; after a training run the process keeps
gigabytes it no longer uses (measured in a real Forge: 6.7 GiB idle before a run, 10.5 GiB after, peaks
growing run by run), and only ``MALLOC_MMAP_THRESHOLD_`` at start-up or ``malloc_trim`` gives it back. The
hosts call :func:`release_freed_memory` once a job has ended and dropped its tensors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

logger = logging.getLogger(__name__)


def _glibc():
    """glibc's C library if this process runs on it (``malloc_trim`` is glibc's), else ``None`` (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system (``malloc_trim(0)``).

    Call it after a job's models and tensors are out of reach. Returns whether glibc trimmed anything
    (``False`` where there is no glibc: then the allocator returns memory on its own terms).
    """
    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    released = bool(libc.malloc_trim(0))
    logger.debug("malloc_trim(0): %s", "memory returned to the system" if released else "nothing to return")
    return released
