"""Opt-in: the node pack inside a real ComfyUI server, driven over its HTTP API like a user's browser.

Skipped unless ``COMFYUI_PATH`` points at a ComfyUI checkout. ComfyUI needs torchvision, so it gets its
own venv (``COMFYUI_PYTHON``, default: this interpreter) with ComfyUI's requirements, ``requests`` and
this pack (``pip install -e .``). A random-weight SD1.5 checkpoint is built once into
``UNIFL_COMFYUI_CACHE`` (default ``~/.cache/unifl-comfyui-tests``); ``UNIFL_TEST_SD15_SIZE=full`` uses the
real v1-5 shape instead of the small SD1.5-shaped UNet ComfyUI also detects as SD15. The server
listens on loopback only and is stopped at the end.

    COMFYUI_PATH=/work/comfyui COMFYUI_PYTHON=/work/comfy-venv/bin/python \\
        nice -n 19 .venv/bin/python -m pytest tests/test_comfyui_real.py -v -m comfyui
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "comfyui_stub"
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
if not COMFYUI_PATH:
    pytest.skip("COMFYUI_PATH is not set: the real-ComfyUI tests need a ComfyUI checkout (see this file's docstring)", allow_module_level=True)

COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
CACHE = Path(os.environ.get("UNIFL_COMFYUI_CACHE", Path.home() / ".cache" / "unifl-comfyui-tests"))
SIZE = os.environ.get("UNIFL_TEST_SD15_SIZE", "small")
CKPT, CONTROLNET = f"unifl-random-sd15-{SIZE}.safetensors", f"unifl-random-controlnet-{SIZE}.safetensors"
RELEASED_IDS = {"UniFLLoadRewardModel", "UniFLLoadPerceptionModel", "UniFLScoreImages", "UniFLFewStepSampler", "UniFLFewStepSigmas", "UniFLLoadLoRA", "UniFLTrainLoRA", "UniFLTrainRewardModel"}
# One optimizer step on 32 px images with short rollouts: every code path, minutes on a loaded CPU.
FAST = "\n".join([
    "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]", "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
    "adversarial.inference_steps=2", "adversarial.grad_levels=[0, 1]", "logging.checkpoint_every=1", "logging.validate_every=0",
    "logging.validation_prompts=['a red fox']",
])

if str(STUB) not in sys.path:
    sys.path.insert(0, str(STUB))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(kind: str, path: Path) -> Path:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        call = f"import random_sd15 as r; r.{kind}({str(path)!r}, {SIZE!r})"
        subprocess.run(["nice", "-n", "19", sys.executable, "-c", call], check=True, cwd=STUB, timeout=1800)
    return path


class Comfy:
    def __init__(self, url: str, base: Path, log: Path):
        self.url, self.base, self.log = url, base, log

    def get(self, path: str):
        return json.loads(urllib.request.urlopen(self.url + path, timeout=60).read())

    def submit(self, graph: dict, timeout: float = 3600) -> dict:
        body = json.dumps({"prompt": graph, "client_id": str(uuid.uuid4())}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            prompt_id = json.loads(urllib.request.urlopen(request, timeout=60).read())["prompt_id"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"ComfyUI refused the graph: {error.read().decode()[:3000]}") from None
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] == "success":
                    return entry
                raise AssertionError(f"prompt failed: {json.dumps(entry['status'], indent=1)[-4000:]}\nlog tail:\n{self.log.read_text()[-3000:]}")
            time.sleep(2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    import numpy as np
    from PIL import Image

    base = tmp_path_factory.mktemp("comfyui-base")
    for sub in ("custom_nodes", "models/checkpoints", "models/loras", "models/controlnet", "input/unifl_data", "output", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "unifl").symlink_to(ROOT, target_is_directory=True)
    (base / "models" / "checkpoints" / CKPT).symlink_to(_build("build", CACHE / CKPT))
    (base / "models" / "controlnet" / CONTROLNET).symlink_to(_build("build_controlnet", CACHE / CONTROLNET))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(base / "input" / "example.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(base / "input" / "unifl_data" / f"{i}.png")
        (base / "input" / "unifl_data" / f"{i}.txt").write_text("a photo of a red fox")
    pairs = base / "input" / "unifl_pairs"
    pairs.mkdir()
    rows = []
    for i in range(8):
        for side in "ab":
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(pairs / f"{i}{side}.png")
        rows.append(json.dumps({"prompt": "a red fox", "image_a": f"{i}a.png", "image_b": f"{i}b.png", "preferred": "a", "aspect": "color"}))
    (pairs / "pairs.jsonl").write_text("\n".join(rows))
    port = _free_port()
    log = base / "comfyui.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-api-nodes", "--base-directory", str(base)]
    with log.open("w") as handle:
        server = subprocess.Popen(["nice", "-n", "19", *command], cwd=COMFYUI_PATH, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = Comfy(f"http://127.0.0.1:{port}", base, log)
    try:
        deadline = time.time() + 300
        while True:
            try:
                client.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"ComfyUI did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(2)
        yield client
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def workflow(name: str, **by_class: dict) -> dict:
    """An API workflow with the test's files and sizes (and per-class input overrides)."""
    import workflows as wf

    graph = json.loads((wf.API / f"{name}.json").read_text())
    sizes = {
        "CheckpointLoaderSimple": {"ckpt_name": CKPT}, "ControlNetLoader": {"control_net_name": CONTROLNET},
        "EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2, "cfg": 1.0},
        "UniFLTrainLoRA": {"steps": 1, "resolution": 32, "rank": 4, "alpha": 4.0, "learning_rate": 1e-3, "extra_settings": FAST},
    }
    for node in graph.values():
        node["inputs"].update(sizes.get(node["class_type"], {}) | by_class.get(node["class_type"], {}))
    return graph


def outputs(entry: dict, kind: str) -> list[dict]:
    return [item for node in entry["outputs"].values() for item in node.get(kind, [])]


def test_pack_loads_and_workflows_match_the_live_nodes(comfy):
    import workflows as wf

    info = comfy.get("/object_info")
    assert RELEASED_IDS <= set(info)
    assert "IMPORT FAILED" not in comfy.log_text() and "Cannot import" not in comfy.log_text()
    live = {}
    for name, node in info.items():
        inputs = []
        for section in ("required", "optional"):
            for key in node["input_order"].get(section, []):
                kind, opts = node["input"][section][key][0], (node["input"][section][key][1:] or [{}])[0]
                inputs.append((key, "COMBO" if isinstance(kind, list) else kind, section == "optional", bool(opts.get("control_after_generate"))))
        live[name] = {"inputs": inputs, "outputs": ["COMBO" if isinstance(o, list) else o for o in node["output"]], "source": "live"}
    snapshot = wf.node_info()
    for name, spec in snapshot.items():
        if spec["source"] == "core":
            assert [i[:3] for i in live[name]["inputs"]] == [i[:3] for i in spec["inputs"]], f"core node {name} changed; regenerate the snapshot"
    for name in wf.definitions():
        graph = json.loads((wf.API / f"{name}.json").read_text())
        problems = wf.check_api(graph, live | {k: v for k, v in snapshot.items() if k in wf.THIRD_PARTY})
        assert problems == [], name
        ui = json.loads((wf.WORKFLOWS / f"{name}.json").read_text())  # widget order as the frontend reads it
        assert wf.ui_to_api(ui, live | {k: v for k, v in snapshot.items() if k in wf.THIRD_PARTY}) == wf.strip_meta(graph), name
    assert "unifl" in comfy.get("/workflow_templates")  # the template browser lists workflows/


def test_score_images(comfy):
    entry = comfy.submit(workflow("unifl_score_images"))
    texts = [t for t in outputs(entry, "text")]
    assert any("color (colorfulness)" in t for t in texts), entry["outputs"]


def test_train_stage_1_and_2_into_models_loras(comfy):
    first = comfy.submit(workflow("unifl_train_stage1"))
    lora1 = comfy.base / "models" / "loras" / "unifl" / "unifl_stage1.safetensors"
    assert lora1.is_file() and outputs(first, "images")
    second = comfy.submit(workflow("unifl_train_stage2"))
    lora2 = comfy.base / "models" / "loras" / "unifl" / "unifl_stage2.safetensors"
    assert lora2.is_file() and outputs(second, "images")
    assert list((comfy.base / "output" / "unifl").glob("stage2_*.png"))
    assert "unifl/unifl_stage2.safetensors" in comfy.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert "lora key not loaded" not in comfy.log_text()


def test_4step_generation_with_the_lora(comfy):
    entry = comfy.submit(workflow("unifl_4step_generation"))
    assert list((comfy.base / "output" / "unifl").glob("4step_*.png"))
    assert any("4 steps" in t or "2 steps" in t for t in outputs(entry, "text"))
    assert "lora key not loaded" not in comfy.log_text()


def test_4step_generation_with_controlnet(comfy):
    comfy.submit(workflow("unifl_4step_controlnet"))
    assert len(list((comfy.base / "output" / "unifl").glob("4step_*.png"))) >= 2


def test_core_lora_loader_applies_every_key(comfy):
    """ComfyUI's own LoraLoader (UNet + CLIP) on the UniFL file: no 'lora key not loaded', image saved."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "unifl/unifl_stage2.safetensors", "strength_model": 1.0, "strength_clip": 1.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "ddim", "scheduler": "simple", "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "unifl/core_loraloader"}},
    }
    comfy.submit(graph)
    assert list((comfy.base / "output" / "unifl").glob("core_loraloader_*.png"))
    assert "lora key not loaded" not in comfy.log_text() and "NOT LOADED" not in comfy.log_text()
    # The same check in-process: ComfyUI's key map takes every module of the file.
    script = f"""
import sys
sys.argv = ["x", "--cpu"]
sys.path.insert(0, {COMFYUI_PATH!r})
import comfy.options; comfy.options.enable_args_parsing()
import comfy.sd, comfy.utils, comfy.lora
lora = comfy.utils.load_torch_file({str(comfy.base / 'models' / 'loras' / 'unifl' / 'unifl_stage2.safetensors')!r}, safe_load=True)
model, clip, _, _ = comfy.sd.load_checkpoint_guess_config({str(CACHE / CKPT)!r}, output_vae=False, output_clip=False)
key_map = comfy.lora.model_lora_keys_unet(model.model, {{}})
loaded = comfy.lora.load_lora(lora, key_map)
print(len(loaded), len({{k.split('.')[0] for k in lora}}))
"""
    out = subprocess.run(["nice", "-n", "19", COMFYUI_PYTHON, "-c", script], capture_output=True, text=True, timeout=900, cwd=COMFYUI_PATH)
    assert out.returncode == 0, out.stderr[-3000:]
    patched, modules = map(int, out.stdout.split()[-2:])
    assert patched == modules > 0


def test_train_reward_model_then_score_with_it(comfy):
    train = {"1": {"class_type": "UniFLTrainRewardModel", "inputs": {
        "pairs": "unifl_pairs", "backbone": "pocket", "output_folder": "my_rewards", "steps": 2, "learning_rate": 1e-3, "batch_size": 4,
        "val_fraction": 0.25, "global_model": False, "seed": 0, "overwrite": False}}}
    entry = comfy.submit(train)
    assert (comfy.base / "models" / "unifl" / "rewards" / "my_rewards" / "color.safetensors").is_file()
    assert any("| color |" in t for t in outputs(entry, "text"))
    graph = workflow("unifl_score_images")
    graph["2"]["inputs"]["model_name"] = "my_rewards/color.safetensors"
    entry = comfy.submit(graph)
    assert any("reward_1: color (pocket-reward)" in t for t in outputs(entry, "text"))
