"""UniFL pack.

This folder is three things at once:

* a pip package, ``import unifl`` (``unifl.core`` is the host-free library in ``core/``);
* a ComfyUI custom-node folder (ComfyUI imports this file and looks for ``comfy_entrypoint``);
* an AUTOMATIC1111/Forge extension folder (A1111 runs ``install.py`` and the files in ``scripts/``).

Importing it must stay cheap and must not need ComfyUI, A1111, gradio or even torch: hosts import it at
start-up, and an import failure here shows as "(IMPORT FAILED)" for the whole pack. No relative import at
module level either: pytest imports this file as a plain module when the checkout's folder name is not an
identifier (a CI clone, ``custom_nodes/unifl-pack``). The version lives in ``core`` (``unifl.core.__version__``).
"""


async def comfy_entrypoint():
    """ComfyUI's V3 entry point. The node package is imported only when ComfyUI calls this, so
    ``import unifl`` (the CLI, A1111) never needs ComfyUI."""
    from .comfyui_nodes import comfy_entrypoint as entrypoint

    return await entrypoint()
