"""The example workflows reference only existing node ids and inputs, and the UI and API twins agree.

Node interfaces: ComfyUI 0.3.64's core nodes from ``tests/comfyui_stub/core_nodes_0.3.64.json`` (a
reduced ``/object_info``), UniFL's from their schemas (ComfyUI's own imports stubbed, see
``tests/comfyui_stub/README.md``), and the documented third-party allow-list ``THIRD_PARTY``
(ComfyUI-AnimateDiff-Evolved). The real-ComfyUI tests check the same graphs against a live server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

STUB = Path(__file__).resolve().parent / "comfyui_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import workflows as wf  # noqa: E402

NAMES = sorted(wf.definitions())


@pytest.fixture(scope="module")
def info():
    return wf.node_info()


def test_every_workflow_has_ui_and_api_files():
    assert {p.stem for p in wf.WORKFLOWS.glob("*.json")} == set(NAMES)
    assert {p.stem for p in wf.API.glob("*.json")} == set(NAMES)
    # ComfyUI's template browser lists <pack>/workflows/*.json (example_workflows/ too); API twins sit one level down so
    # they are not offered as (broken) UI workflows.
    assert wf.WORKFLOWS.name == "workflows" and wf.API.parent == wf.WORKFLOWS


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_uses_only_existing_ids_and_inputs(name, info):
    graph = json.loads((wf.API / f"{name}.json").read_text())
    assert wf.check_api(graph, info) == []


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_the_api_twin(name, info):
    ui = json.loads((wf.WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((wf.API / f"{name}.json").read_text())
    assert wf.ui_to_api(ui, info) == wf.strip_meta(api)
    ids = {n["id"] for n in ui["nodes"]}
    for link_id, source, _, target, slot, kind in ui["links"]:
        assert source in ids and target in ids
        node = next(n for n in ui["nodes"] if n["id"] == target)
        assert node["inputs"][slot]["link"] == link_id and node["inputs"][slot]["type"] in (kind, "*")


def test_committed_files_are_the_generated_ones(info):
    for name, (graph, _) in wf.definitions().items():
        assert json.loads((wf.API / f"{name}.json").read_text()) == dict(sorted(graph.items(), key=lambda kv: int(kv[0]))), f"regenerate: python {STUB / 'workflows.py'}"


def test_third_party_ids_only_where_documented():
    for name in NAMES:
        graph = json.loads((wf.API / f"{name}.json").read_text())
        used = {n["class_type"] for n in graph.values()} & set(wf.THIRD_PARTY)
        if used:
            notes = next(n for n in json.loads((wf.WORKFLOWS / f"{name}.json").read_text())["nodes"] if n["type"] == "Note")["widgets_values"][0]
            assert "ComfyUI-AnimateDiff-Evolved" in notes, f"{name} uses {used} but does not say it needs the pack"
    assert any({n["class_type"] for n in json.loads((wf.API / f"{name}.json").read_text()).values()} & set(wf.THIRD_PARTY) for name in NAMES)
