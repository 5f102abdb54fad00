"""The A1111/Forge extension against the documented stand-in for the webui (``tests/webui_stub``).

The scripts/ shim is loaded by file path as the webui loads it; the tab is built and rendered inside
a host Blocks as ``modules/ui.py`` does; training runs as a webui job (queue lock, ``shared.state``,
the progress task, the live preview, Interrupt, VRAM hand-off) and the LoRA lands in the Lora folder.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "webui_stub"
gr = pytest.importorskip("gradio", reason="the webui tab needs gradio (pip install gradio)")


class FakeModel:
    """The webui's loaded model, reduced to where it lives (the extension must never train on it)."""

    def __init__(self, info=None):
        self.device, self.sd_checkpoint_info = "cuda", info

    def to(self, device):
        self.device = device
        return self


def _drop_stub_modules():
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
        del sys.modules[name]


@pytest.fixture
def webui(tmp_path, monkeypatch, tiny_sd15_dir):
    """The stand-in webui with one checkpoint (a tiny SD1.5 folder) loaded, and the shim imported."""
    monkeypatch.syspath_prepend(str(STUB))
    _drop_stub_modules()
    from modules import call_queue, paths, progress, script_callbacks, sd_models, shared

    paths.models_path = str(tmp_path / "models")
    shared.cmd_opts.lora_dir = str(tmp_path / "models" / "Lora")
    info = sd_models.CheckpointInfo(str(tiny_sd15_dir))
    info.register()
    shared.opts.sd_model_checkpoint = info.title
    sd_models.model_data.sd_model = FakeModel(info)
    # As modules/script_loading.py::load_module does for every file in an extension's scripts/.
    spec = importlib.util.spec_from_file_location("unifl_webui.py", ROOT / "scripts" / "unifl_webui.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    script_callbacks.ui_settings_callback()
    yield SimpleNamespace(shared=shared, sd_models=sd_models, call_queue=call_queue, progress=progress, script_callbacks=script_callbacks,
                          checkpoint=info.name, info=info, lora_dir=tmp_path / "models" / "Lora", models=tmp_path / "models")
    _drop_stub_modules()


def _component(blocks, elem_id):
    return next(c for c in blocks.blocks.values() if getattr(c, "elem_id", None) == elem_id)


def test_the_shim_registers_one_tab_and_the_settings(webui):
    assert len(webui.script_callbacks.callbacks_ui_tabs) == 1
    opts = webui.shared.opts
    assert opts.data_labels["unifl_unload_model"].section == ("unifl", "UniFL")
    assert opts.unifl_unload_model is True and opts.unifl_dir == ""

    tabs = webui.script_callbacks.ui_tabs_callback()
    assert [(title, elem_id) for _, title, elem_id in tabs] == [("UniFL", "unifl")]
    blocks = tabs[0][0]
    assert isinstance(blocks, gr.Blocks)
    assert _component(blocks, "unifl_checkpoint").value == webui.checkpoint
    # Rendered the way modules/ui.py::create_ui renders extension tabs.
    with gr.Blocks(analytics_enabled=False):
        with gr.Tabs():
            with gr.TabItem("UniFL", id="unifl", elem_id="tab_unifl"):
                blocks.render()


def test_a_tab_that_cannot_be_built_says_why_instead_of_vanishing(webui, monkeypatch):
    from unifl.webui_extension import ui

    def broken(host):
        raise RuntimeError("gradio said no")

    monkeypatch.setattr(ui, "build_tab", broken)
    (blocks, title, _), = webui.script_callbacks.ui_tabs_callback()
    assert title == "UniFL"
    assert "RuntimeError: gradio said no" in _component(blocks, "unifl_error").value


def test_missing_requirements_are_shown_in_the_tab(webui, monkeypatch):
    from unifl.webui_extension import requirements_check

    found = requirements_check.Findings(to_install=("peft>=0.15",), problems=("transformers 4.30.2 is installed but UniFL needs transformers>=4.46; ...",))
    monkeypatch.setattr(requirements_check, "check", lambda: found)
    (blocks, _, _), = webui.script_callbacks.ui_tabs_callback()
    message = _component(blocks, "unifl_error").value
    assert "peft>=0.15 is not installed: restart the webui without --skip-install" in message
    assert "transformers 4.30.2" in message


def test_the_shim_imports_the_extension_folder_as_unifl_and_nothing_bare():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('unifl_webui.py', {str(ROOT / 'scripts' / 'unifl_webui.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "import unifl, modules.script_callbacks as cb\n"
        "print(unifl.__file__, len(cb.callbacks_ui_tabs), sorted(m for m in sys.modules if m.split('.')[0] in ('core', 'webui_extension', 'torch', 'gradio')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(STUB)}).stdout.split(" ", 2)
    assert out[0] == str(ROOT / "__init__.py") and out[1] == "1"
    assert out[2].strip() == "[]"  # registering imports no torch or gradio; no bare core/webui_extension


def _fast_form(checkpoint_label: str, name: str, steps: int) -> dict:
    from unifl.webui_extension import form

    config = form.preset_config("tiny", "")
    values = form.form_values(config) | {"logging.output_name": name, "optim.max_steps": steps, "data.resolution": 32}
    rewards, perception = form.feedback_values(config)
    extra = "\n".join(line for line in FAST if not line.startswith(("optim.max_steps", "data.resolution")))
    return dict(checkpoint_label=checkpoint_label, preset_name="tiny", init_label=form.NO_LORA, resume_wanted=True, replace=False,
                extra=extra, values=values, reward_labels=rewards, perception_labels=perception)


def _wait(job, timeout=600):
    deadline = time.time() + timeout
    while job.snapshot().active:
        assert time.time() < deadline, f"the job did not end: {job.snapshot()}"
        time.sleep(0.2)
    return job.snapshot()


@pytest.mark.slow
def test_training_runs_as_a_webui_job_and_the_lora_lands_in_the_lora_folder(webui, monkeypatch):
    from unifl.core.lora.kohya import read_lora_metadata
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import start_job

    model, state = webui.sd_models.model_data.sd_model, webui.shared.state
    seen = []
    report = WebuiHost.report_progress

    def spy(self, step, total, text):
        report(self, step, total, text)
        seen.append((webui.call_queue.queue_lock.locked(), webui.progress.current_task, state.job_no, state.job_count, state.textinfo, model.device))

    monkeypatch.setattr(WebuiHost, "report_progress", spy)
    job = start_job(WebuiHost(), "task(unifl-test)", **_fast_form(webui.checkpoint, "webui-job", steps=2))
    snapshot = _wait(job)

    assert snapshot.state == "finished", snapshot.message
    assert [(locked, task, no, count, text.split(":")[0], device) for locked, task, no, count, text, device in seen] == [
        (True, "task(unifl-test)", 1, 2, "UniFL step 1/2", "cpu"), (True, "task(unifl-test)", 2, 2, "UniFL step 2/2", "cpu")]
    assert model.device == "cuda"  # the webui's model went back to the GPU afterwards
    assert "task(unifl-test)" in webui.progress.finished_tasks and webui.progress.current_task is None
    assert state.id_live_preview >= 1 and state.current_image is not None  # the final previews reached the live preview
    lora = webui.lora_dir / "webui-job.safetensors"
    assert snapshot.lora_path == lora
    metadata = read_lora_metadata(lora)
    assert metadata["ss_output_name"] == "webui-job" and metadata["ss_base_model_version"] == "sd_v1"
    assert (webui.models / "unifl" / "runs" / "webui-job" / "logs.csv").is_file()


@pytest.mark.slow
def test_the_webui_interrupt_stops_training_and_keeps_a_lora(webui, monkeypatch):
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import start_job

    report = WebuiHost.report_progress

    def interrupt_after_first_step(self, step, total, text):
        report(self, step, total, text)
        webui.shared.state.interrupt()  # the webui's Interrupt button (or /sdapi/v1/interrupt)

    monkeypatch.setattr(WebuiHost, "report_progress", interrupt_after_first_step)
    snapshot = _wait(start_job(WebuiHost(), "task(unifl-interrupt)", **_fast_form(webui.checkpoint, "interrupted", steps=50)))
    assert snapshot.state == "stopped" and snapshot.step == 1, snapshot.message
    assert (webui.lora_dir / "interrupted.safetensors").is_file()
    assert webui.shared.state.interrupted is False  # the webui's own reset after a job


def test_a_run_waits_for_the_webui_queue_and_stop_cancels_it_there(webui, tmp_path):
    from unifl.webui_extension import jobs
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import start_job

    host = WebuiHost()
    with webui.call_queue.queue_lock:  # txt2img is generating
        job = start_job(host, "task(unifl-queued)", **_fast_form(webui.checkpoint, "queued", steps=2))
        deadline = time.time() + 10
        while "task(unifl-queued)" not in webui.progress.pending_tasks and time.time() < deadline:
            time.sleep(0.05)
        assert job.snapshot().state == "queued" and "task(unifl-queued)" in webui.progress.pending_tasks
        with pytest.raises(jobs.JobBusy, match="already training 'queued'"):
            start_job(host, "task(unifl-second)", **_fast_form(webui.checkpoint, "second", steps=2))
        job.request_stop()
    snapshot = _wait(job)
    assert snapshot.state == "stopped" and snapshot.message == "cancelled before it started"
    assert webui.sd_models.model_data.sd_model.device == "cuda"  # never unloaded
    assert not (webui.lora_dir / "queued.safetensors").exists()


def test_a_checkpoint_the_webui_renamed_after_loading_it_still_trains(webui):
    """The webui re-keys a checkpoint as "name [hash]" the first time it loads it; the tab built before
    that (its list, its preselection, a page left open) still names the same file."""
    from unifl.webui_extension import form
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import _model_path, build_tab

    host = WebuiHost()
    blocks = build_tab(host)
    shown = _component(blocks, "unifl_checkpoint")
    assert shown.value == webui.checkpoint and webui.info.title == webui.checkpoint

    webui.info.calculate_shorthash()  # the user generated an image with it
    assert webui.checkpoint not in webui.sd_models.checkpoints_list  # the old title is gone from the webui's list
    assert _model_path(host, shown.value) == webui.info.filename
    assert host.default_checkpoint() == webui.checkpoint  # opts still hold the old title: matched by file
    webui.shared.opts.sd_model_checkpoint = webui.info.title
    assert host.default_checkpoint() == webui.checkpoint and list(host.checkpoints()) == [webui.checkpoint]
    with pytest.raises(form.FormError, match="'gone.safetensors' is not in the checkpoint folder"):
        _model_path(host, "gone.safetensors")


def test_a_refused_train_ends_the_webui_progress_bar_and_holds_nothing(webui, tmp_path):
    """The click starts the webui's progress bar for its task id in the browser; a refusal must end it
    (it said "Waiting..." for 40 s) and leave the queue free for the next Train, which starts at once."""
    from unifl.webui_extension import jobs
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import train_clicked

    host, progress = WebuiHost(), webui.progress
    bad = _fast_form(webui.checkpoint, "refused", steps=2)
    bad["values"] = bad["values"] | {"data.images": str(host.unifl_dir() / "no-such-folder")}
    assert progress.progressapi("task(unifl-refused)")["textinfo"] == "Waiting..."
    status, _ = train_clicked(host, "task(unifl-refused)", *bad.values())
    assert "no-such-folder does not exist" in status
    assert progress.progressapi("task(unifl-refused)")["completed"]  # the page's bar ends now
    assert not progress.pending_tasks and progress.current_task is None and not webui.call_queue.queue_lock.locked()
    assert webui.shared.state.job == "" and not webui.shared.state.interrupted

    train_clicked(host, "task(unifl-next)", *_fast_form(webui.checkpoint, "next", steps=50).values())
    job = jobs.current_job()
    deadline = time.time() + 30
    while job.snapshot().state == "queued":
        assert time.time() < deadline, "the Train after a refusal still waits for the GPU"
        time.sleep(0.05)
    job.request_stop()
    assert _wait(job).state == "stopped"
    assert progress.progressapi("task(unifl-next)")["completed"] and not webui.call_queue.queue_lock.locked()


def test_inputs_are_checked_before_the_model_loads(webui, tmp_path, monkeypatch):
    """Every missing input is named in the refusal itself, before the 10-15 s model load in the worker."""
    from unifl.core.diffusion import loading
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import train_clicked

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded for a run with missing inputs")

    monkeypatch.setattr(loading, "load_pipeline", never)
    host = WebuiHost()
    inside = host.unifl_dir()  # inside the webui's folders, where a UI may point
    prompts, lora = inside / "prompts.txt", inside / "start.safetensors"
    run = _fast_form(webui.checkpoint, "inputs", steps=2)
    run["values"] = run["values"] | {"data.images": str(inside / "images"), "data.prompts": str(prompts)}
    run["extra"] += f'\nperception=[{{aspect = "style", kind = "vgg16", path = "{inside.as_posix()}/vgg16.pth"}}]\nlora.init_from="{lora.as_posix()}"'
    status, _ = train_clicked(host, "task(unifl-inputs)", *run.values())
    for missing in ("images does not exist", "prompts.txt does not exist", "start.safetensors", "vgg16.pth does not exist"):
        assert missing in status, (missing, status)
    assert "Training images (data.images):" in status and "Start from LoRA (lora.init_from):" in status  # the fields, by their labels
    assert webui.progress.progressapi("task(unifl-inputs)")["completed"]


def test_the_path_fields_say_where_the_tab_may_read(webui):
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import build_tab

    host = WebuiHost()
    blocks = build_tab(host)
    for slug in ("unifl_data_images", "unifl_data_prompts"):
        assert f"reads files only inside {host.unifl_dir()}" in _component(blocks, slug).info


def test_train_never_starts_without_a_feedback_term_unless_asked(webui):
    from unifl.webui_extension import form, jobs, views
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import _snapshot, build_tab, train_clicked

    # An SD1.5 checkpoint with the auto preset: the dropdowns start at the recipe, not at "off".
    blocks = build_tab(WebuiHost())
    assert _component(blocks, "unifl_reward_color").value == "colorfulness · image statistic (α 0.5)"
    assert _component(blocks, "unifl_no_feedback").value is False

    run = _fast_form(webui.checkpoint, "plain", steps=50)
    run["reward_labels"] = dict.fromkeys(form.REWARD_ASPECTS, form.OFF)
    run["perception_labels"] = dict.fromkeys(form.PERCEPTION_ASPECTS, form.OFF)
    status, _ = train_clicked(WebuiHost(), "task(unifl-plain)", *run.values())
    assert "train no feedback term" in status and "Train without feedback (denoising only)" in status
    assert jobs.current_job() is None or not jobs.current_job().snapshot().active

    status, result = train_clicked(WebuiHost(), "task(unifl-plain-asked)", *run.values(), True)
    job = jobs.current_job()
    assert "error" not in status and result.startswith("Feedback: none, as asked")
    assert views.result_text(_snapshot()).startswith("Feedback: none, as asked")  # the Status poll keeps it (it vanished at the first)
    job.request_stop()
    _wait(job)
    assert views.result_text(_snapshot()).startswith("Feedback: none, as asked")


def test_a_cpu_forge_lets_its_model_go_while_unifl_trains(webui, monkeypatch):
    """On the CPU, unloading moves the webui's weights nowhere: Forge's model is dropped (Forge reloads it
    from its file before the next image, as after a checkpoint switch), so two copies never sit in RAM."""
    import gc
    import weakref

    import torch
    from modules import devices
    from unifl.webui_extension.host import WebuiHost

    class FakeInitialModel:  # Forge modules/sd_models.py: the placeholder before any model is loaded
        pass

    model_data = webui.sd_models.model_data
    monkeypatch.setattr(devices, "device", torch.device("cpu"))
    monkeypatch.setattr(webui.sd_models, "FakeInitialModel", FakeInitialModel, raising=False)
    monkeypatch.setattr(model_data, "forge_hash", "{'checkpoint_info': ...}", raising=False)
    alive = weakref.ref(model_data.sd_model)
    give_back = WebuiHost().release_gpu()
    gc.collect()
    assert alive() is None and isinstance(model_data.sd_model, FakeInitialModel) and model_data.forge_hash == ""
    give_back()
    assert WebuiHost().release_gpu()() is None  # nothing loaded now: nothing to release


def test_an_existing_lora_is_never_replaced_unasked(webui):
    from unifl.webui_extension import form
    from unifl.webui_extension.host import WebuiHost
    from unifl.webui_extension.ui import start_job

    webui.lora_dir.mkdir(parents=True)
    (webui.lora_dir / "mine.safetensors").write_bytes(b"a user's LoRA")
    with pytest.raises(form.FormError, match="mine.safetensors already exists: choose another LoRA name, or tick"):
        start_job(WebuiHost(), "task(unifl-x)", **_fast_form(webui.checkpoint, "mine", steps=2))
    assert (webui.lora_dir / "mine.safetensors").read_bytes() == b"a user's LoRA"


def test_the_host_sees_webui_checkpoints_folders_and_settings(webui, tmp_path):
    from unifl.webui_extension.host import WebuiHost

    host = WebuiHost()
    assert host.default_checkpoint() == webui.checkpoint
    assert host.lora_dir() == webui.lora_dir
    assert host.unifl_dir() == webui.models / "unifl"
    webui.shared.opts.unifl_dir = str(tmp_path / "elsewhere")
    assert host.unifl_dir() == tmp_path / "elsewhere"
    webui.sd_models.model_dir = str(tmp_path / "Stable-diffusion")
    (tmp_path / "Stable-diffusion").mkdir()
    (tmp_path / "Stable-diffusion" / "new.safetensors").write_bytes(b"")
    assert [Path(p).name for p in host.checkpoints(refresh=True).values()] == ["new.safetensors"]
    webui.shared.opts.unifl_unload_model = False
    assert host.release_gpu()() is None and webui.sd_models.model_data.sd_model.device == "cuda"


@pytest.mark.parametrize(("counts", "said"), [((), "Sample with 4 steps, DDIM sampler (trailing timestep spacing), CFG 1."),
                                             ((1, 2, 8), "Sample with 4 steps (trained for 1, 2, 4, 8 steps: any of them works), DDIM sampler")])
def test_the_result_says_every_step_count_the_lora_was_trained_for(tmp_path, counts, said):
    import torch
    from safetensors.torch import save_file
    from unifl.core.lora.kohya import SamplerContract
    from unifl.webui_extension import views
    from unifl.webui_extension.jobs import Snapshot

    lora = tmp_path / "fast.safetensors"
    save_file({"x": torch.zeros(1)}, str(lora), metadata=SamplerContract(4, step_counts=counts).to_metadata())
    text = views.result_text(Snapshot("task(unifl-x)", "fast", "finished", lora_path=lora, run_dir=tmp_path, feedback="Feedback: aesthetic (color colorfulness)."))
    assert text.splitlines()[:3] == ["Feedback: aesthetic (color colorfulness).", f"LoRA: {lora}", "Prompt with <lora:fast:1>."]
    assert text.splitlines()[3].startswith(said)
