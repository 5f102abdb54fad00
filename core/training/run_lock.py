"""One run per run folder.

Two trainings writing into one folder interleave their CSV rows, replace each other's checkpoints and lose
one result without a word. So a run holds ``<run folder>/run.lock`` while it trains: an operating-system
lock (``flock``; ``msvcrt.locking`` on Windows) on a file that records the owner's pid, host name and
start time. A second run, from any process or thread, is refused with a message naming the folder and
the owner. The operating system drops the lock when its process ends however it ends (``kill -9``, a
crash, a power cut), so a lock file left behind by a dead run is stale by construction: the next run
takes it over and says whose it was. Recorded pids serve the messages only; a pid can be reused, a
kernel lock cannot outlive its process.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from . import checkpoint as ckpt

LOCK_NAME = "run.lock"
#: How a lock held by someone else shows (flock: EWOULDBLOCK; msvcrt.locking: EACCES or EDEADLOCK).
_HELD_ELSEWHERE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}
log = logging.getLogger("unifl")


class RunFolderBusy(FileExistsError):
    """Another run holds the run folder; the message names the folder, the owner and what to do."""


@contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the duration of the block (the folder is created if needed)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = _locked_handle(path)
    try:
        previous = _read_owner(handle)
        if previous:
            log.warning("UniFL: %s: taking over the lock of %s, which is no longer running", run_dir, _describe(previous))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        yield path
    finally:
        _release(path, handle)


def owns_run_folder(train):
    """Decorates :meth:`UniFLTrainer.train`: the main process holds the run folder's lock for the whole
    run, and a fresh start over an existing run (``overwrite``) first checks that the folder's
    ``checkpoints/`` holds only UniFL checkpoints, the only thing the trainer then deletes."""

    @functools.wraps(train)
    def locked_train(trainer, resume: str | None = None, overwrite: bool = False):
        if not trainer.accelerator.is_main_process:
            return train(trainer, resume=resume, overwrite=overwrite)
        with run_folder_lock(trainer.run_dir):
            if overwrite and not resume:
                ckpt.check_only_checkpoints(trainer.run_dir)
            return train(trainer, resume=resume, overwrite=overwrite)

    return locked_train


def _locked_handle(path: Path) -> IO[str]:
    """An open handle of ``path`` holding its exclusive lock; :class:`RunFolderBusy` if another run holds it."""
    while True:
        handle = open(path, "a+", encoding="utf-8")  # never truncates: the owner's record stays readable
        try:
            _lock(handle)
        except OSError as err:
            if err.errno not in _HELD_ELSEWHERE:  # a file system without locks (some network mounts)
                log.warning("UniFL: %s cannot be locked (%s); nothing stops a second run from using %s at the same time", path, err, path.parent)
                return handle
            owner = _read_owner(handle)
            handle.close()
            raise RunFolderBusy(f"{path.parent} is in use by another training run ({_describe(owner)}): wait for it to finish, "
                                f"or choose another run folder (logging.output_dir)") from None
        try:
            same_file = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:  # the previous owner removed it between our open and our lock
            same_file = False
        if same_file:
            return handle
        _unlock(handle)
        handle.close()


def _read_owner(handle: IO[str]) -> dict:
    handle.seek(0)
    try:
        owner = json.loads(handle.read() or "{}")
    except ValueError:
        return {"pid": "?", "host": "?"}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict) -> str:
    if not owner:
        return "an owner that has not written its name yet"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {owner.get('started', '?')}"


if os.name == "nt":  # pragma: no cover - exercised on Windows hosts only
    import msvcrt

    def _lock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        except OSError:
            pass

    def _release(path: Path, handle: IO[str]) -> None:
        _unlock(handle)
        handle.close()
        try:  # Windows removes no file another process holds open: that run then owns it, which is right
            path.unlink(missing_ok=True)
        except PermissionError:
            pass
else:
    import fcntl

    def _lock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle: IO[str]) -> None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except OSError:  # never locked (a file system without locks)
            pass

    def _release(path: Path, handle: IO[str]) -> None:
        # Removed while still locked: a run that opened the old file and locks it after us sees that
        # the name now points elsewhere (the samestat check) and starts over.
        path.unlink(missing_ok=True)
        _unlock(handle)
        handle.close()
