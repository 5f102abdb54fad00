"""The example workflows: definitions, the UI-format writer, and the checks the tests run.

Each workflow is defined once here in API format (what ``POST /prompt`` takes); the UI-format file
(what ComfyUI's editor and template browser open) is generated from it with the node interfaces:

* core nodes: ``core_nodes_0.3.64.json``, a reduced ``GET /object_info`` of ComfyUI 0.3.64;
* UniFL nodes: their V3 schemas;
* third-party nodes: :data:`THIRD_PARTY`, a documented allow-list (AnimateDiff-Evolved), the only ids
  allowed besides core and UniFL ones.

Regenerate after changing a workflow or a node's inputs (then commit both folders)::

    .venv/bin/python tests/comfyui_stub/workflows.py            # writes workflows/*.json and api/*.json
    .venv/bin/python tests/comfyui_stub/thumbnails.py           # the Templates browser's workflows/*.jpg

File names are the titles: ComfyUI's Templates browser (frontend 1.27) shows a pack's workflow under its
file name and fetches ``<name>.jpg`` beside it as the card's thumbnail; it reads no title from the file or
an index. The model files a workflow needs are listed in the UI file the frontend's way (``properties.models``
of the node that selects the file: name, folder, where to get it), so opening a template names what is
missing; :data:`MODEL_FILES` holds them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKFLOWS = ROOT / "workflows"
API = WORKFLOWS / "api"
CORE_SNAPSHOT = HERE / "core_nodes_0.3.64.json"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

#: Third-party node ids a workflow may use, with the pack that provides them and their inputs
#: (name → (type, optional)), read from that pack's source. Only these are exempt from the
#: "core or UniFL node ids only" rule; workflows using them say so in their notes.
THIRD_PARTY = {
    "ADE_AnimateDiffLoaderGen1": {
        "pack": "Kosinkadink/ComfyUI-AnimateDiff-Evolved (animatediff/nodes_gen1.py @ d8d163c)",
        "inputs": [("model", "MODEL", False), ("model_name", "COMBO", False), ("beta_schedule", "COMBO", False),
                   ("context_options", "CONTEXT_OPTIONS", True), ("motion_lora", "MOTION_LORA", True), ("ad_settings", "AD_SETTINGS", True),
                   ("ad_keyframes", "AD_KEYFRAMES", True), ("sample_settings", "SAMPLE_SETTINGS", True), ("scale_multival", "MULTIVAL", True),
                   ("effect_multival", "MULTIVAL", True), ("per_block", "PER_BLOCK", True)],
        "outputs": ["MODEL"],
    },
    "ADE_StandardUniformContextOptions": {
        "pack": "Kosinkadink/ComfyUI-AnimateDiff-Evolved (animatediff/nodes_context.py @ d8d163c)",
        "inputs": [("context_length", "INT", False), ("context_stride", "INT", False), ("context_overlap", "INT", False),
                   ("fuse_method", "COMBO", True), ("use_on_equal_length", "BOOLEAN", True), ("start_percent", "FLOAT", True),
                   ("guarantee_steps", "INT", True), ("prev_context", "CONTEXT_OPTIONS", True), ("view_opts", "VIEW_OPTS", True)],
        "outputs": ["CONTEXT_OPTIONS"],
    },
}

#: The workflows' titles, which are their file names (see the module docstring); numbered in the order to run them.
SCORE = "UniFL 1 - Score images per aspect"
TRAIN_1 = "UniFL 2 - Train stage 1 (quality)"
TRAIN_2 = "UniFL 3 - Train stage 2 (4-step)"
FOUR_STEP = "UniFL 4 - 4-step generation"
CONTROLNET = "UniFL 5 - 4-step with ControlNet"
ANIMATEDIFF = "UniFL 6 - 4-step with AnimateDiff"
RECIPE_1 = "UniFL 7 - Train stage 1 with public models (recipe)"
RECIPE_2 = "UniFL 8 - Train stage 2 with public models (recipe)"

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
CONTROLNET_FILE = "control_v11p_sd15_canny_fp16.safetensors"
MOTION_MODULE = "mm_sd_v15_v2.ckpt"
PROMPT = "a photo of a red fox in a snowy forest, golden hour, detailed fur"
TRAIN_PROMPTS = "a photo of a red fox in a snowy forest\na bowl of ramen on a wooden table, soft window light\na lighthouse on a cliff at dusk, dramatic sky\na portrait of an old fisherman, film grain"
S1, S2 = "unifl/unifl_stage1", "unifl/unifl_stage2"
R1, R2 = "unifl/recipe_stage1", "unifl/recipe_stage2"
#: The recipe's real images: COCO with captions and masks, made by `unifl coco-folder` into ComfyUI's input folder.
RECIPE_IMAGES = "unifl_coco"
#: docs/recipes.md's public models as the ComfyUI loaders name them (files, and folders as ``name/``).
RECIPE_REWARDS = ("HPS_v2.1_compressed.pt", "PickScore_v1/", "ImageReward/", "laion-aesthetic/")
RECIPE_PERCEPTION = ("vgg16-397923af.pth", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "deeplabv3_resnet50_coco-cd0a2569.pth")
RECIPES_DOC = "https://github.com/unifl-pack/unifl/blob/main/docs/recipes.md"

#: (node class, widget, file) → (ComfyUI model folder, URL) of the model files a workflow selects that ComfyUI's
#: missing-models dialog can download, written into the UI files as ``properties.models`` (frontend 1.27 format:
#: name, url, directory). The dialog (frontend ``MissingModelsWarning``) downloads only a ``.safetensors``/``.sft``
#: file from civitai.com or huggingface.co (:data:`DIALOG_SOURCES`, :data:`DIALOG_SUFFIXES`), and refuses every
#: other entry with an error; so the rest (the motion module, the recipe's .pt/.pth and folder models, and the
#: LoRAs the pack trains itself) are not listed: each workflow's note says how to get them.
MODEL_FILES = {
    ("CheckpointLoaderSimple", "ckpt_name", CKPT): ("checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors"),
    ("ControlNetLoader", "control_net_name", CONTROLNET_FILE): ("controlnet", "https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/control_v11p_sd15_canny_fp16.safetensors"),
}
#: What ComfyUI's missing-models dialog downloads (frontend 1.27.10 ``MissingModelsWarning``: allowedSources, allowedSuffixes).
DIALOG_SOURCES = ("https://civitai.com/", "https://huggingface.co/")
DIALOG_SUFFIXES = (".safetensors", ".sft")


# -- node interfaces ----------------------------------------------------------------------------------

def node_info() -> dict[str, dict]:
    """``{class_type: {"inputs": [(name, type, optional, control_after_generate)], "outputs": [types]}}``."""
    info = {}
    snapshot = json.loads(CORE_SNAPSHOT.read_text())["nodes"]
    for name, node in snapshot.items():
        inputs = []
        for section in ("required", "optional"):
            for key in node["input_order"].get(section, []):
                kind, opts = node["input"][section][key]
                inputs.append((key, kind, section == "optional", bool(opts.get("control_after_generate"))))
        info[name] = {"inputs": inputs, "outputs": node["output"], "source": "core"}
    for name, node in THIRD_PARTY.items():
        info[name] = {"inputs": [(n, t, o, False) for n, t, o in node["inputs"]], "outputs": node["outputs"], "source": node["pack"]}
    info.update(unifl_node_info())
    return info


def unifl_node_info() -> dict[str, dict]:
    if "comfy_api" not in sys.modules:
        sys.path.insert(0, str(HERE))
    from unifl.comfyui_nodes import NODES

    info = {}
    for node in NODES:
        schema = node.define_schema()
        inputs = [(i.id, _io_type(i), bool(getattr(i, "optional", False)), bool((getattr(i, "options_dict", None) or {}).get("control_after_generate") or getattr(i, "control_after_generate", False))) for i in schema.inputs]
        inputs.sort(key=lambda item: item[2])  # /object_info order: required inputs, then optional ones
        info[schema.node_id] = {"inputs": inputs, "outputs": [_io_type(o) for o in schema.outputs], "source": "unifl"}
    return info


def _io_type(item) -> str:
    kind = item.io_type
    return "COMBO" if isinstance(kind, list) else str(kind)


# -- checks --------------------------------------------------------------------------------------------

def check_api(graph: dict, info: dict) -> list[str]:
    """Problems of an API-format graph: unknown ids or inputs, missing required inputs, bad links."""
    problems = []
    for node_id, node in graph.items():
        kind = node.get("class_type")
        if kind not in info:
            problems.append(f"node {node_id}: unknown class_type {kind!r} (not core, not UniFL, not in THIRD_PARTY)")
            continue
        spec = {name: (t, optional) for name, t, optional, _ in info[kind]["inputs"]}
        for name, value in node["inputs"].items():
            if name not in spec:
                problems.append(f"node {node_id} ({kind}): no input named {name!r}")
                continue
            if isinstance(value, list):
                source, slot = value
                if str(source) not in graph:
                    problems.append(f"node {node_id} ({kind}).{name}: link from missing node {source}")
                    continue
                source_kind = graph[str(source)]["class_type"]
                outputs = info.get(source_kind, {}).get("outputs", [])
                if not isinstance(slot, int) or slot >= len(outputs):
                    problems.append(f"node {node_id} ({kind}).{name}: {source_kind} has no output {slot}")
                elif outputs[slot] != spec[name][0] and spec[name][0] not in ("*",) and not (spec[name][0] == "COMBO" and outputs[slot] == "COMBO"):
                    problems.append(f"node {node_id} ({kind}).{name}: expects {spec[name][0]}, gets {outputs[slot]} from {source_kind}")
            elif spec[name][0] not in WIDGET_TYPES:
                problems.append(f"node {node_id} ({kind}).{name}: a {spec[name][0]} input needs a link, got the value {value!r}")
        for name, (t, optional) in spec.items():
            if not optional and name not in node["inputs"]:
                problems.append(f"node {node_id} ({kind}): required input {name!r} missing")
    return problems


def ui_to_api(ui: dict, info: dict) -> dict:
    """Convert a UI-format workflow back to API format (what the frontend does when you queue it)."""
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        if node["type"] in ("Note", "MarkdownNote"):
            continue  # frontend-only
        spec = info[node["type"]]["inputs"]
        values = list(node.get("widgets_values", []))
        inputs = {}
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        for name, kind, _, control in spec:
            if kind in WIDGET_TYPES:
                value = values.pop(0)
                if control:
                    values.pop(0)  # the "fixed"/"randomize" companion value
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        if values:
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values too many")
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def strip_meta(graph: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}


# -- writing UI format ---------------------------------------------------------------------------------

def api_to_ui(graph: dict, info: dict, notes: str) -> dict:
    """A UI-format workflow for ``graph`` (laid out left to right by dependency depth, a Note on top)."""
    depth: dict[str, int] = {}

    def level(node_id: str) -> int:
        if node_id not in depth:
            sources = [str(v[0]) for v in graph[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((level(s) for s in sources), default=-1)
        return depth[node_id]

    for node_id in graph:
        level(node_id)
    raw = []  # (link id, from node, from slot, to node, input name)
    for node_id in sorted(graph, key=int):
        for name, value in graph[node_id]["inputs"].items():
            if isinstance(value, list):
                raw.append((len(raw) + 1, str(value[0]), value[1], node_id, name))
    links, nodes, rows = [], [], {}
    for order, node_id in enumerate(sorted(graph, key=lambda n: (depth[n], int(n)))):
        node, spec = graph[node_id], info[graph[node_id]["class_type"]]
        incoming = {name: link_id for link_id, _, _, to, name in raw if to == node_id}
        inputs, widgets = [], []
        for name, kind, _optional, control in spec["inputs"]:
            if kind in WIDGET_TYPES:
                value = node["inputs"].get(name)
                widgets.append(None if isinstance(value, list) else value)
                if control:
                    widgets.append("fixed")
                if name in incoming:
                    inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": incoming[name]})
            else:
                inputs.append({"name": name, "type": kind, "link": incoming.get(name)})
        for link_id, source, slot, to, name in raw:
            if to == node_id:
                links.append([link_id, int(source), slot, int(to), [i["name"] for i in inputs].index(name), info[graph[source]["class_type"]]["outputs"][slot]])
        outs = [{"name": t, "type": t, "links": [l for l, s, sl, _, _ in raw if s == node_id and sl == i], "slot_index": i} for i, t in enumerate(spec["outputs"])]
        models = [{"name": value, "url": url, "directory": directory} for (kind, name, value), (directory, url) in MODEL_FILES.items()
                  if kind == node["class_type"] and node["inputs"].get(name) == value]
        multiline = sum(1 for name, kind, *_ in spec["inputs"] if kind == "STRING" and "\n" in str(node["inputs"].get(name, "")) or name in ("prompts", "extra_settings", "prompt", "text"))
        height = 40 + 22 * max(len([i for i in inputs if "widget" not in i]), len(outs)) + 26 * len(widgets) + 70 * multiline
        top = rows.get(depth[node_id], 40)
        rows[depth[node_id]] = top + height + 50
        nodes.append({
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 420 * depth[node_id], top], "size": [380, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outs,
            "properties": {"Node name for S&R": node["class_type"], **({"cnr_id": "comfy-core", "ver": "0.3.64"} if spec["source"] == "core" else {}), **({"models": models} if models else {})},
            "widgets_values": widgets,
        })
    note_id = max(int(n) for n in graph) + 1
    nodes.append({"id": note_id, "type": "Note", "pos": [40, -260], "size": [700, 220], "flags": {}, "order": len(nodes), "mode": 0,
                  "inputs": [], "outputs": [], "properties": {}, "widgets_values": [notes]})
    links.sort()
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 300]}}, "version": 0.4}


# -- the workflows ---------------------------------------------------------------------------------------

def _reward(name: str, weight: float = 1.0) -> dict:
    return {"class_type": "UniFLLoadRewardModel", "inputs": {"model_name": name, "aspect": "auto", "weight": weight, "use_model_threshold": True, "threshold": 0.0, "kind": "auto"}}


def _perception(name: str) -> dict:
    return {"class_type": "UniFLLoadPerceptionModel", "inputs": {"model_name": name, "aspect": "auto", "weight": 1.0, "kind": "auto"}}


def _recipe_rewards() -> dict[str, dict]:
    """The recipe's four aspect rewards (nodes "2"–"5") with its weights; each threshold is the recipe's α,
    which the loader takes for a published model (use_model_threshold)."""
    from unifl.core.feedback.public_models import recognise

    return {str(i): _reward(name, recognise("rewards", name.rstrip("/")).weight) for i, name in enumerate(RECIPE_REWARDS, 2)}


def _train(stage: str, lora: str, init: str, rewards: list[str], perception: list[str], **changes) -> dict:
    inputs = {
        "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "stage": stage, "lora_name": lora, "prompts": TRAIN_PROMPTS,
        "image_folder": "pocket", "steps": 500, "learning_rate": 5e-05, "rank": 16, "alpha": 16.0, "lora_targets": "attention",
        "resolution": 512, "batch_size": 1, "gradient_accumulation": 1, "seed": 0, "mixed_precision": "no", "gradient_checkpointing": True,
        "init_lora": init, "overwrite": False, "extra_settings": "",
    } | changes
    inputs |= {f"reward_{i}": [r, 0] for i, r in enumerate(rewards, 1)}
    inputs |= {f"perception_{i}": [p, 0] for i, p in enumerate(perception, 1)}
    return {"class_type": "UniFLTrainLoRA", "inputs": inputs}


def _text(text: str, clip: str = "1") -> dict:
    return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": [clip, 1]}}


def definitions() -> dict[str, tuple[dict, str]]:
    ckpt = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
    latent = {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}
    sampler_custom = lambda model, cfg, sampler, sigmas, pos="3", neg="4", lat="5": {"class_type": "SamplerCustom", "inputs": {  # noqa: E731
        "model": model, "add_noise": True, "noise_seed": 0, "cfg": cfg, "positive": [pos, 0], "negative": [neg, 0], "sampler": sampler, "sigmas": sigmas, "latent_image": [lat, 0]}}
    out = {}
    out[SCORE] = ({
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": _reward("builtin/colorfulness"), "3": _reward("builtin/sharpness"), "4": _reward("builtin/exposure"),
        "5": {"class_type": "UniFLScoreImages", "inputs": {"images": ["1", 0], "prompt": "", "reward_1": ["2", 0], "reward_2": ["3", 0], "reward_3": ["4", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }, "Score images per aspect with UniFL reward models. Needs no model file. builtin/* are weight-free statistics (colourfulness, sharpness, exposure); put learned aspect reward models (.safetensors) into models/unifl/rewards and pick them in the loaders. The table shows each image's scores and each model's hinge threshold α.")
    out[TRAIN_1] = ({
        "1": ckpt,
        "2": _reward("builtin/colorfulness"), "3": _reward("builtin/sharpness"), "4": _reward("builtin/exposure"),
        "5": {"class_type": "UniFLLoadPerceptionModel", "inputs": {"model_name": "builtin/random-features", "aspect": "auto", "weight": 1.0, "kind": "auto"}},
        "6": _train("1", S1, "(none)", ["2", "3", "4"], ["5"]),
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
        "8": _text(PROMPT), "9": _text(""), "10": latent,
        "11": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 0, "steps": 20, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["8", 0], "negative": ["9", 0], "latent_image": ["10", 0], "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "unifl/stage1"}},
    }, "UniFL stage 1 (quality), QUICK START: needs no feedback model file, so it trains against weight-free image statistics (colourfulness, sharpness, exposure: not learned aesthetics) and a random-feature style network; for the paper's recipe with public models open 'UniFL 7'. Perceptual feedback on real images + decoupled aesthetic feedback, trained as a LoRA on the loaded checkpoint (NEEDS an SD1.5 checkpoint in models/checkpoints; the one named downloads from the missing-models dialog). Real images: image_folder 'pocket' is the embedded pocket world's captioned shapes, so the workflow runs as it is; for your own style put images with a .txt caption each into a folder of ComfyUI/input, e.g. unifl_data, and type its name (optional .instances.png/.json and .semantic.png masks for the structure/layout perception models). The LoRA is saved to models/loras/unifl/unifl_stage1.safetensors (LoraLoader lists it after Refresh); the KSampler then samples with it (20 DDIM steps, leading spacing = ddim_uniform, CFG 7.5: the stage-1 sampler contract).")
    out[TRAIN_2] = ({
        "1": ckpt, "2": _reward("builtin/colorfulness"), "3": _reward("builtin/sharpness"), "4": _reward("builtin/exposure"),
        "6": _train("2", S2, S1 + ".safetensors", ["2", "3", "4"], []),
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
        "8": _text(PROMPT), "9": _text(""), "10": latent,
        "11": {"class_type": "UniFLFewStepSampler", "inputs": {"sampler": "ddim"}},
        "12": {"class_type": "UniFLFewStepSigmas", "inputs": {"model": ["6", 0], "steps": 4, "spacing": "trailing"}},
        "13": sampler_custom(["6", 0], 1.0, ["11", 0], ["12", 0], "8", "9", "10"),
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["1", 2]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "unifl/stage2"}},
    }, "UniFL stage 2 (4-step acceleration), QUICK START against weight-free image statistics (the recipe with public models: 'UniFL 8'). NEEDS models/loras/unifl/unifl_stage1.safetensors: run 'UniFL 2 - Train stage 1' first (or set init_lora to (none) to train stage 2 alone). Adversarial feedback (the discriminator starts from the 'detail' reward model, here builtin/sharpness) + decoupled aesthetic feedback, continuing the stage-1 LoRA (init_lora), on the same real images as stage 1 (image_folder). Saved to models/loras/unifl/unifl_stage2.safetensors, then sampled in 4 steps without CFG with the UniFL sampler and sigmas (timesteps 999, 749, 499, 249).")
    out[FOUR_STEP] = ({
        "1": ckpt,
        "2": {"class_type": "UniFLLoadLoRA", "inputs": {"model": ["1", 0], "lora_name": S2 + ".safetensors", "strength": 1.0, "steps": 0}},
        "3": _text(PROMPT), "4": _text(""), "5": latent,
        "6": sampler_custom(["2", 0], ["2", 3], ["2", 1], ["2", 2]),
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "unifl/4step"}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["2", 5]}},
    }, "4-step generation with a UniFL stage-2 LoRA. NEEDS models/loras/unifl/unifl_stage2.safetensors: run 'UniFL 2 - Train stage 1' and then 'UniFL 3 - Train stage 2' first (or pick another UniFL stage-2 LoRA in 'Load UniFL LoRA'). 'Load UniFL LoRA' applies the LoRA and outputs the sampler, sigmas and CFG stored in the file (4 DDIM steps, trailing spacing, CFG 1: 4 UNet calls per image). The plain KSampler equivalent is shown in the info text (sampler ddim, scheduler simple, 4 steps, CFG 1).")
    out[CONTROLNET] = ({
        **{k: v for k, v in out[FOUR_STEP][0].items() if k != "6"},
        "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET_FILE}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "12": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["3", 0], "negative": ["4", 0], "control_net": ["10", 0], "image": ["11", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "vae": ["1", 2]}},
        "6": sampler_custom(["2", 0], ["2", 3], ["2", 1], ["2", 2], "12", "12"),
    }, "4-step generation with a UniFL LoRA plus an SD1.5 ControlNet. NEEDS models/loras/unifl/unifl_stage2.safetensors: run 'UniFL 2 - Train stage 1' and then 'UniFL 3 - Train stage 2' first (or pick another UniFL stage-2 LoRA in 'Load UniFL LoRA'). Also NEEDS an SD1.5 ControlNet in models/controlnet (the canny one named downloads from the missing-models dialog; feed it a matching control image, e.g. canny edges). The UniFL LoRA and the ControlNet combine as usual; sampling stays 4 steps without CFG.")
    out[CONTROLNET][0]["6"]["inputs"]["negative"] = ["12", 1]
    out[ANIMATEDIFF] = ({
        "1": ckpt,
        "2": {"class_type": "UniFLLoadLoRA", "inputs": {"model": ["1", 0], "lora_name": S2 + ".safetensors", "strength": 1.0, "steps": 0}},
        "3": _text(PROMPT), "4": _text(""),
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 16}},
        "10": {"class_type": "ADE_StandardUniformContextOptions", "inputs": {"context_length": 16, "context_stride": 1, "context_overlap": 4, "fuse_method": "pyramid", "use_on_equal_length": False, "start_percent": 0.0, "guarantee_steps": 1}},
        "11": {"class_type": "ADE_AnimateDiffLoaderGen1", "inputs": {"model": ["2", 0], "model_name": MOTION_MODULE, "beta_schedule": "autoselect", "context_options": ["10", 0]}},
        "12": {"class_type": "UniFLFewStepSigmas", "inputs": {"model": ["11", 0], "steps": 4, "spacing": "trailing"}},
        "6": sampler_custom(["11", 0], ["2", 3], ["2", 1], ["12", 0]),
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["7", 0], "filename_prefix": "unifl/animatediff", "fps": 8.0, "lossless": False, "quality": 85, "method": "default"}},
    }, f"4-step AnimateDiff with a UniFL LoRA. NEEDS models/loras/unifl/unifl_stage2.safetensors: run 'UniFL 2 - Train stage 1' and then 'UniFL 3 - Train stage 2' first (or pick another UniFL stage-2 LoRA in 'Load UniFL LoRA'). Also NEEDS the third-party pack ComfyUI-AnimateDiff-Evolved (Kosinkadink) and an SD1.5 motion module in models/animatediff_models: {MOTION_MODULE} from huggingface.co/guoyww/animatediff (the missing-models dialog downloads .safetensors files only, so download it by hand). The sigmas are taken from the AnimateDiff-patched model (its beta schedule), 4 trailing steps, CFG from the LoRA (1.0).")
    recipe = dict(image_folder=RECIPE_IMAGES, prompts="", steps=2000, gradient_accumulation=4, mixed_precision="bf16")  # the sd15 preset's
    recipe_note = (f"Everything follows docs/recipes.md ({RECIPES_DOC}) and recipes/sd15-stage*.toml: the same public models, thresholds α, weights "
                   "and settings. The missing-models dialog downloads only the checkpoint (it takes .safetensors files alone); get the feedback models by hand: "
                   "HPS_v2.1_compressed.pt (huggingface.co/xswu/HPSv2) into models/unifl/rewards; vgg16-397923af.pth, maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth and "
                   "deeplabv3_resnet50_coco-cd0a2569.pth (download.pytorch.org/models/, the torchvision weights) into models/unifl/perception; "
                   "three are folders in models/unifl/rewards, shown in the loaders as name/: PickScore_v1/ (huggingface.co/yuvalkirstain/PickScore_v1: config.json + model.safetensors), "
                   "ImageReward/ (ImageReward.pt from huggingface.co/THUDM/ImageReward and the bert-base-uncased tokenizer files in ImageReward/bert-base-uncased/), "
                   "laion-aesthetic/ (sac+logos+ava1-l14-linearMSE.pth and openai/clip-vit-large-patch14 in laion-aesthetic/clip/). "
                   f"Real images: COCO with captions and masks, made once with `unifl coco-folder ... --out ComfyUI/input/{RECIPE_IMAGES}` (docs/recipes.md, step 3). "
                   "Public preference models stand in for the paper's aspect models (docs/recipes.md says why); for a quick start without any model file use "
                   "'UniFL 2/3', which train against weight-free image statistics instead.")
    out[RECIPE_1] = ({
        "1": ckpt, **_recipe_rewards(),
        "6": _perception(RECIPE_PERCEPTION[0]), "7": _perception(RECIPE_PERCEPTION[1]), "8": _perception(RECIPE_PERCEPTION[2]),
        "9": _train("1", R1, "(none)", ["2", "3", "4", "5"], ["6", "7", "8"], **recipe),
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 2]}},
        "11": _text(PROMPT), "12": _text(""), "13": latent,
        "14": {"class_type": "KSampler", "inputs": {"model": ["9", 0], "seed": 0, "steps": 20, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["11", 0], "negative": ["12", 0], "latent_image": ["13", 0], "denoise": 1.0}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 2]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "unifl/recipe_stage1"}},
    }, "UniFL stage 1 (quality) on SD1.5 with public models, as the paper trains it: PeFL with three frozen experts (VGG16 style, Mask R-CNN structure, "
       "DeepLabV3 layout; structure needs torchvision, which ComfyUI ships) and decoupled aesthetic feedback from four reward models, one per aspect. "
       + recipe_note + " Saved to models/loras/unifl/recipe_stage1.safetensors, then sampled with it (20 DDIM steps, CFG 7.5).")
    out[RECIPE_2] = ({
        "1": ckpt, **_recipe_rewards(),
        "9": _train("2", R2, R1 + ".safetensors", ["2", "3", "4", "5"], [], **recipe),
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 2]}},
        "11": _text(PROMPT), "12": _text(""), "13": latent,
        "14": {"class_type": "UniFLFewStepSampler", "inputs": {"sampler": "ddim"}},
        "15": {"class_type": "UniFLFewStepSigmas", "inputs": {"model": ["9", 0], "steps": 4, "spacing": "trailing"}},
        "16": sampler_custom(["9", 0], 1.0, ["14", 0], ["15", 0], "11", "12", "13"),
        "17": {"class_type": "VAEDecode", "inputs": {"samples": ["16", 0], "vae": ["1", 2]}},
        "18": {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": "unifl/recipe_stage2"}},
    }, "UniFL stage 2 (4-step acceleration) on SD1.5 with public models. NEEDS models/loras/unifl/recipe_stage1.safetensors: run 'UniFL 7' first. "
       "Adversarial feedback (the discriminator starts from the detail reward, ImageReward; its head trains, the BLIP trunk stays frozen and shared) + "
       "decoupled aesthetic feedback, continuing the stage-1 LoRA. " + recipe_note + " Saved to models/loras/unifl/recipe_stage2.safetensors, then sampled in 4 steps without CFG.")
    return out


def write_all() -> list[Path]:
    info = node_info()
    undownloadable = [name for (_, _, name), (_, url) in MODEL_FILES.items() if not (url.startswith(DIALOG_SOURCES) and name.endswith(DIALOG_SUFFIXES))]
    if undownloadable:
        raise ValueError(f"MODEL_FILES lists {undownloadable}, which the missing-models dialog refuses; say in the workflow's note how to get them instead")
    API.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (graph, notes) in definitions().items():
        graph = dict(sorted(graph.items(), key=lambda kv: int(kv[0])))
        problems = check_api(graph, info)
        if problems:
            raise ValueError(f"{name}: " + "; ".join(problems))
        (API / f"{name}.json").write_text(json.dumps(graph, indent=2) + "\n")
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(api_to_ui(graph, info, notes), indent=1) + "\n")
        written += [API / f"{name}.json", WORKFLOWS / f"{name}.json"]
    return written


if __name__ == "__main__":
    for path in write_all():
        print(path.relative_to(ROOT))
