"""One run per run folder: a second training in a busy folder is refused naming it; a dead run's lock is taken over.

Two trainings in one folder used to both finish with exit 0, interleaving their CSV rows and losing one
result.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from bad_input_checks import assert_untouched, snapshot
from unifl.core.training.run_lock import LOCK_NAME, RunFolderBusy, run_folder_lock

HOLD = """
import sys, time
from unifl.core.training.run_lock import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (it prints ``locked`` once it holds it)."""
    import unifl

    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(unifl.__file__).parent.parent)})
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_lock_held_by_another_process_refuses_naming_the_folder_and_the_owner(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunFolderBusy, match=rf"{tmp_path / 'run'} is in use by another training run \(pid {holder.pid} on "):
            with run_folder_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_stale_and_taken_over(tmp_path, caplog):
    holder = _holder(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)  # kill -9: no clean-up ran, the lock file stays with its pid
    holder.wait()
    assert str(holder.pid) in (tmp_path / "run" / LOCK_NAME).read_text()
    with run_folder_lock(tmp_path / "run"):
        assert str(os.getpid()) in (tmp_path / "run" / LOCK_NAME).read_text()
    assert any(f"taking over the lock of pid {holder.pid}" in r.getMessage() and "no longer running" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "run" / LOCK_NAME).exists(), "released on exit"


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    """ComfyUI and the webui run trainings on threads of one process: the lock is per open file, not per process."""
    with run_folder_lock(tmp_path / "run"):
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            with run_folder_lock(tmp_path / "run"):
                pass


@pytest.mark.slow
def test_two_trainings_in_one_folder_never_interleave(fast_config, tmp_path):
    from unifl.core.training.trainer import TrainerCallbacks, UniFLTrainer

    config = fast_config("optim.max_steps=3", f"logging.output_dir={tmp_path / 'run'}")
    first_is_training, may_finish = threading.Event(), threading.Event()

    def wait_in_step(step, total, logs):
        first_is_training.set()
        may_finish.wait(timeout=120)

    results = []
    first = threading.Thread(target=lambda: results.append(UniFLTrainer(config, callbacks=TrainerCallbacks(on_progress=wait_in_step)).train()))
    first.start()
    try:
        assert first_is_training.wait(timeout=300)
        before = snapshot(tmp_path / "run")
        second = UniFLTrainer(fast_config("optim.max_steps=3", f"logging.output_dir={tmp_path / 'run'}"))
        for mode in ({}, {"overwrite": True}, {"resume": "latest"}):
            with pytest.raises(RunFolderBusy, match=rf"{tmp_path / 'run'} is in use by another training run"):
                second.train(**mode)
        assert_untouched(before)
    finally:
        may_finish.set()
        first.join()
    assert results and results[0].steps == 3
    with (tmp_path / "run" / "logs.csv").open() as fh:
        assert [row["step"] for row in csv.DictReader(fh)] == ["1", "2", "3"]
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_failed_run_releases_its_folder(fast_config, tmp_path):
    from unifl.core.training.trainer import TrainerCallbacks, UniFLTrainer

    def fail(step, total, logs):
        raise RuntimeError("the host went away")

    with pytest.raises(RuntimeError, match="host went away"):
        UniFLTrainer(fast_config(), callbacks=TrainerCallbacks(on_progress=fail)).train()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert UniFLTrainer(fast_config()).train(overwrite=True).steps == 2  # the folder is free for the next run
