"""The example workflows reference only existing node ids and inputs, and the UI and API twins agree.

Node interfaces: ComfyUI 0.3.64's core nodes from ``tests/comfyui_stub/core_nodes_0.3.64.json`` (a
reduced ``/object_info``), UniFL's from their schemas (ComfyUI's own imports stubbed, see
``tests/comfyui_stub/README.md``), and the documented third-party allow-list ``THIRD_PARTY``
(ComfyUI-AnimateDiff-Evolved). The real-ComfyUI tests check the same graphs against a live server.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STUB = Path(__file__).resolve().parent / "comfyui_stub"
if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))

import workflows as wf  # noqa: E402

NAMES = sorted(wf.definitions())


@pytest.fixture(scope="module")
def info():
    return wf.node_info()


def test_every_workflow_has_ui_and_api_files_and_a_thumbnail():
    assert {p.stem for p in wf.WORKFLOWS.glob("*.json")} == set(NAMES)
    assert {p.stem for p in wf.API.glob("*.json")} == set(NAMES)
    # The Templates browser's card image is <name>.jpg beside <name>.json (made by tests/comfyui_stub/thumbnails.py).
    assert {p.stem for p in wf.WORKFLOWS.glob("*.jpg")} == set(NAMES)
    for name in NAMES:
        path = wf.WORKFLOWS / f"{name}.jpg"
        with Image.open(path) as image:
            assert (image.format, image.size) == ("JPEG", (384, 384)), name
        assert 5_000 < path.stat().st_size < 64_000, f"{name}.jpg is {path.stat().st_size} bytes"
    # The file name is the card's title (the frontend reads none from the file): numbered, readable, portable.
    for name in NAMES:
        assert re.fullmatch(r"UniFL [1-9] - [A-Za-z0-9 ()+-]+", name), name
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


def model_entries(name: str) -> dict[str, dict]:
    """``properties.models`` of the UI workflow's nodes, by file name."""
    ui = json.loads((wf.WORKFLOWS / f"{name}.json").read_text())
    entries = {}
    for node in ui["nodes"]:
        for model in node["properties"].get("models", []):
            # The frontend's schema (zModelFile, 1.27): name, url (a URL), directory; it only lists an entry whose
            # name is the node's current widget value, and only when the file is not in that folder.
            assert set(model) == {"name", "url", "directory"} and re.match(r"https://[^ ]+$", model["url"]), model
            assert model["name"] in node["widgets_values"], (name, node["type"], model)
            entries[model["name"]] = model
    return entries


def test_the_missing_models_dialog_lists_only_what_it_can_download():
    """properties.models holds only files the dialog downloads (a .safetensors/.sft from civitai.com or
    huggingface.co: it refuses every other entry); every other file a workflow selects is named in its note."""
    for name in NAMES:
        entries = model_entries(name)
        for entry in entries.values():
            assert entry["url"].startswith(wf.DIALOG_SOURCES) and entry["name"].endswith(wf.DIALOG_SUFFIXES), (name, entry)
        graph = json.loads((wf.API / f"{name}.json").read_text())
        if any(n["class_type"] == "CheckpointLoaderSimple" for n in graph.values()):
            assert entries[wf.CKPT]["directory"] == "checkpoints"
        ui = json.loads((wf.WORKFLOWS / f"{name}.json").read_text())
        note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
        selected = {v for n in graph.values() for k, v in n["inputs"].items() if k in ("model_name", "lora_name", "init_lora", "ckpt_name", "control_net_name")}
        selected -= {"(none)"} | {v for v in selected if v.startswith(("builtin/", "pocket/"))}
        for file in selected - set(entries):
            assert file.rstrip("/").split("/")[-1] in note, f"{name}: the note does not say how to get {file}"
    assert model_entries(wf.CONTROLNET)[wf.CONTROLNET_FILE]["directory"] == "controlnet"
    assert model_entries(wf.SCORE) == {}


def test_training_workflows_need_no_hand_made_folder():
    """Their real images are the embedded pocket world ('pocket', a registered image source), so they run as shipped."""
    from unifl.core.data import IMAGE_SOURCES

    for name in (wf.TRAIN_1, wf.TRAIN_2):
        graph = json.loads((wf.API / f"{name}.json").read_text())
        folders = [n["inputs"]["image_folder"] for n in graph.values() if n["class_type"] == "UniFLTrainLoRA"]
        assert folders == ["pocket"] and "pocket" in IMAGE_SOURCES, name


@pytest.mark.parametrize("name, recipe", [(wf.RECIPE_1, "sd15-stage1.toml"), (wf.RECIPE_2, "sd15-stage2.toml")])
def test_the_recipe_workflows_train_what_the_recipe_files_train(name, recipe):
    """UniFL 7/8 and recipes/sd15-stage*.toml: the same public models, aspects, thresholds α, weights and settings."""
    from unifl.core.config import load_config
    from unifl.core.feedback.public_models import recognise

    config = load_config(wf.ROOT / "recipes" / recipe)
    graph = json.loads((wf.API / f"{name}.json").read_text())
    loaders = {"UniFLLoadRewardModel": "rewards", "UniFLLoadPerceptionModel": "perception"}
    chosen = {section: [n["inputs"] for n in graph.values() if loaders.get(n["class_type"]) == section] for section in loaders.values()}
    assert all(c["kind"] == "auto" and c["aspect"] == "auto" and not c["model_name"].startswith(("builtin/", "pocket/")) for c in chosen["rewards"] + chosen["perception"])
    rewards = [(m.aspect, m.kind, m.threshold, c["weight"]) for c in chosen["rewards"] for m in [recognise("rewards", c["model_name"].rstrip("/"))]]
    assert rewards == [(r.aspect, r.kind, r.threshold, r.weight) for r in config.rewards]
    assert all(c["use_model_threshold"] for c in chosen["rewards"])  # the loader takes the recipe's α for a published model
    assert [(recognise("perception", c["model_name"]).aspect, recognise("perception", c["model_name"]).kind) for c in chosen["perception"]] == [(p.aspect, p.kind) for p in config.perception]
    train = next(n["inputs"] for n in graph.values() if n["class_type"] == "UniFLTrainLoRA")
    o = config.optim
    assert (train["stage"], train["learning_rate"], train["steps"], train["gradient_accumulation"], train["batch_size"], train["mixed_precision"], train["resolution"]) == \
        (config.stage, o.learning_rate, o.max_steps, o.gradient_accumulation_steps, o.batch_size, o.mixed_precision, config.data.resolution)
    assert train["image_folder"] == wf.RECIPE_IMAGES and (train["init_lora"] == "(none)") == (config.stage == "1")
    for entry in model_entries(name).values():
        assert entry["directory"] in ("checkpoints", "loras", "unifl_rewards", "unifl_perception")


@pytest.fixture()
def empty_comfyui(tmp_path):
    """A ComfyUI with nothing installed: no model file, no input folder."""
    import folder_paths

    from unifl.comfyui_nodes import paths

    folder_paths.set_base(str(tmp_path))
    paths.register_model_folders()
    return tmp_path


def test_a_recipe_workflow_names_every_missing_file_when_queued(empty_comfyui):
    """ComfyUI validates a queued prompt before any node runs (the stand-in ``execution.validate_prompt``; the real
    server in tests/test_comfyui_real.py): every UniFL node of UniFL 7 names its missing file in the same refusal."""
    from execution import validate_prompt

    from unifl.comfyui_nodes import NODES

    classes = {n.define_schema().node_id: n for n in NODES}
    graph = json.loads((wf.API / f"{wf.RECIPE_1}.json").read_text())
    errors = validate_prompt(graph, classes)
    named = " ".join(e for errs in errors.values() for e in errs)
    for missing in (*wf.RECIPE_REWARDS, *wf.RECIPE_PERCEPTION):
        assert f"model_name - {missing!r} is not in" in named, missing
    assert f"image_folder - image_folder: {empty_comfyui / 'input' / wf.RECIPE_IMAGES} does not exist" in named
    assert sorted(errors, key=int) == [str(i) for i in range(2, 10)]  # the 4 reward loaders, 3 perception loaders, the trainer

    graph2 = json.loads((wf.API / f"{wf.RECIPE_2}.json").read_text())
    trainer = validate_prompt(graph2, classes)["9"]
    assert len(trainer) == 2 and f"init_lora: LoRA {wf.R1 + '.safetensors'!r} is not in" in trainer[0]  # one message, under each input it names

    (empty_comfyui / "models" / "unifl" / "perception").mkdir(parents=True)
    (empty_comfyui / "models" / "unifl" / "perception" / wf.RECIPE_PERCEPTION[0]).write_bytes(b"")
    (empty_comfyui / "models" / "unifl" / "rewards" / "PickScore_v1").mkdir(parents=True)
    (empty_comfyui / "input" / wf.RECIPE_IMAGES).mkdir(parents=True)
    assert sorted(validate_prompt(graph, classes), key=int) == ["2", "4", "5", "7", "8"]  # what is there now passes


def test_the_quick_start_workflows_pass_validation_in_an_empty_comfyui(empty_comfyui):
    from execution import validate_prompt

    from unifl.comfyui_nodes import NODES

    classes = {n.define_schema().node_id: n for n in NODES}
    for name in (wf.SCORE, wf.TRAIN_1):
        assert validate_prompt(json.loads((wf.API / f"{name}.json").read_text()), classes) == {}, name


def test_the_templates_browser_lists_the_workflows_in_run_order():
    """ComfyUI lists a pack's templates in directory order (here as one install showed them); the pack's middleware
    (comfyui_nodes.templates) puts its own list in run order and leaves other packs' lists alone. The real server:
    tests/test_comfyui_real.py."""
    from unifl.comfyui_nodes import templates

    shown = [NAMES[i - 1] for i in (1, 2, 5, 4, 3, 7, 6, 8)]
    other = ["b", "a", "c"]
    for pack in templates.PACK_NAMES:
        assert templates.ordered({pack: shown, "other-pack": other}) == {pack: NAMES, "other-pack": other}
    assert [int(re.match(r"UniFL (\d+) - ", n)[1]) for n in sorted(NAMES, key=templates.run_order)] == list(range(1, 9))
    assert templates.run_order("UniFL 10 - x") > templates.run_order("UniFL 9 - x")
    assert templates.keep_template_order() is False  # outside a ComfyUI server it changes nothing
