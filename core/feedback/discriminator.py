"""Stage 2's discriminator: a trainable copy of one reward model (paper §4.3: the detail reward).

Copying a large reward model whole (a CLIP-H or BLIP tower) would hold a second copy of its weights
plus AdamW's two moments for each. Most reward models are a frozen trunk with a small ``head``; the
head-only discriminator shares the trunk with the reward model (frozen, never copied) and trains a copy
of the head alone. A head alone may be too little to keep up with the generator at real size (the
paper updates the whole reward model), so ``head+N`` also trains copies of the trunk's last ``N``
blocks: the last entries of its last-registered block list (transformers' ``layer``/``layers``; for
ImageReward the BLIP text encoder's cross-attention layers, for a CLIP scorer its vision tower's last
layers), the blocks nearest the head. Everything else stays shared and frozen.
"""

from __future__ import annotations

import copy
import re

from torch import nn

TRAINABLE = ("auto", "all", "head", "head+N")
_HEAD_AND_BLOCKS = re.compile(r"head\+([1-9][0-9]*)")
#: Above this many parameters ``auto`` trains the head alone (when the model has one).
HEAD_ONLY_ABOVE = 20_000_000


def is_trainable_setting(trainable: str) -> bool:
    """``auto``, ``all``, ``head`` or ``head+N`` (N ≥ 1 trunk blocks beside the head)."""
    return trainable in ("auto", "all", "head") or bool(_HEAD_AND_BLOCKS.fullmatch(trainable))


def trainable_part(reward: nn.Module, trainable: str, name: str) -> str:
    """What of ``reward`` a discriminator set to ``trainable`` trains: ``"all"``, ``"head"`` or ``"head+N"`` (``auto`` resolved)."""
    if not is_trainable_setting(trainable):
        raise ValueError(f"discriminator trainable part {trainable!r}: use one of {', '.join(TRAINABLE)}")
    head = getattr(reward, "head", None)
    if trainable == "auto":
        large = sum(p.numel() for p in reward.parameters()) > HEAD_ONLY_ABOVE
        return "head" if large and isinstance(head, nn.Module) else "all"
    if trainable != "all" and not isinstance(head, nn.Module):
        raise ValueError(f"the {name} reward model ({type(reward).__name__}) has no 'head' module to train alone; set adversarial.discriminator_trainable = 'all'")
    if trainable.startswith("head+"):
        path, blocks = last_block_list(reward, name)
        if int(trainable[5:]) > len(blocks):
            raise ValueError(f"adversarial.discriminator_trainable = {trainable!r}, but the {name} reward model's last block list ({path}) has {len(blocks)} blocks: use head+{len(blocks)} at most")
    return trainable


def last_block_list(reward: nn.Module, name: str) -> tuple[str, nn.ModuleList]:
    """The trunk's last-registered ``nn.ModuleList`` of two or more blocks (outside the head), by its path."""
    lists = [(path, m) for path, m in reward.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1 and not (path == "head" or path.startswith("head."))]
    if not lists:
        raise ValueError(f"the {name} reward model ({type(reward).__name__}) has no list of trunk blocks to train beside its head; set adversarial.discriminator_trainable = 'head' or 'all'")
    return lists[-1]


def trainable_parameter_count(reward: nn.Module, trainable: str, name: str) -> int:
    """Parameters a discriminator made from ``reward`` trains (without making it: no copy)."""
    part = trainable_part(reward, trainable, name)
    modules = [reward] if part == "all" else [reward.head]
    if part.startswith("head+"):
        modules += list(last_block_list(reward, name)[1])[-int(part[5:]):]
    return sum(p.numel() for m in modules for p in m.parameters())


def _own_copy_of_path(root: nn.Module, path: str) -> nn.Module:
    """Give ``root`` (already a shallow copy) its own objects along ``path`` and return the module at its end:
    each module on the way is shallow-copied with its own table of submodules, so replacing a child of the
    returned module leaves the reward model untouched."""
    module = root
    for part in path.split("."):
        child = copy.copy(module._modules[part])
        child._modules = dict(child._modules)
        module._modules[part] = child
        module = child
    return module


def make_discriminator(reward: nn.Module, trainable: str, name: str) -> nn.Module:
    """A copy of ``reward`` whose ``trainable`` part ('all', 'head', 'head+N' or 'auto') requires grad and is
    stored in fp32 (an optimizer on half-precision weights loses its small updates), in eval mode.

    ``name`` names the reward model in errors. With 'head' (and 'head+N'), the returned module is a new
    object whose ``head`` (and last ``N`` trunk blocks) are deep copies and whose other submodules are the
    reward model's own (frozen) ones.
    """
    part = trainable_part(reward, trainable, name)
    if part == "all":
        discriminator = copy.deepcopy(reward).float()
        discriminator.requires_grad_(True)
    else:
        discriminator = copy.copy(reward)  # a new Module object sharing the trunk's parameters …
        discriminator._modules = dict(reward._modules)  # … with its own table of submodules
        discriminator.head = copy.deepcopy(reward.head).float().requires_grad_(True)
        if part.startswith("head+"):
            path, _ = last_block_list(reward, name)
            blocks = _own_copy_of_path(discriminator, path)
            for index in range(len(blocks) - int(part[5:]), len(blocks)):
                blocks._modules[str(index)] = copy.deepcopy(blocks[index]).float().requires_grad_(True)
    if not any(p.requires_grad for p in discriminator.parameters()):
        raise ValueError(f"the {name} reward model ({type(reward).__name__}) has no parameters to train as a discriminator; use a learned reward model")
    return discriminator.eval()


def trainable_parameters(discriminator: nn.Module) -> list[nn.Parameter]:
    return [p for p in discriminator.parameters() if p.requires_grad]
