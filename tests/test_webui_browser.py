"""The standalone UniFL tab driven in a real browser: set fields, Train, watch, Stop, find the LoRA.

Headless Debian ``chromium`` (``apt-get install chromium``) driven by Playwright for Python (``pip
install playwright``; never ``playwright install``, which downloads a browser). The server runs in
``sys.executable`` and in every interpreter listed in ``UNIFL_WEBUI_PYTHONS`` (``os.pathsep``
-separated): that is how CI checks gradio 3.41.2 (A1111's) besides the current gradio, with one venv
per gradio version. Everything stays on 127.0.0.1.

The model is a tiny random SD1.5-architecture folder (``tiny`` preset): the embedded pocket model's
weights are built separately, and this test is about the page, not the training.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Fast schedules for a 32 px tiny model: the page, not the model, is under test.
FAST_SETTINGS = "\n".join([
    "data.source_images=16", "pefl.inference_steps=4", "pefl.noise_level=2", "pefl.grad_levels=[0, 1]",
    "aesthetic.inference_steps=4", "aesthetic.grad_levels=[0, 1]", "logging.checkpoint_every=1000",
])
SERVER_PYTHONS = [sys.executable] + [p for p in os.environ.get("UNIFL_WEBUI_PYTHONS", "").split(os.pathsep) if p]


@pytest.fixture(scope="module")
def sync_playwright():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no 'playwright install' needed)")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gradio_version(python: str) -> str:
    return subprocess.run([python, "-c", "import gradio; print(gradio.__version__)"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(params=SERVER_PYTHONS)
def server(request, tmp_path):
    """``unifl webui`` on a free loopback port, with one tiny model folder to train."""
    python = request.param
    # Saved by the server's own interpreter: a folder written by transformers 5 lacks the vocab.json
    # that transformers 4's CLIP tokenizer reads.
    build = f"from unifl.core.diffusion.tiny import build_tiny_pipeline; build_tiny_pipeline('sd15', seed=0).save_pretrained({str(tmp_path / 'checkpoints' / 'tiny-sd15')!r})"
    subprocess.run([python, "-c", build], check=True, capture_output=True)
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    # One torch thread: on two busy cores, two threads make each tiny step many times slower.
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([python, "-m", "unifl.webui_extension", "--port", str(port), "--checkpoint-dir", str(tmp_path / "checkpoints"),
                                "--lora-dir", str(tmp_path / "Lora"), "--unifl-dir", str(tmp_path / "unifl")],
                               cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"the server did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
    yield {"url": url, "tmp": tmp_path, "gradio": gradio_version(python)}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a gradio Dropdown (3.41 and 4+ both list ``li.item[aria-label]`` under the component)."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} li.item[aria-label={json.dumps(option)}]").click()


def fill(page, elem_id: str, value: str) -> None:
    """Type into a Textbox/Number (either renders an input or a textarea) and leave it, as a person would."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    box.press("Tab")


def status(page):
    return page.locator("#unifl_status [data-unifl-state]")


def test_train_watch_stop_and_find_the_lora(server, sync_playwright):
    from playwright.sync_api import expect
    from unifl.core.lora.kohya import read_lora_metadata

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(server["url"])
        expect(page.locator("#unifl_train")).to_be_visible(timeout=60_000)

        choose(page, "unifl_checkpoint", "tiny-sd15")
        expect(page.locator("#unifl_data_resolution input")).to_have_value("512", timeout=30_000)  # auto preset: SD1.5
        choose(page, "unifl_preset", "tiny")
        expect(page.locator("#unifl_data_resolution input")).to_have_value("64", timeout=30_000)
        learning_rate = page.locator("#unifl_optim_learning_rate input")
        expect(learning_rate).to_have_value("0.001")
        page.locator("#unifl_stage label", has_text="2").click()  # the tiny preset's stage 2 has a rate of its own
        expect(learning_rate).to_have_value("0.0005", timeout=30_000)
        page.locator("#unifl_stage label", has_text="1").click()
        expect(learning_rate).to_have_value("0.001", timeout=30_000)
        fill(page, "unifl_logging_output_name", "../outside")
        page.locator("#unifl_train").click()
        expect(status(page)).to_have_attribute("data-unifl-state", "error", timeout=30_000)
        page.wait_for_timeout(3000)  # no poller overwrites the refusal
        expect(status(page)).to_contain_text("LoRA name '../outside'")
        fill(page, "unifl_logging_output_name", "browser-test")
        images, prompts = (page.locator(f"#{box} textarea, #{box} input").first.input_value() for box in ("unifl_data_images", "unifl_data_prompts"))
        fill(page, "unifl_data_images", "/elsewhere/images")
        fill(page, "unifl_data_prompts", "/elsewhere/prompts.txt")
        page.locator("#unifl_train").click()
        expect(status(page)).to_contain_text("Prompt file (data.prompts) = '/elsewhere/prompts.txt' is outside", timeout=30_000)
        refusal = status(page).inner_text().splitlines()  # a line each, as the page shows them
        assert [line.split(" = ")[0] for line in refusal] == ["Training images (data.images)", "Prompt file (data.prompts)"], refusal
        fill(page, "unifl_data_images", images)
        fill(page, "unifl_data_prompts", prompts)
        fill(page, "unifl_optim_max_steps", "500")
        fill(page, "unifl_logging_validate_every", "1")
        fill(page, "unifl_data_resolution", "32")
        choose(page, "unifl_perception_style", "off")
        page.locator("#unifl_advanced .label-wrap").click()
        fill(page, "unifl_extra", FAST_SETTINGS)

        page.locator("#unifl_train").click()
        expect(status(page)).to_have_attribute("data-unifl-state", re.compile("queued|loading|training"), timeout=30_000)
        expect(status(page)).to_contain_text(re.compile(r"step [1-9]\d*/500"), timeout=120_000)
        expect(page.locator("#unifl_gallery img").first).to_be_visible(timeout=60_000)
        expect(page.locator("#unifl_loss img")).to_be_visible(timeout=30_000)

        page.locator("#unifl_stop").click()
        expect(status(page)).to_have_attribute("data-unifl-state", "stopped", timeout=120_000)
        expect(page.locator("#unifl_result textarea, #unifl_result input").first).to_have_value(re.compile(r"<lora:browser-test:1>"), timeout=30_000)
        expect(page.locator("#unifl_result textarea, #unifl_result input").first).to_have_value(re.compile(r"^Feedback: "))  # kept through every poll
        page.screenshot(path=str(server["tmp"] / "page.png"), full_page=True)
        browser.close()

    lora = server["tmp"] / "Lora" / "browser-test.safetensors"
    assert lora.is_file(), f"no LoRA in the Lora folder (gradio {server['gradio']})"
    metadata = read_lora_metadata(lora)
    assert metadata["ss_output_name"] == "browser-test"
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert int(metadata["unifl.steps_trained"]) < 500  # Stop really stopped it
