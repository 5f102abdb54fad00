"""Stage 2's discriminator: a trainable copy of one reward model (paper §4.3: the detail reward).

Copying a large reward model whole (a CLIP-H or BLIP tower) would hold a second copy of its weights
plus AdamW's two moments for each. Most reward models are a frozen trunk with a small ``head``; the
head-only discriminator shares the trunk with the reward model (frozen, never copied) and trains a copy
of the head alone.
"""

from __future__ import annotations

import copy

from torch import nn

TRAINABLE = ("auto", "all", "head")
#: Above this many parameters ``auto`` trains the head alone (when the model has one).
HEAD_ONLY_ABOVE = 20_000_000


def trainable_part(reward: nn.Module, trainable: str, name: str) -> str:
    """What of ``reward`` a discriminator set to ``trainable`` trains: ``"all"`` or ``"head"`` (``auto`` resolved)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"discriminator trainable part {trainable!r}: use one of {', '.join(TRAINABLE)}")
    head = getattr(reward, "head", None)
    if trainable == "auto":
        large = sum(p.numel() for p in reward.parameters()) > HEAD_ONLY_ABOVE
        return "head" if large and isinstance(head, nn.Module) else "all"
    if trainable == "head" and not isinstance(head, nn.Module):
        raise ValueError(f"the {name} reward model ({type(reward).__name__}) has no 'head' module to train alone; set adversarial.discriminator_trainable = 'all'")
    return trainable


def trainable_parameter_count(reward: nn.Module, trainable: str, name: str) -> int:
    """Parameters a discriminator made from ``reward`` trains (without making it: no copy)."""
    part = reward if trainable_part(reward, trainable, name) == "all" else reward.head
    return sum(p.numel() for p in part.parameters())


def make_discriminator(reward: nn.Module, trainable: str, name: str) -> nn.Module:
    """A copy of ``reward`` whose ``trainable`` part ('all', 'head' or 'auto') requires grad and is stored
    in fp32 (an optimizer on half-precision weights loses its small updates), in eval mode.

    ``name`` names the reward model in errors. With 'head', the returned module is a new object whose
    ``head`` is a deep copy and whose other submodules are the reward model's own (frozen) ones.
    """
    if trainable_part(reward, trainable, name) == "all":
        discriminator = copy.deepcopy(reward).float()
        discriminator.requires_grad_(True)
    else:
        discriminator = copy.copy(reward)  # a new Module object sharing the trunk's parameters …
        discriminator._modules = dict(reward._modules)  # … with its own table of submodules
        discriminator.head = copy.deepcopy(reward.head).float().requires_grad_(True)
    if not any(p.requires_grad for p in discriminator.parameters()):
        raise ValueError(f"the {name} reward model ({type(reward).__name__}) has no parameters to train as a discriminator; use a learned reward model")
    return discriminator.eval()


def trainable_parameters(discriminator: nn.Module) -> list[nn.Parameter]:
    return [p for p in discriminator.parameters() if p.requires_grad]
