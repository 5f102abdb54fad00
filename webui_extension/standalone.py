"""``unifl webui``: the webui's UniFL tab as a plain gradio app on this machine's loopback interface.

For users without A1111/Forge, and for the browser tests. It trains the embedded pocket model by
default, lists checkpoints from ``--checkpoint-dir`` folders and writes LoRAs into ``--lora-dir``.
It listens on 127.0.0.1 only: the form takes file paths, which is no interface to put on a network.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

LOOPBACK = "127.0.0.1"


def add_webui_command(subparsers) -> argparse.ArgumentParser:
    """Add ``webui`` to the ``unifl`` command line (``subparsers`` from ``add_subparsers``)."""
    parser = subparsers.add_parser("webui", help="serve the A1111/Forge UniFL tab as a standalone page on 127.0.0.1",
                                   description="The UniFL training tab of the A1111/Forge extension as a standalone gradio app on 127.0.0.1.")
    _add_arguments(parser)
    parser.set_defaults(func=_serve)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=7861, help="port on 127.0.0.1 (default 7861; the webui itself uses 7860)")
    parser.add_argument("--checkpoint-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="folder of base models (.safetensors/.ckpt files, diffusers folders) to offer besides the pocket model; repeatable")
    parser.add_argument("--lora-dir", type=Path, default=Path("models/Lora"), help="where finished LoRAs go (default models/Lora)")
    parser.add_argument("--unifl-dir", type=Path, default=Path("models/unifl"),
                        help="reward/perception model files (rewards/, perception/) and run folders (runs/) (default models/unifl)")
    parser.add_argument("--allow-module-kinds", action="store_true",
                        help='let the form use kind = "module", which imports and runs the Python code a setting names (off by default)')


def build_app(host) -> "gradio.Blocks":  # noqa: F821 (gradio is imported late, after the environment is set)
    import gradio as gr

    from .ui import build_tab

    tab = build_tab(host)  # built outside the app's context, as the webui does, then rendered once into it
    with gr.Blocks(title="UniFL", analytics_enabled=False) as app:
        gr.Markdown("## UniFL: train a LoRA with unified feedback learning")
        tab.render()
    return app


def _serve(args) -> int:
    # Offline by construction: no usage statistics, no hub look-ups, no update checks.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .compat import queue_app
    from .host import StandaloneHost

    host = StandaloneHost(args.checkpoint_dir, args.lora_dir, args.unifl_dir, allow_module_kinds=args.allow_module_kinds)
    app = queue_app(build_app(host))
    print(f"UniFL tab on http://{LOOPBACK}:{args.port} (LoRAs go to {args.lora_dir.resolve()})", flush=True)
    app.launch(server_name=LOOPBACK, server_port=args.port, inbrowser=False, share=False, show_error=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m unifl.webui_extension`` (the same as ``unifl webui``)."""
    parser = argparse.ArgumentParser(prog="unifl webui", description="The UniFL training tab as a standalone gradio app on 127.0.0.1.")
    _add_arguments(parser)
    return _serve(parser.parse_args(argv))
