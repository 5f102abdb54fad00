"""What ran a measurement: the machine, the libraries and the source commit, as benchmarks and the arena record them."""

import subprocess

from unifl.core.machine import LIBRARIES, describe_machine, library_versions, source_commit


def test_the_machine_and_the_libraries_are_named():
    text = describe_machine("cpu")
    assert text.startswith("CPU ") and " cores" in text and "torch " in text and "GPU" not in text
    versions = library_versions()
    assert set(versions) == set(LIBRARIES) and versions["torch"] != "not installed"


def test_the_source_commit_is_heads_and_says_when_the_tree_has_changed(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "pkg").mkdir()
    assert source_commit(tmp_path / "pkg") == head  # found from a folder inside the tree
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == head + "-dirty"


def test_a_copy_without_git_names_its_commit_in_a_file_or_is_unknown(tmp_path):
    assert source_commit(tmp_path) == "unknown"  # pytest's temporary folders lie outside any git tree
    (tmp_path / "COMMIT").write_text("abc123\n")
    assert source_commit(tmp_path / "sub") == "abc123"
