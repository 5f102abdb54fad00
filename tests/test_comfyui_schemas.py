"""The ComfyUI node pack's schemas, ids and start-up cost.

ComfyUI itself is absent in CI: its own modules (``comfy_api.latest``, ``folder_paths``, ``comfy.*``) come
from the minimal stand-in in ``tests/comfyui_stub`` (see its README). The node code under test is real.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "comfyui_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

#: Every node id ever released. Ids are stored in users' workflows: never remove or rename one.
RELEASED_IDS = {
    "UniFLLoadRewardModel", "UniFLLoadPerceptionModel", "UniFLScoreImages",
    "UniFLFewStepSampler", "UniFLFewStepSigmas", "UniFLLoadLoRA", "UniFLTrainLoRA", "UniFLTrainRewardModel",
}
SOCKET_TYPES_WITHOUT_TOOLTIP = {"MODEL", "CLIP", "VAE", "IMAGE"}


@pytest.fixture(scope="module")
def nodes():
    from unifl.comfyui_nodes import NODES

    return NODES


def test_ids_unique_prefixed_and_never_renamed(nodes):
    ids = [n.define_schema().node_id for n in nodes]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("UniFL") for i in ids)
    assert RELEASED_IDS <= set(ids), f"released node ids disappeared: {RELEASED_IDS - set(ids)}"


def test_schemas_validate_and_document_every_widget(nodes):
    for node in nodes:
        schema = node.define_schema()
        schema.validate()
        assert schema.category.startswith("UniFL") and schema.display_name and schema.description
        for item in schema.inputs:
            if str(item.io_type) not in SOCKET_TYPES_WITHOUT_TOOLTIP:
                assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"


def test_execute_takes_exactly_the_schema_inputs(nodes):
    for node in nodes:
        schema = node.define_schema()
        params = inspect.signature(node.execute).parameters
        takes_rest = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for item in schema.inputs:
            if item.id in params:
                assert not item.optional or params[item.id].default is not inspect.Parameter.empty, f"{schema.node_id}.{item.id}: optional input needs a default"
            else:
                assert takes_rest and item.optional, f"{schema.node_id}.execute has no parameter for input {item.id}"
        named = [p for p in params if params[p].kind is not params[p].VAR_KEYWORD]
        assert set(named) <= {i.id for i in schema.inputs}, f"{schema.node_id}.execute takes parameters that are not inputs"


def test_entry_point_is_cheap_and_lazy(tmp_path):
    """ComfyUI imports the pack at start: nothing heavy, not even torch (ComfyUI has it loaded anyway)."""
    code = f"""
import asyncio, json, sys
import unifl
after_import = sorted(m for m in ("torch", "comfy_api") if m in sys.modules)
sys.path.insert(0, {str(STUB)!r})
ext = asyncio.run(unifl.comfy_entrypoint())
nodes = asyncio.run(ext.get_node_list())
for n in nodes:
    n.define_schema()
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "peft", "accelerate", "matplotlib", "unifl.core.training.trainer") if m in sys.modules)
print(json.dumps({{"after_import": after_import, "heavy": heavy, "nodes": len(nodes)}}))
"""
    env = dict(os.environ, UNIFL_STUB_COMFY_BASE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"after_import": [], "heavy": [], "nodes": len(RELEASED_IDS)}


def test_missing_training_dependency_is_reported_when_used(monkeypatch):
    import importlib.util

    from unifl.comfyui_nodes import train_jobs as training

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ImportError, match=r"peft.*requirements\.txt"):
        training.check_dependencies()


def test_pyproject_registry_section():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert data["project"]["urls"]["Repository"]
    requirements = (ROOT / "requirements.txt").read_text().lower()
    assert not any(line.split("=")[0].split(">")[0].strip() in ("torch", "torchvision", "xformers") for line in requirements.splitlines())
    assert json.dumps(comfy)  # plain data only
