"""What the queued prompt (API graph) tells a node that ComfyUI's objects do not carry.

A ``MODEL`` (``ModelPatcher``) does not know which file it was loaded from, but the prompt does: the node's
``model`` input links, through nodes that pass a model on (``LoraLoader``, ``UniFLLoadLoRA``,
``ModelSamplingDiscrete``, …), back to the loader that read a checkpoint.
"""

from __future__ import annotations

#: Inputs of ComfyUI's loaders that name the file a MODEL comes from (CheckpointLoaderSimple,
#: CheckpointLoader, ImageOnlyCheckpointLoader: ``ckpt_name``; UNETLoader: ``unet_name``).
FILE_INPUTS = ("ckpt_name", "unet_name")


def checkpoint_name(prompt: dict | None, node_id: str | None, input_name: str = "model") -> str:
    """The checkpoint file behind ``node_id``'s ``input_name`` in ``prompt``; ``""`` when the graph does not say.

    Follows the ``model`` input of each node upstream until one names a file; a value that is not a link
    (or a cycle, or a node missing from the prompt) ends the search with ``""``.
    """
    if not prompt or node_id is None:
        return ""
    link = prompt.get(str(node_id), {}).get("inputs", {}).get(input_name)
    seen: set[str] = set()
    while isinstance(link, list) and len(link) == 2 and str(link[0]) not in seen:
        seen.add(str(link[0]))
        inputs = prompt.get(str(link[0]), {}).get("inputs", {})
        for key in FILE_INPUTS:
            if isinstance(inputs.get(key), str) and inputs[key]:
                return inputs[key]
        link = inputs.get("model")
    return ""
