"""Stand-in for ``comfy.model_management``: one CPU device, models "loaded" by applying their patches."""

from __future__ import annotations

import torch

LOAD_CALLS: list[list] = []
_interrupted = False


class InterruptProcessingException(Exception):
    pass


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False) -> None:
    LOAD_CALLS.append(list(models))
    for m in models:
        if hasattr(m, "patch_model"):
            m.patch_model()


def load_model_gpu(model) -> None:
    load_models_gpu([model])


def soft_empty_cache(force=False) -> None:
    pass


def interrupt_current_processing(value: bool = True) -> None:
    global _interrupted
    _interrupted = value


def processing_interrupted() -> bool:
    return _interrupted


def throw_exception_if_processing_interrupted() -> None:
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()
