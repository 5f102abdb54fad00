"""Files UniFL writes and reads.

Writes are atomic: a temporary file beside the target, flushed to disk, then a rename, so a kill, a power
cut or a full disk never leaves a half-written file where a good one was. The temporary file is created
with mode 0o666 and the kernel takes the umask off, as for any new file, so what UniFL writes is as
readable as what the user's other tools write (another user's ComfyUI or A1111 loads a LoRA trained here).

Every command that writes keeps one rule (:func:`check_new_output`): an existing output is never replaced
unless the user asks (``--overwrite``), and the message names the file. Text and images are read only
from regular files, so a named pipe or a device never blocks or floods a run.
"""

from __future__ import annotations

import codecs
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: What a temporary file's name adds to its target's: ``.<name>.<8 hex digits>.tmp``.
TEMPORARY_NAME_EXTRA = len("." + "." + "0" * 8 + ".tmp")


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` for a writer that takes a file name (``safetensors.save_file``):
    flushed and renamed onto ``path`` when the block ends, removed if the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary_file(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        os.chmod(tmp, mode)  # safetensors writes its file anew as 0600
        fsync_path(tmp)  # else a power cut after the rename can leave an empty file in its place
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with replaced_atomically(path) as tmp, tmp.open("wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _new_temporary_file(path: Path) -> Path:
    """Create ``.<name>.<random>.tmp`` beside ``path``: mode 0o666 less the umask, applied by the kernel
    (``tempfile.mkstemp`` makes 0600, and reading the umask means setting it, which races other threads)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")


def new_temporary_folder(beside: Path) -> Path:
    """Create ``.<name>.<random>`` beside ``beside`` with mode 0o777 less the umask (``mkdtemp`` makes 0700);
    :func:`readable_as_umask_says` gives the files written into it their mode."""
    for _ in range(100):
        tmp = beside.with_name(f".{beside.name}.{secrets.token_hex(4)}")
        try:
            tmp.mkdir(0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{beside.parent}: could not create a temporary folder beside {beside.name}")


def readable_as_umask_says(file: Path, folder: Path) -> None:
    """Give ``file`` the mode a new file gets (0o666 less the umask), read off ``folder``, made by
    :func:`new_temporary_folder` (a writer such as safetensors makes its files 0600)."""
    os.chmod(file, stat.S_IMODE(folder.stat().st_mode) & 0o666)


def fsync_path(path: str | Path) -> None:
    """Flush a file or folder to disk (a folder so the names in it survive a power cut; not on Windows)."""
    path = Path(path)
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- outputs ---------------------------------------------------------------------------------------------


def check_new_output(*paths: str | Path, overwrite: bool, how: str = "pass --overwrite to replace it", what: str = "--out") -> None:
    """The rule of every command that writes, checked before any work: each output ``path`` can be written
    (:func:`check_output_file`) and, unless ``overwrite``, does not exist yet; else ``FileExistsError`` naming it.
    ``what`` names the argument or setting the path comes from, ``how`` the way to allow replacing."""
    for path in map(Path, paths):
        check_output_file(path, what)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; {how}, or choose another {what}")


def check_output_file(path: str | Path, what: str = "--out") -> None:
    """Refuse, naming it, a file name that cannot be written: a folder already there, a file where one of
    its folders should be, or a name longer than the file system allows (with the temporary file's extra).
    ``what`` (the argument or setting the path comes from) starts the message; ``""`` leaves it out."""
    path = Path(path)
    target = f"{what} {path}".strip()
    # The length first: looking a name up that is longer than NAME_MAX (is_dir below) raises a bare ENAMETOOLONG.
    longest, size = longest_file_name(path.parent), len(os.fsencode(path.name))
    if size > longest:
        raise FileNameTooLong(f"{target}: the file name has {size} bytes, but this file system allows {longest} (its limit of {longest + TEMPORARY_NAME_EXTRA} "
                              f"less {TEMPORARY_NAME_EXTRA} for the temporary file written first): choose a shorter name")
    if path.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give a file name")
    check_output_folder(path.parent, what, file=path)


def check_output_folder(folder: str | Path, what: str = "--out", *, file: Path | None = None) -> None:
    """Refuse, naming it, a folder to write into (``file``'s, if given) that is a file or lies below one."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if existing is None or existing.is_dir():
        return
    target = f"{what} {file if file is not None else folder}".strip()
    if existing == folder and file is None:
        raise NotADirectoryError(f"{target} is a file, not a folder; choose a folder name")
    raise NotADirectoryError(f"{target}: {existing} is a file, not a folder; choose another {what or 'folder'}")


class FileNameTooLong(ValueError):
    """An output name the file system cannot hold; the message names it and the limit."""


def longest_file_name(folder: str | Path) -> int:
    """The longest name, in bytes, UniFL can write atomically in ``folder``: the file system's ``NAME_MAX``
    (of the nearest folder that exists) less what a temporary file's name adds (:data:`TEMPORARY_NAME_EXTRA`)."""
    folder = Path(os.path.abspath(folder))
    existing = next((p for p in (folder, *folder.parents) if p.is_dir()), Path(folder.anchor or "/"))
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # Windows has no pathconf; NTFS allows 255 characters
        name_max = 255
    return name_max - TEMPORARY_NAME_EXTRA


# -- reading ---------------------------------------------------------------------------------------------


class NotARegularFile(ValueError):
    """A path to read that is a folder, a named pipe, a device or a socket; the message names it."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file; else :class:`NotARegularFile` naming it.

    Opened without blocking, then checked on the open file: a FIFO would block ``open`` until a writer
    comes, and ``/dev/zero`` would be read for ever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise NotARegularFile(f"{what} {path} is {kind}, not a file: give a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


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
    the fix, instead of a ``UnicodeDecodeError`` that names nothing; a path that is not a regular file
    raises :class:`NotARegularFile`.
    """
    path = Path(path)
    with open_regular(path, what) as fh:
        data = fh.read().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TextFileError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}): save it as UTF-8") from None
