"""A1111/Forge entry point of the UniFL extension: registers the "UniFL" tab and its settings.

The webui imports every file in ``scripts/`` by path, so relative imports do not work here, and a
bare ``core`` on ``sys.path`` could collide with another extension. The extension folder (this
file's parent's parent, which is the ``unifl`` package) is imported under its package name
``unifl`` -- this folder's own copy, unless a ``unifl`` was already imported in this process.
"""

import importlib
import importlib.util
import sys
from pathlib import Path


def _import_pack():
    if "unifl" not in sys.modules:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("unifl", root / "__init__.py", submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["unifl"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("unifl.webui_extension.register")


_import_pack().register()
