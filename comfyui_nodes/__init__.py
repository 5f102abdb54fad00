"""UniFL's ComfyUI nodes (V3 schema, ``comfy_api.latest``): a thin adapter over :mod:`unifl.core`.

Imported when ComfyUI starts: only ``comfy_api`` and ``folder_paths`` are touched here; torch-heavy
code (core's trainer, peft, diffusers, matplotlib) is imported inside ``execute``, so a missing
optional dependency is reported by the node that needs it instead of failing the whole pack.

Node ids are prefixed ``UniFL`` and never renamed once released (workflows store them).
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import paths, templates

paths.register_model_folders()
templates.keep_template_order()

from .nodes.feedback import NODES as _FEEDBACK  # noqa: E402
from .nodes.sampling import NODES as _SAMPLING  # noqa: E402
from .nodes.train_lora import NODES as _TRAIN  # noqa: E402
from .nodes.train_reward import NODES as _REWARD  # noqa: E402

NODES: list[type[io.ComfyNode]] = [*_FEEDBACK, *_SAMPLING, *_TRAIN, *_REWARD]


class UniFLExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> UniFLExtension:
    return UniFLExtension()
