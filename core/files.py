"""Atomic file writes: a temporary file beside the target, flushed to disk, then a rename, so a kill, a
power cut or a full disk never leaves a half-written file where a good one was. And text files read
with errors that name the file."""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # else a power cut after the rename can leave an empty file in its place
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; a LoRA must be readable like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_inside(path: str | Path, folders, *, strictly: bool = False) -> bool:
    """Whether ``path``, as a loader resolves it (``~`` expanded, relative to the working folder), lies in one of
    ``folders`` (``strictly``: below it, not the folder itself) without climbing out through ``..``.

    Symbolic links inside a folder are not resolved: only someone with access to the machine can make
    one, and hosts' users link their model folders in all the time.
    """
    expanded = os.path.expanduser(str(path))
    if ".." in Path(expanded).parts:
        return False
    full = _absolute(expanded)
    for folder in map(_absolute, folders):
        if full.startswith(folder.rstrip(os.sep) + os.sep) or (full == folder and not strictly):
            return True
    return False


def _absolute(path: str | Path) -> str:
    return os.path.normcase(os.path.abspath(os.path.expanduser(str(path))))


class TextFileError(ValueError):
    """A text file (prompts, captions, pairs, run state) that is not UTF-8 text; the message names it."""


def read_text(path: str | Path, what: str = "text file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped, as Windows editors write one).

    A file in another encoding raises :class:`TextFileError` naming the file, the first bad byte and
    the fix, instead of a ``UnicodeDecodeError`` that names nothing.
    """
    path = Path(path)
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TextFileError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}): save it as UTF-8") from None
