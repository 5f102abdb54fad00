"""Opt-in: the extension inside a real Forge server, driven over its HTTP APIs as its page drives it.

Skipped unless ``FORGE_PATH`` points at a Forge checkout with its venv (``FORGE_PYTHON``, default
``$FORGE_PATH/venv/bin/python``); ``tests/host_stacks/setup_forge.sh`` makes both, offline. Forge runs
on the CPU (``--always-cpu``) on loopback, with a base folder of its own (``--data-dir``) holding this
pack as ``extensions/unifl`` and a random-weight full-size SD1.5 checkpoint (built once into
``UNIFL_FORGE_CACHE``, default ``~/.cache/unifl-forge-tests``). The tab's buttons are pressed through
gradio's queue API (``/queue/join``), with the inputs the page would send; images come from
``/sdapi/v1/txt2img``. Tests run in file order and share the server; each prints what it measured.

    tests/host_stacks/setup_forge.sh $HOME/forge     # once
    FORGE_PATH=$HOME/forge nice -n 19 .venv/bin/python -m pytest tests/test_forge_real.py -v -s
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.forge, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FORGE_PATH = os.environ.get("FORGE_PATH")
if not FORGE_PATH:
    pytest.skip("FORGE_PATH is not set: the real-Forge tests need a Forge checkout and venv (tests/host_stacks/setup_forge.sh)", allow_module_level=True)
FORGE_PYTHON = os.environ.get("FORGE_PYTHON", str(Path(FORGE_PATH) / "venv" / "bin" / "python"))
CACHE = Path(os.environ.get("UNIFL_FORGE_CACHE", Path.home() / ".cache" / "unifl-forge-tests"))
CHECKPOINT = "random-sd15.safetensors"
DATA = "models/unifl/data"  # training images: the tab reads only inside the webui's model folders (core/training/confinement.py)
# Two optimizer steps on 64 px images with 4-step rollouts: every code path of a run, minutes on a CPU.
FAST = "\n".join([
    "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]", "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]",
    "optim.gradient_accumulation_steps=1", "optim.warmup_steps=0", "logging.checkpoint_every=1000", "logging.validate_every=0",
])
LORA_LINE = "[LORA] Loaded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint() -> Path:
    path = CACHE / CHECKPOINT
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        call = f"import random_sd15 as r; r.build({str(path)!r}, 'full')"
        subprocess.run(["nice", "-n", "19", sys.executable, "-c", call], check=True, cwd=ROOT / "tests" / "comfyui_stub", timeout=1800)
    return path


class Forge:
    """The server: its HTTP APIs, the tab's buttons through gradio's queue, its log and its memory."""

    def __init__(self, url: str, base: Path, log: Path, pid: int):
        self.url, self.base, self.log, self.pid = url, base, log, pid
        self.config = self.get("/config")
        self.ids = {c["props"].get("elem_id"): c["id"] for c in self.config["components"] if c.get("props", {}).get("elem_id")}
        self.components = {c["id"]: c for c in self.config["components"]}

    def get(self, path: str):
        return json.loads(urllib.request.urlopen(self.url + path, timeout=120).read())

    def post(self, path: str, body: dict, timeout: float = 1800):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        try:
            return json.loads(urllib.request.urlopen(request, timeout=timeout).read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path}: HTTP {error.code}: {error.read().decode()[:2000]}\nlog tail:\n{self.log_text()[-3000:]}") from None

    def value(self, elem_id: str):
        """What the page shows in a field before the user touches it."""
        return self.components[self.ids[elem_id]]["props"].get("value")

    def click(self, button: str, **values) -> list:
        """Press the tab's button ``unifl_<button>`` with the page's values, ``values`` (by elem id) changed."""
        trigger = self.ids[f"unifl_{button}"]
        index, dependency = next((i, d) for i, d in enumerate(self.config["dependencies"]) if [trigger, "click"] in d["targets"] and d["backend_fn"])
        by_id = {self.ids[elem]: value for elem, value in values.items()}
        data = [by_id.get(c, self.components[c]["props"].get("value")) for c in dependency["inputs"]]
        session = uuid.uuid4().hex
        self.post("/queue/join", {"data": data, "fn_index": index, "trigger_id": trigger, "session_hash": session, "event_data": None})
        with urllib.request.urlopen(f"{self.url}/queue/data?session_hash={session}", timeout=600) as stream:
            for line in stream:
                if line.startswith(b"data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        assert message.get("success"), f"{button}: {message}"
                        return message["output"]["data"]
        raise AssertionError(f"{button}: the event stream ended without a result")

    def status(self) -> str:
        return self.click("poll")[0]

    def wait(self, until, timeout: float, every: float = 5.0) -> str:
        deadline = time.time() + timeout
        while True:
            status = self.status()
            if until(status):
                return status
            assert time.time() < deadline, f"gave up waiting; status: {status}\nlog tail:\n{self.log_text()[-3000:]}"
            time.sleep(every)

    def txt2img(self, prompt: str) -> dict:
        return self.post("/sdapi/v1/txt2img", {"prompt": prompt, "steps": 2, "width": 64, "height": 64, "cfg_scale": 1, "seed": 1, "sampler_name": "Euler"})

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def memory_gib(self, field: str = "VmRSS") -> float:
        line = next(line for line in Path(f"/proc/{self.pid}/status").read_text().splitlines() if line.startswith(field + ":"))
        return int(line.split()[1]) / 2**20

    @contextlib.contextmanager
    def sampled_memory(self, every: float = 0.25):
        """The server's RSS sampled while the block runs: ``samples`` (GiB) fills as it goes."""
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(every):
                samples.append(self.memory_gib())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            done.set()
            thread.join()


def _state(status: str) -> str:
    return status.split('data-unifl-state="')[1].split('"')[0] if 'data-unifl-state="' in status else ""


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    from PIL import Image

    base = tmp_path_factory.mktemp("forge-base")
    for sub in ("extensions", "models/Stable-diffusion", "models/Lora", DATA):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "extensions" / "unifl").symlink_to(ROOT, target_is_directory=True)
    (base / "models" / "Stable-diffusion" / CHECKPOINT).symlink_to(_checkpoint())
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (64, 64), color).save(base / DATA / f"{i}.png")
        (base / DATA / f"{i}.txt").write_text(f"a {color} square")
    port, log = _free_port(), base / "forge.log"
    command = [FORGE_PYTHON, "launch.py", "--skip-prepare-environment", "--skip-python-version-check", "--skip-version-check", "--skip-torch-cuda-test",
               "--always-cpu", "--api", "--port", str(port), "--data-dir", str(base), "--no-download-sd-model"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # Forge's own venv and the extension's own folder, as a user has them
    started = time.time()
    with log.open("w") as handle:
        server = subprocess.Popen(["nice", "-n", "10", *command], cwd=FORGE_PATH, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/sdapi/v1/sd-models", timeout=10)
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > started + 600:
                    raise AssertionError(f"Forge did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(2)
        print(f"\nForge started in {time.time() - started:.0f} s")
        yield Forge(url, base, log, server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _run_values(forge: Forge, name: str, steps: int, **changes) -> dict:
    """The page's values for a small run on the test's images (what a user types into the tab)."""
    return {"unifl_logging_output_name": name, "unifl_optim_max_steps": steps, "unifl_data_images": str(forge.base / DATA),
            "unifl_data_resolution": 64, "unifl_logging_validation_prompts": "a red square", "unifl_extra": FAST,
            "unifl_existing": "start over", "unifl_replace": True} | changes


def test_the_tab_builds_with_feedback_preselected(forge):
    assert "Error loading script: unifl" not in forge.log_text() and "UniFL tab could not be built" not in forge.log_text()
    for elem in ("unifl_train", "unifl_stop", "unifl_poll", "unifl_checkpoint", "unifl_no_feedback", "unifl_status"):
        assert elem in forge.ids, elem
    assert forge.value("unifl_checkpoint") == CHECKPOINT
    assert forge.value("unifl_reward_color") == "colorfulness · image statistic (α 0.5)"  # the sd15 preset names no models
    assert forge.value("unifl_no_feedback") is False


def test_a_refused_train_ends_the_progress_bar_at_once(forge):
    task = "task(unifl-refused-1)"
    started = time.time()
    status, _ = forge.click("train", **(_run_values(forge, "refused", 2, unifl_data_images=str(forge.base / "models" / "missing")) | {_task_elem(forge): task}))  # inside the host's folders, so the data check refuses it
    refused_in = time.time() - started
    assert 'data-unifl-state="error"' in status and "missing does not exist" in status
    progress = forge.post("/internal/progress", {"id_task": task, "id_live_preview": -1, "live_preview": False})
    print(f"refused in {refused_in:.1f} s (no model load); progress API: {progress}")
    assert progress["completed"] and not progress["active"] and not progress["queued"]


def _task_elem(forge: Forge) -> str:
    """The hidden task-id box is the Train event's first input (the page's START hook fills it)."""
    trigger = forge.ids["unifl_train"]
    dependency = next(d for d in forge.config["dependencies"] if [trigger, "click"] in d["targets"] and d["backend_fn"])
    forge.ids.setdefault("unifl_task_id", dependency["inputs"][0])
    return "unifl_task_id"


def test_train_with_feedback_after_the_webui_renamed_the_checkpoint(forge):
    started = time.time()
    forge.txt2img("a red square")  # the first image: Forge loads the model and re-keys its title "name [hash]"
    print(f"first txt2img (model load) {time.time() - started:.0f} s; titles: {[m['title'] for m in forge.get('/sdapi/v1/sd-models')]}")
    assert any("[" in m["title"] for m in forge.get("/sdapi/v1/sd-models"))
    webui_model = forge.memory_gib()
    started = time.time()
    with forge.sampled_memory() as rss:
        status, result = forge.click("train", **(_run_values(forge, "forge-feedback", 2) | {_task_elem(forge): "task(unifl-feedback)"}))
        assert _state(status) in ("queued", "loading", "training"), status
        assert result.startswith("Feedback: aesthetic"), result
        forge.wait(lambda s: _state(s) != "queued", timeout=60, every=0.5)  # the GPU queue is free: nothing was left holding it
        print(f"left the queue {time.time() - started:.1f} s after Train")
        forge.wait(lambda s: _state(s) not in ("queued", "loading"), timeout=3600, every=1)
        trained_from = len(rss)  # Forge's model let go and UniFL's own loaded: training from here
        status = forge.wait(lambda s: _state(s) not in ("queued", "loading", "training", "stopping"), timeout=3600)
    took = time.time() - started
    print(f"Train 2 steps: {took:.0f} s; Forge's RSS before {webui_model:.2f} GiB, highest while UniFL trained "
          f"{max(rss[trained_from:], default=float('nan')):.2f} GiB, after the run {forge.memory_gib():.2f} GiB (docs/host-compatibility.md)")
    assert _state(status) == "finished", status
    assert (forge.base / "models" / "Lora" / "forge-feedback.safetensors").is_file()


def test_stop_ends_a_run_and_keeps_its_lora(forge):
    values = _run_values(forge, "forge-stopped", 200) | {_task_elem(forge): "task(unifl-stop)"}
    forge.click("train", **values)
    forge.wait(lambda s: "step 1/200" in s or "step 2/200" in s, timeout=3600)
    stop_pressed = time.time()
    forge.click("stop")
    status = forge.wait(lambda s: _state(s) not in ("queued", "loading", "training", "stopping"), timeout=1800, every=2)
    print(f"Stop to stopped: {time.time() - stop_pressed:.0f} s")
    assert _state(status) == "stopped", status
    assert (forge.base / "models" / "Lora" / "forge-stopped.safetensors").is_file()


def test_the_lora_is_used_by_txt2img_with_no_skipped_keys(forge):
    before = len(forge.log_text())
    started = time.time()
    images = forge.txt2img("a red square <lora:forge-feedback:1>")["images"]
    print(f"txt2img with the LoRA (Forge reloads its model after UniFL let it go): {time.time() - started:.0f} s")
    assert len(images) == 1
    lines = [line for line in forge.log_text()[before:].splitlines() if line.startswith(LORA_LINE) and "forge-feedback" in line]
    print("\n".join(lines))
    assert lines and all("(skipped 0 keys)" in line for line in lines), lines


def test_the_webui_gets_its_memory_back_after_a_run(forge):
    """A run used to leave its freed heap in the webui process (a real Forge: 6.73 GiB idle with its model before
    a run, 10.5 GiB after, peaks growing run by run): glibc keeps freed memory unless asked. The job gives it back
    (``core.memory.release_freed_memory``) before the page sees the run end, so after each run the process is
    where it was once UniFL had let Forge's model go (on the CPU it does, before loading its own copy), and once
    the next image has reloaded Forge's model, where it was before the runs."""
    forge.txt2img("a red square")  # Forge holds its model: the webui idle, as a user leaves it
    before = forge.memory_gib()
    lows, peaks, afters = [], [], []
    for run in range(2):
        with forge.sampled_memory() as rss:
            forge.click("train", **(_run_values(forge, f"forge-memory-{run}", 2) | {_task_elem(forge): f"task(unifl-memory-{run})"}))
            forge.wait(lambda s: _state(s) not in ("queued", "loading"), timeout=3600, every=1)
            trained_from = len(rss)  # Forge's model was let go before UniFL loaded its own: the run's peak is from here
            status = forge.wait(lambda s: _state(s) not in ("queued", "loading", "training", "stopping"), timeout=3600, every=2)
        assert _state(status) == "finished", status
        afters.append(forge.memory_gib())
        lows.append(min([*rss, afters[-1]]))
        peaks.append(max(rss[trained_from:]))
    forge.txt2img("a red square <lora:forge-memory-1:1>")  # Forge reloads its model
    reloaded = forge.memory_gib()
    print(f"Forge's RSS (GiB): {before:.2f} idle with its model before the runs; "
          + "; ".join(f"run {i + 1}: lowest {low:.2f} (Forge's model let go), peak while training {peak:.2f}, after {after:.2f}" for i, (low, peak, after) in enumerate(zip(lows, peaks, afters)))
          + f"; {reloaded:.2f} once the next image reloaded Forge's model")
    for i, (low, after) in enumerate(zip(lows, afters)):
        assert after < low + 0.75, f"run {i + 1} left {after - low:.2f} GiB in the process"
    assert peaks[1] < peaks[0] + 0.75, "the second run's peak grew on the first's"
    assert reloaded < before + 1.0, "idle with its model again, the process holds more than before the runs"
