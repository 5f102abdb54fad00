"""Stand-in for the part of ComfyUI's ``execution.py`` that validates a queued prompt (``POST /prompt``).

As in 0.3.64's ``validate_inputs``: a V3 node that overrides ``ComfyNode.validate_inputs`` is called with those
of its inputs that the override names as arguments and that hold a value (a link has none yet), before any node
runs; a returned string fails that node, reported once per named input as
``"Custom validation failed for node: <input> - <message>"``. ComfyUI collects the failures of every node of the
prompt into one response, so each missing file of each node is named at once. The real ComfyUI runs the same
check in ``tests/test_comfyui_real.py``.
"""

from __future__ import annotations

import inspect


def validate_prompt(prompt: dict, node_classes: dict) -> dict[str, list[str]]:
    """``{node id: [error, …]}`` for the nodes of ``prompt`` (API format) whose ``validate_inputs`` refuses."""
    from comfy_api.latest.io import ComfyNode

    errors = {}
    for node_id, node in prompt.items():
        cls = node_classes.get(node["class_type"])
        if cls is None or cls.validate_inputs.__func__ is ComfyNode.validate_inputs.__func__:
            continue
        spec = inspect.getfullargspec(cls.validate_inputs)
        named = {k: v for k, v in node["inputs"].items() if not isinstance(v, list) and (k in spec.args or spec.varkw)}
        result = cls.validate_inputs(**named)
        if result is not True:
            errors[node_id] = [f"Custom validation failed for node: {name}" + ("" if result is False else f" - {result}") for name in named]
    return errors
