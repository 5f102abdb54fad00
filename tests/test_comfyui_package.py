"""The Comfy Registry package: what ``comfy node pack`` (comfy-cli's own packer, honouring ``.comfyignore``) ships.

Node tooltips, errors, workflow notes and the README point to pages in ``docs/``; a page the package left out
would be a dead end for a user who installed the pack from the Registry.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_PATH = re.compile(r"docs/[\w.-]+?\.md")


def test_every_docs_page_a_shipped_file_points_to_is_shipped(tmp_path, monkeypatch):
    file_utils = pytest.importorskip("comfy_cli.file_utils")
    monkeypatch.chdir(ROOT)
    file_utils.zip_files(str(tmp_path / "unifl.zip"))
    with zipfile.ZipFile(tmp_path / "unifl.zip") as package:
        shipped = set(package.namelist())
        mentioned = {}
        for name in sorted(shipped):
            if name.endswith((".py", ".json", ".md", ".toml", ".txt", ".ini")):
                for page in DOCS_PATH.findall(package.read(name).decode("utf-8", errors="replace")):
                    mentioned.setdefault(page, name)
    assert {"docs/recipes.md", "docs/preference-pairs.md"} <= set(mentioned)  # the nodes' and workflows' own pointers
    missing = {page: where for page, where in mentioned.items() if page not in shipped}
    assert not missing, f"pages the package points to but leaves out (page: first file naming it): {missing}"
    assert not any(name.startswith(("tests/", "bench/")) for name in shipped)
