"""Argument types that refuse out-of-range numbers when the command line is read.

``argparse`` then prints the usage and one line naming the argument and the allowed range, instead of a
``ZeroDivisionError`` or a torch error from deep inside a run, or a silent substitution (``--steps 0``
sampling with the default 20).
"""

from __future__ import annotations

import argparse
import math


def whole(lowest: int, highest: int | None = None):
    """An ``int`` type for ``type=``: a whole number from ``lowest`` (to ``highest``)."""
    allowed = f"a whole number from {lowest}" + (f" to {highest}" if highest is not None else " up")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {allowed}") from None
        if value < lowest or (highest is not None and value > highest):
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {allowed}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(lowest: float = -math.inf, highest: float = math.inf, *, above: bool = False, below: bool = False):
    """A ``float`` type: a finite number in the range (``above``/``below`` make a bound exclusive)."""
    low = f"{'above' if above else 'at least'} {lowest:g}" if lowest != -math.inf else ""
    high = f"{'below' if below else 'at most'} {highest:g}" if highest != math.inf else ""
    allowed = "a finite number" + (f" {low}" if low else "") + (" and" if low and high else "") + (f" {high}" if high else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {allowed}") from None
        too_low = value <= lowest if above else value < lowest
        too_high = value >= highest if below else value > highest
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def torch_device(text: str | None):
    """``--device``: a device torch knows and this machine has (``None`` = cuda if available, else cpu)."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r}: not a torch device; use cpu, cuda, cuda:1, mps …") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text}: this torch has no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
