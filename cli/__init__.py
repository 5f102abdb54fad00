"""The ``unifl`` command line (also ``python -m unifl``; ``accelerate launch -m unifl train …`` for GPUs).

One module a subcommand, each with ``add_command(subparsers)``. The CLI is the top of the house: it may
use the core, the pocket world and the webui adapter's standalone server.
"""

from __future__ import annotations

import argparse
import sys

from . import arena, check, coco, demo, export, sample, score, select_prompts, train, train_reward


def build_parser() -> argparse.ArgumentParser:
    from ..pocket.build import add_pocket_command
    from ..webui_extension.standalone import add_webui_command

    parser = argparse.ArgumentParser(prog="unifl", description="UniFL: unified feedback learning for Stable Diffusion, trained as a LoRA.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, check, sample, export, score, train_reward, select_prompts, coco):
        command.add_command(sub)
    add_webui_command(sub)
    add_pocket_command(sub)
    demo.add_command(sub)
    arena.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..core.config import ConfigError
    from ..core.data import DataError
    from ..pocket.plugin import register

    register()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        # OSError: a full disk, a missing or locked file. TrainingDiverged: its message names the good checkpoint.
        if not isinstance(err, (ConfigError, DataError, OSError, ValueError, ImportError, *_run_errors())):
            raise
        print(f"unifl {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"unifl {args.command}: interrupted", file=sys.stderr)
        return 130


def _run_errors() -> tuple[type[Exception], ...]:
    """Errors of a run that are the user's to act on, imported only when something failed (the trainer imports torch)."""
    from ..core.training.trainer import TrainingDiverged

    return (TrainingDiverged,)


if __name__ == "__main__":
    sys.exit(main())
