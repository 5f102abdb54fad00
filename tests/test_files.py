"""core/files.py: atomic writes leave files as readable as the umask says, the longest name it allows can be
written, and only regular files are read."""

from __future__ import annotations

import os
import re
import stat

import pytest
from unifl.core.files import (
    FileNameTooLong,
    NotARegularFile,
    atomic_write_bytes,
    check_new_output,
    check_output_file,
    longest_file_name,
    new_temporary_folder,
    read_text,
    readable_as_umask_says,
    replaced_atomically,
)


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_atomic_writes_take_the_umask_of_the_moment_not_0600(tmp_path, umask_027):
    import torch
    from safetensors.torch import save_file

    atomic_write_bytes(tmp_path / "a.bin", b"x")
    with replaced_atomically(tmp_path / "b.safetensors") as tmp:
        save_file({"x": torch.zeros(1)}, str(tmp))  # safetensors alone makes 0600
    folder = new_temporary_folder(tmp_path / "step-000001")
    save_file({"x": torch.zeros(1)}, str(folder / "c.safetensors"))
    readable_as_umask_says(folder / "c.safetensors", folder)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "a.bin", tmp_path / "b.safetensors", folder, folder / "c.safetensors")}
    assert modes == {"a.bin": 0o640, "b.safetensors": 0o640, folder.name: 0o750, "c.safetensors": 0o640}


def test_an_atomic_write_replaces_a_file_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    atomic_write_bytes(tmp_path / "a.txt", b"new")
    assert (tmp_path / "a.txt").read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_longest_name_allowed_is_the_longest_that_can_be_written(tmp_path):
    longest = longest_file_name(tmp_path)
    atomic_write_bytes(tmp_path / ("a" * longest), b"x")  # its temporary file's name is exactly NAME_MAX long
    with pytest.raises(FileNameTooLong, match=rf"the file name has {longest + 1} bytes, but this file system allows {longest}"):
        check_output_file(tmp_path / ("b" * (longest + 1)))
    with pytest.raises(OSError):  # what the check saves a run from, after its training
        atomic_write_bytes(tmp_path / ("b" * (longest + 1)), b"x")


def test_an_existing_output_is_refused_naming_it_unless_overwrite(tmp_path):
    (tmp_path / "out.csv").write_text("kept")
    with pytest.raises(FileExistsError, match=r"out.csv already exists; pass --overwrite to replace it, or choose another --out"):
        check_new_output(tmp_path / "new.json", tmp_path / "out.csv", overwrite=False)
    check_new_output(tmp_path / "out.csv", overwrite=True)


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: os.mkfifo(p), "a named pipe (FIFO)"),
    (lambda p: p.mkdir(), "a folder"),
])
def test_only_regular_files_are_read(tmp_path, make, kind):
    make(tmp_path / "x.txt")
    with pytest.raises(NotARegularFile, match=rf"prompt file .*x.txt is {re.escape(kind)}, not a file"):
        read_text(tmp_path / "x.txt", "prompt file")


def test_a_device_is_not_read_for_ever():
    with pytest.raises(NotARegularFile, match=r"/dev/zero is a character device"):
        read_text("/dev/zero")
