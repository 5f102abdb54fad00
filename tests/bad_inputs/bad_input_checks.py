"""What every bad-input case checks: one line naming the problem, and nothing written before harmed.

The cases go through the interfaces a user touches: the CLI (``unifl.cli.main``), the ComfyUI nodes'
code (against ``tests/comfyui_stub``) and the A1111 tab's form and job code (``webui_extension.ui.start_job``
with a standalone host, and the webui stand-in where the webui's own settings matter).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def snapshot(*roots) -> dict[Path, bytes]:
    """Every file under ``roots`` with its bytes."""
    return {p: p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_untouched(before: dict[Path, bytes]) -> None:
    changed = [str(p) for p, data in before.items() if not p.is_file() or p.read_bytes() != data]
    assert not changed, f"files written before were changed or removed: {changed}"


def assert_one_line(message: str, pattern: str) -> str:
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert "Traceback" not in message
    assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    return message


def cli_error(capsys, pattern: str, *argv, code: int = 1) -> str:
    """Run ``unifl ARGV``; expect exit ``code`` and exactly one error line ``unifl <command>: error: …`` matching
    ``pattern`` (argparse adds its usage line above it for code 2), and no traceback."""
    from unifl.cli import main

    try:
        returned = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse refuses an argument
        returned = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if re.match(r"unifl [\w-]+: error: ", line)]
    assert returned == code and len(errors) == 1, f"exit {returned}, error lines {errors}; stderr:\n{err}"
    return assert_one_line(errors[0], pattern)


def kohya_lora(path: Path, value: float = 0.01, architecture: str = "sd15") -> Path:
    """A small LoRA file for the tiny SD1.5 model's first attention layer (``value`` may be NaN/inf)."""
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{name}.lora_down.weight": torch.full((4, 64), value), f"{name}.lora_up.weight": torch.full((64, 4), 0.01), f"{name}.alpha": torch.tensor(4.0)}
    save_file(tensors, str(path), metadata={"ss_network_dim": "4", "ss_network_alpha": "4.0", "unifl.architecture": architecture,
                                             "unifl.sampler.steps": "2", "unifl.sampler.scheduler": "ddim",
                                             "unifl.sampler.timestep_spacing": "trailing", "unifl.sampler.cfg": "1.0",
                                             "ss_base_model_version": "sd_v1"})
    return path


def captioned_folder(folder: Path, count: int = 2, size: int = 32) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a red cat", encoding="utf-8")
    return folder


class NaNGradientFromSecondCall(torch.nn.Module):
    """A reward whose value stays finite but whose gradient is NaN from its second call on (√|x − x| has an
    infinite slope at 0): the run's first step is finite and checkpointed, its second diverges."""

    alpha = 1.0
    calls = 0

    def forward(self, images, prompts):
        NaNGradientFromSecondCall.calls += 1
        score = images.mean(dim=(1, 2, 3))
        if NaNGradientFromSecondCall.calls >= 2:
            score = score + (images - images.detach()).abs().sqrt().mean(dim=(1, 2, 3))
        return score


def nan_gradient_from_second_call():
    """``kind = "module"`` factory of :class:`NaNGradientFromSecondCall`, counting from zero."""
    NaNGradientFromSecondCall.calls = 0
    return NaNGradientFromSecondCall()


class Hung(BaseException):
    """Raised by :func:`within` when a call blocks too long (not an ``Exception``: no handler swallows it)."""


def within(seconds: int, call, *args):
    """``call(*args)``, failed with :class:`Hung` after ``seconds`` (SIGALRM interrupts a blocking ``open``)."""
    import signal

    def hung(*_):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return call(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
