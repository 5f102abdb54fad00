"""Bad inputs through the A1111 tab's form and job code (``webui_extension.ui.start_job``, what Train calls).

"Extra settings" is free text a user pastes from anywhere: its paths stay inside the host's folders,
``kind = "module"`` needs the owner's setting, and a run never deletes outside its own run folder.
Each refusal is one line (the page shows it in place of the status) and leaves every file as it was.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bad_input_checks import assert_one_line, assert_untouched, kohya_lora, snapshot

pytest.importorskip("gradio", reason="the tab's handlers live beside its gradio layout")


@pytest.fixture
def tab(tmp_path):
    """A standalone host (what `unifl webui` serves) with a LoRA folder, a UniFL folder and a folder outside both."""
    from unifl.webui_extension.host import StandaloneHost

    lora_dir, unifl_dir, outside = tmp_path / "Lora", tmp_path / "unifl", tmp_path / "outside"
    for folder in (lora_dir, unifl_dir / "runs", outside):
        folder.mkdir(parents=True)
    kohya_lora(lora_dir / "nan.safetensors", float("nan"), architecture="pocket")
    (lora_dir / "half.safetensors").write_bytes((lora_dir / "nan.safetensors").read_bytes()[:120])
    (outside / "prompts.txt").write_text("a secret\n")
    return StandaloneHost([], lora_dir, unifl_dir), outside


def form_inputs(name="bad", extra="", **values):
    from unifl.webui_extension import form

    config = form.preset_config("tiny", "pocket")
    shown = form.form_values(config) | {"logging.output_name": name} | values
    rewards, perception = form.feedback_values(config)
    return dict(checkpoint_label="pocket", preset_name="tiny", init_label=form.NO_LORA, resume_wanted=True, replace=False, extra=extra,
                values=shown, reward_labels=rewards, perception_labels=perception)


def refused(tab, pattern, **inputs):
    from unifl.webui_extension import jobs
    from unifl.webui_extension.ui import START_ERRORS, start_job

    host, outside = tab
    before = snapshot(host.lora_dir(), host.unifl_dir(), outside)
    current = jobs.current_job()
    with pytest.raises(START_ERRORS) as caught:
        start_job(host, "task(unifl-bad)", **inputs)
    assert jobs.current_job() is current, "a refused form starts no job"
    assert_untouched(before)
    return assert_one_line(str(caught.value), pattern)


EXTRA_CASES = [
    ("logging.output_dir='{outside}'", r"logging.output_dir = '.*outside': the UniFL tab keeps run folders inside .*unifl/runs"),
    ("logging.output_dir='{unifl}/runs/../../outside'", r"logging.output_dir = .*: the UniFL tab keeps run folders inside"),
    ("logging.output_dir='{unifl}/runs'", r"logging.output_dir = '.*runs': the UniFL tab keeps run folders inside"),
    ("data.images='{outside}'", r"Training images \(data.images\) = '.*outside' is outside the folders the UniFL tab may read"),
    ("data.prompts='{outside}/prompts.txt'", r"Prompt file \(data.prompts\) = '.*prompts.txt' is outside the folders the UniFL tab may read"),
    ("data.prompts='~/.ssh/id_rsa'", r"Prompt file \(data.prompts\) = '~/.ssh/id_rsa' is outside the folders the UniFL tab may read"),
    ("lora.init_from='{outside}/x.safetensors'", r"Start from LoRA \(lora.init_from\) = '.*x.safetensors' is outside the folders the UniFL tab may read"),
    ("model.path='{outside}/model.safetensors'", r"model.path = '.*model.safetensors' is outside the folders the UniFL tab may read"),
    ('rewards=[{{aspect = "detail", kind = "module", path = "os:abort"}}]',
     r"rewards\[0\].kind = 'module' imports and runs Python code \('os:abort'\), which the UniFL tab does not allow; start `unifl webui` with --allow-module-kinds"),
    ('perception=[{{aspect = "style", kind = "module", path = "os:_exit"}}]', r"perception\[0\].kind = 'module' imports and runs Python code"),
    ('perception=[{{aspect = "style", kind = "vgg16", path = "{outside}/vgg.pth"}}]', r"perception\[0\].path = '.*vgg.pth' is outside the folders"),
    ("logging.output_name='../../../escaped'", r"logging.output_name = '../../../escaped': a file name without folders"),
    ("optim.learning_rate=nan", r"optim.learning_rate = nan: must be a finite number above 0"),
    ("logging.checkpoint_every=0", r"logging.checkpoint_every = 0: must be a whole number of at least 1"),
    ("optim.batch_size=-2", r"optim.batch_size = -2: must be a whole number of at least 1"),
    ("just some words", r"--set 'just some words': use KEY=VALUE"),
]


@pytest.mark.parametrize(("line", "pattern"), EXTRA_CASES, ids=[c[0][:40] for c in EXTRA_CASES])
def test_extra_settings_cannot_leave_the_hosts_folders_or_run_code(tab, line, pattern):
    host, outside = tab
    refused(tab, pattern, **form_inputs(extra=line.format(outside=outside.as_posix(), unifl=host.unifl_dir().as_posix())))


@pytest.mark.parametrize(("key", "pattern"), [
    ("data.images", r"^Training images \(data.images\) = '.*outside' is outside the folders the UniFL tab may read"),
    ("data.prompts", r"^Prompt file \(data.prompts\) = '.*outside' is outside the folders the UniFL tab may read"),
])
def test_the_path_fields_are_confined_like_extra_settings(tab, key, pattern):
    refused(tab, pattern, **form_inputs(**{key: str(tab[1])}))


@pytest.mark.parametrize(("label", "pattern"), [
    ("nan.safetensors", r"nan.safetensors: 1 of 3 tensors hold NaN or infinite values"),
    ("half.safetensors", r"half.safetensors: not a readable .safetensors file"),
])
def test_a_broken_start_from_lora_is_refused_before_the_job(tab, label, pattern):
    refused(tab, pattern, **form_inputs() | {"init_label": label})


@pytest.mark.parametrize("name", ["../escape", "a/b", ""])
def test_a_lora_name_that_is_a_path_is_refused(tab, name):
    refused(tab, r"LoRA name .*: use letters, digits", **form_inputs(name=name))


def test_continue_never_deletes_the_checkpoints_of_a_folder_named_in_extra_settings(tab):
    """The reported case: "continue it" with logging.output_dir pointing at an existing folder deleted its checkpoints/."""
    host, outside = tab
    (outside / "checkpoints").mkdir()
    (outside / "checkpoints" / "important.bin").write_bytes(b"not UniFL's")
    refused(tab, r"logging.output_dir = .*: the UniFL tab keeps run folders inside", **form_inputs(extra=f"logging.output_dir='{outside.as_posix()}'"))


@pytest.mark.slow
def test_start_over_in_a_run_folder_holding_foreign_files_deletes_nothing(tab):
    """Inside the runs folder but not a UniFL run folder: the job fails at the start, and every file stays."""
    from unifl.webui_extension.ui import start_job

    host, outside = tab
    other = host.unifl_dir() / "runs" / "someone_elses"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "weights.bin").write_bytes(b"keep me")
    before = snapshot(other)
    job = start_job(host, "task(unifl-foreign)", **form_inputs(extra=f"logging.output_dir='{other.as_posix()}'") | {"resume_wanted": False})
    deadline = time.time() + 300
    while job.snapshot().active:
        assert time.time() < deadline
        time.sleep(0.2)
    snapshot_ = job.snapshot()
    assert snapshot_.state == "failed"
    assert_one_line(snapshot_.message, r"checkpoints holds files UniFL did not write \(e.g. weights.bin\), so .*someone_elses is not a UniFL run folder: nothing was deleted")
    assert_untouched(before)


def test_the_webui_owner_can_allow_module_kinds_in_settings(tmp_path, monkeypatch):
    import sys

    stub = Path(__file__).resolve().parents[1] / "webui_stub"
    monkeypatch.syspath_prepend(str(stub))
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
        del sys.modules[name]
    from modules import paths, script_callbacks, shared
    from unifl.core.config import load_config
    from unifl.webui_extension import form, register
    from unifl.webui_extension.host import WebuiHost

    paths.models_path = str(tmp_path / "models")
    shared.cmd_opts.lora_dir = str(tmp_path / "models" / "Lora")
    register.register()
    script_callbacks.ui_settings_callback()
    host = WebuiHost()
    config = load_config(None, [f"logging.output_dir={host.unifl_dir() / 'runs' / 'r'}", 'rewards=[{aspect = "detail", kind = "module", path = "os:abort"}]'], preset="tiny")
    with pytest.raises(form.FormError, match=r"the webui's owner can allow it in Settings → UniFL"):
        form.confine_to_host(config, host)
    assert shared.opts.unifl_allow_module_kinds is False
    shared.opts.unifl_allow_module_kinds = True
    assert form.confine_to_host(config, host) is config  # allowed; nothing was imported or called here
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.")]:
        del sys.modules[name]


def test_every_field_outside_the_folders_is_named_by_its_label_on_a_line_of_its_own(tab):
    """It named only the first offending field, by its config key; the page ran several reasons together on one line."""
    from unifl.webui_extension import views
    from unifl.webui_extension.ui import START_ERRORS, start_job, train_clicked

    host, outside = tab
    inputs = form_inputs(extra=f"lora.init_from='{outside.as_posix()}/x.safetensors'", **{"data.images": str(outside), "data.prompts": str(outside / "prompts.txt")})
    before = snapshot(host.lora_dir(), host.unifl_dir(), outside)
    with pytest.raises(START_ERRORS) as caught:
        start_job(host, "task(unifl-bad)", **inputs)
    lines = str(caught.value).splitlines()
    patterns = [r"^Start from LoRA \(lora.init_from\) = '.*x.safetensors' is outside the folders the UniFL tab may read",
                r"^Training images \(data.images\) = '.*outside' is outside the folders the UniFL tab may read",
                r"^Prompt file \(data.prompts\) = '.*prompts.txt' is outside the folders the UniFL tab may read"]
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns):
        assert_one_line(line, pattern)
    status, _ = train_clicked(host, "task(unifl-bad)", *inputs.values())  # what the page shows
    assert status == views.error_html(str(caught.value)) and status.count("<br>") == len(patterns) - 1
    assert_untouched(before)


def test_a_checkpoint_gone_from_the_folder_names_the_refresh_button(tab):
    refused(tab, r"checkpoint 'renamed.safetensors' is not in the checkpoint folder \(any more\): press 🔄 Refresh lists, then pick one from the Checkpoint list",
            **form_inputs() | {"checkpoint_label": "renamed.safetensors"})


@pytest.mark.parametrize(("name", "extra", "pattern"), [
    ("n" * 300, "", r"^LoRA name: .*Lora/n{300}.safetensors: the file name has 312 bytes, but this file system allows \d+ .*: choose a shorter name"),
    ("n" * 240, "", r"^LoRA name: .*Lora/n{240}.safetensors: the file name has 252 bytes, but this file system allows \d+ .*: choose a shorter name"),
    ("ok", "logging.output_name='" + "n" * 240 + "'",
     r"^LoRA name \(logging.output_name\): .*runs/ok/n{240}.safetensors: the file name has 252 bytes, but this file system allows \d+"),
], ids=["300 characters", "240 characters", "240 characters in Extra settings"])
def test_a_lora_name_too_long_for_a_file_is_refused_before_training(tab, name, extra, pattern):
    """A 300-character name raised an unhandled OSError in the server; 240 characters trained every step and then
    failed to publish the LoRA (its temporary file's name was too long)."""
    from unifl.webui_extension.ui import train_clicked

    refused(tab, pattern, **form_inputs(name=name, extra=extra))
    status, _ = train_clicked(tab[0], "task(unifl-long)", *form_inputs(name=name, extra=extra).values())  # the button: a refusal, never a raise
    assert 'data-unifl-state="error"' in status and "choose a shorter name" in status


@pytest.mark.slow
def test_train_again_while_the_first_job_loads_is_refused_and_the_first_job_finishes(tab, tiny_sd15_dir):
    """The reported case: a second Train while the first job was loading was refused as busy, but its pre-run
    check built modules on the meta device for the whole process, and the first job died ("expected device
    meta"). Here second submissions, and the pre-run check they run, overlap each of five first jobs' model load."""
    import shutil

    from conftest import FAST
    from unifl.webui_extension import jobs
    from unifl.webui_extension.host import StandaloneHost
    from unifl.webui_extension.ui import checked_run, start_job, train_clicked

    _, outside = tab
    models = outside.parent / "checkpoints"
    shutil.copytree(tiny_sd15_dir, models / "tiny")
    host = StandaloneHost([models], outside.parent / "Lora", outside.parent / "unifl")
    fast = "\n".join(line for line in FAST if not line.startswith("optim.max_steps"))  # one step: the load is what matters here
    overlaps = 0
    for round_ in range(5):
        first = start_job(host, f"task(unifl-first-{round_})", **form_inputs(name=f"first-{round_}", extra=fast, **{"optim.max_steps": 1})
                          | {"checkpoint_label": "tiny", "resume_wanted": False})
        second = form_inputs(name="second", extra=fast) | {"checkpoint_label": "tiny"}
        while first.snapshot().state in (jobs.QUEUED, jobs.LOADING):
            status, _ = train_clicked(host, "task(unifl-second)", *second.values())
            assert 'data-unifl-state="error"' in status and f"UniFL is already training &#x27;first-{round_}&#x27;" in status, status
            checked_run(host, **second)  # the second submission's pre-run check, as while no job was on the board
            overlaps += first.snapshot().state == jobs.LOADING
        deadline = time.time() + 300
        while first.snapshot().active:
            assert time.time() < deadline
            time.sleep(0.1)
        assert first.snapshot().state == "finished", first.snapshot().message
        assert (host.lora_dir() / f"first-{round_}.safetensors").is_file()
    print(f"{overlaps} pre-run checks overlapped a model load")
    assert overlaps >= 3, f"only {overlaps} checks overlapped a model load"
