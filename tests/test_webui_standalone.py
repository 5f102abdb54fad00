"""``unifl webui``: the command line, and that wiring it into ``unifl`` costs the CLI nothing at import."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from unifl.webui_extension.standalone import add_webui_command


def test_the_webui_command_parses_its_folders():
    parser = argparse.ArgumentParser(prog="unifl")
    add_webui_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webui", "--port", "7999", "--checkpoint-dir", "a", "--checkpoint-dir", "b", "--lora-dir", "L"])
    assert (args.port, args.checkpoint_dir, args.lora_dir, args.unifl_dir) == (7999, [Path("a"), Path("b")], Path("L"), Path("models/unifl"))
    assert callable(args.func)


def test_importing_the_command_imports_neither_gradio_nor_torch():
    code = "import sys, unifl.webui_extension.standalone; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'torch', 'modules')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout.strip() == "[]"
