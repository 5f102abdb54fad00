"""``unifl webui``: the command line, that wiring it into ``unifl`` costs the CLI nothing at import, and that its
jobs (the tab's too: one job code) give the process its freed memory back however they end."""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from unifl.webui_extension.standalone import add_webui_command


def test_the_webui_command_parses_its_folders():
    parser = argparse.ArgumentParser(prog="unifl")
    add_webui_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["webui", "--port", "7999", "--checkpoint-dir", "a", "--checkpoint-dir", "b", "--lora-dir", "L"])
    assert (args.port, args.checkpoint_dir, args.lora_dir, args.unifl_dir) == (7999, [Path("a"), Path("b")], Path("L"), Path("models/unifl"))
    assert callable(args.func)


def test_importing_the_command_imports_neither_gradio_nor_torch():
    code = "import sys, unifl.webui_extension.standalone; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'torch', 'modules')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout.strip() == "[]"


# -- a job gives the host process its memory back, however it ends ---------------------------------------


class _Spy:
    """Stands in for the job's ``release_freed_memory``: at each call, which trainers were still reachable and
    what the page could see; then it does the real release."""

    def __init__(self, monkeypatch):
        from unifl.core.training import trainer as trainer_module
        from unifl.webui_extension import jobs

        self.trainers: list[weakref.ref] = []
        self.calls: list[tuple[int, str | None]] = []
        self.job = None
        build, self._release = trainer_module.UniFLTrainer.__init__, jobs.release_freed_memory

        def tracked(trainer, *args, **kwargs):
            self.trainers.append(weakref.ref(trainer))
            build(trainer, *args, **kwargs)

        monkeypatch.setattr(trainer_module.UniFLTrainer, "__init__", tracked)
        monkeypatch.setattr(jobs, "release_freed_memory", self)

    def __call__(self) -> bool:
        gc.collect()  # what the real one does first: reference cycles are no obstacle, a held reference is
        alive = sum(ref() is not None for ref in self.trainers)
        self.calls.append((alive, self.job.snapshot().state if self.job is not None else None))
        return self._release()


class _Host:
    """`unifl webui`'s host, with a hook into the job's progress (to press Stop, or to drop a file in its way)."""

    def __new__(cls, tmp_path, on_progress=lambda: None):
        from unifl.webui_extension.host import StandaloneHost

        host = StandaloneHost([], tmp_path / "Lora", tmp_path / "unifl")
        host.report_progress = lambda step, total, text: on_progress()
        return host


def _job(fast_config, host, name="released"):
    from unifl.webui_extension.jobs import TrainingJob

    return TrainingJob("task(unifl-release)", fast_config("optim.max_steps=2"), host, host.lora_dir() / f"{name}.safetensors", resume=False, replace=False)


def _ends(job, spy, state: str) -> str:
    from unifl.webui_extension.jobs import ACTIVE_STATES

    spy.job = job
    message = job.run()
    assert job.snapshot().state == state, message
    assert spy.calls, "the job ended without giving the process its freed memory back"
    alive, seen = spy.calls[-1]
    assert alive == 0, f"{alive} trainer(s) still reachable when the memory was released: the trim cannot return their pages"
    assert seen in ACTIVE_STATES, f"the page saw the run end ({seen}) before the memory was given back"
    return message


def test_a_finished_run_releases_its_trainer_then_the_memory_then_says_it_ended(monkeypatch, fast_config, tmp_path):
    spy = _Spy(monkeypatch)
    _ends(_job(fast_config, _Host(tmp_path)), spy, "finished")
    assert len(spy.trainers) == 1


def test_a_stopped_run_releases_its_memory(monkeypatch, fast_config, tmp_path):
    spy = _Spy(monkeypatch)
    job = _job(fast_config, _Host(tmp_path, on_progress=lambda: job.request_stop()))
    assert _ends(job, spy, "stopped").startswith("stopped at step 1")


def test_a_run_refused_at_the_end_releases_its_memory(monkeypatch, fast_config, tmp_path):
    """A LoRA of the same name appeared while training: the job refuses to replace it (an expected error)."""
    spy = _Spy(monkeypatch)
    host = _Host(tmp_path, on_progress=lambda: (host.lora_dir().mkdir(parents=True, exist_ok=True), (host.lora_dir() / "released.safetensors").write_bytes(b"theirs")))
    assert "appeared while training" in _ends(_job(fast_config, host), spy, "failed")
    assert (host.lora_dir() / "released.safetensors").read_bytes() == b"theirs"


def test_a_run_that_fails_releases_its_trainer_and_the_memory(monkeypatch, fast_config, tmp_path):
    """An unexpected error: its traceback holds the trainer's frames, which must not keep the trainer alive."""
    import torch

    from unifl.core.training import trainer as trainer_module

    def fail(trainer, *args, **kwargs):
        held = torch.zeros(1024, 1024)  # noqa: F841  a tensor in the failing frame, as a real failure has
        raise RuntimeError("the GPU fell off the bus")

    monkeypatch.setattr(trainer_module.UniFLTrainer, "train", fail)
    spy = _Spy(monkeypatch)
    assert _ends(_job(fast_config, _Host(tmp_path)), spy, "failed") == "RuntimeError: the GPU fell off the bus"
    assert len(spy.trainers) == 1


def test_a_run_cancelled_before_it_started_releases_the_memory(monkeypatch, fast_config, tmp_path):
    spy = _Spy(monkeypatch)
    job = _job(fast_config, _Host(tmp_path))
    job.request_stop()
    assert _ends(job, spy, "stopped") == "cancelled before it started"


def test_a_refused_train_releases_what_its_check_read(monkeypatch, tmp_path):
    """The button's refusal path: the pre-run check read the form's files; nothing of them stays."""
    from types import SimpleNamespace

    from unifl.webui_extension import form, jobs, ui
    from unifl.webui_extension.jobs import Snapshot

    released = []
    monkeypatch.setattr(ui, "release_freed_memory", lambda: released.append(True))
    config = form.preset_config("tiny", "pocket")
    values = form.form_values(config) | {"logging.output_name": "refused", "data.images": str(tmp_path / "unifl" / "missing")}
    rewards, perception = form.feedback_values(config)
    status, _ = ui.train_clicked(_Host(tmp_path), "task(unifl-refused)", "pocket", "tiny", form.NO_LORA, True, False, "", values, rewards, perception)
    assert "missing does not exist" in status and released == [True]

    monkeypatch.setattr(jobs, "_current", SimpleNamespace(snapshot=lambda: Snapshot("task(unifl-running)", "running", "training", 3, 10)))
    status, _ = ui.train_clicked(_Host(tmp_path), "task(unifl-busy)", "pocket", "tiny", form.NO_LORA, True, False, "", values, rewards, perception)
    assert "UniFL is already training" in status and released == [True], "a busy refusal trims nothing while a run uses the heap"
