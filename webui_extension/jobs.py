"""One UniFL training run as the tab sees it: started by Train, watched by polling, ended by Stop.

The run lives on a worker thread of the host (the webui's GPU job queue, or a plain thread
standalone), never inside a gradio request: a training that takes hours must survive a closed tab,
a reloaded page and gradio's request timeouts, and the page re-attaches by polling. The job only
*translates*: :class:`~unifl.core.training.trainer.UniFLTrainer` trains and exports; the job mirrors its
callbacks into a snapshot for the page and into the host, and copies the finished LoRA into the
host's Lora folder.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..core.config import TrainConfig
from ..core.files import atomic_write_bytes
from ..core.memory import release_freed_memory
from .host import Host

#: Job states in order; the first four are "active" (the page keeps polling).
QUEUED, LOADING, TRAINING, STOPPING, FINISHED, STOPPED, FAILED = "queued", "loading", "training", "stopping", "finished", "stopped", "failed"
ACTIVE_STATES = (QUEUED, LOADING, TRAINING, STOPPING)
#: Loss terms shown in the progress text (the rest are in the loss plot and logs.csv).
HEADLINE_TERMS = ("pefl", "aesthetic", "adv_g", "d_loss", "regularizer")


class JobBusy(RuntimeError):
    """A second Train while a run is active: one GPU, one run."""


@dataclass
class Snapshot:
    """A consistent copy of the job's state for one poll of the page."""

    task_id: str
    name: str
    state: str
    step: int = 0
    total: int = 0
    message: str = ""
    history: list[tuple[int, dict]] = field(default_factory=list)
    previews: list[tuple[Image.Image, str]] = field(default_factory=list)
    lora_path: Path | None = None
    run_dir: Path | None = None
    seconds_per_step: float | None = None
    feedback: str = ""  # what the run learns from (feedback_summary): the Result box keeps it through every poll

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class TrainingJob:
    """Trains ``config`` and publishes the LoRA as ``destination`` (``<lora_dir>/<name>.safetensors``).

    Args:
        resume: continue the run folder's latest checkpoint; otherwise start it afresh.
        replace: allow replacing an existing ``destination`` (the user ticked it).
    """

    def __init__(self, task_id: str, config: TrainConfig, host: Host, destination: Path, *, resume: bool, replace: bool):
        self.config, self.host, self.destination, self.resume, self.replace = config, host, Path(destination), resume, replace
        self._lock = threading.Lock()
        self._snapshot = Snapshot(task_id, self.destination.stem, QUEUED, total=config.optim.max_steps,
                                  message="waiting for the GPU (another webui job may be running)", run_dir=Path(config.logging.output_dir),
                                  feedback=feedback_summary(config))
        self._stop_requested = False
        self._first_step_time: tuple[int, float] | None = None

    # -- what the page and the host see ----------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            s = self._snapshot
            return dataclasses.replace(s, history=list(s.history), previews=list(s.previews))

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = dataclasses.replace(self._snapshot, **changes)

    def request_stop(self) -> None:
        """Stop after the current micro-step; the trainer then saves a checkpoint and exports the LoRA."""
        self._stop_requested = True
        with self._lock:
            if self._snapshot.state in (LOADING, TRAINING):
                self._snapshot = dataclasses.replace(self._snapshot, state=STOPPING, message="stopping after the current step, then saving the LoRA")

    def should_stop(self) -> bool:
        return self._stop_requested or self.host.interrupted()

    def _on_progress(self, step: int, total: int, logs: dict) -> None:
        now = time.time()
        if self._first_step_time is None:
            self._first_step_time = (step, now)
        first_step, first_time = self._first_step_time
        rate = (now - first_time) / (step - first_step) if step > first_step else None
        terms = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if k in HEADLINE_TERMS)
        text = f"UniFL step {step}/{total}" + (f": {terms}" if terms else "")
        with self._lock:
            s = self._snapshot
            state = STOPPING if s.state == STOPPING else TRAINING
            self._snapshot = dataclasses.replace(s, state=state, step=step, total=total, message=text if state == TRAINING else s.message,
                                                 history=[*s.history, (step, dict(logs))], seconds_per_step=rate)
        self.host.report_progress(step, total, text)

    def _on_preview(self, step: int, images: list) -> None:
        self._update(previews=[(image, f"step {step}") for image in images])
        self.host.report_preview(contact_sheet(images))

    # -- the worker ----------------------------------------------------------------------------------

    def run(self) -> str:
        """Called once on the host's worker thread; returns the final message (the webui logs it).

        However the run ends (finished, stopped, cancelled, refused or failed), the process gives back
        the memory it freed and the host gets its GPU back before the final state is published, so a
        page (or a test) that sees the run end also sees the webui's model back in place and the
        process at its size after the run.
        """
        if self._stop_requested:
            outcome = {"state": STOPPED, "message": "cancelled before it started"}
        else:
            self._update(state=LOADING, message=f"loading {self.config.model.path}")
            give_back = self.host.release_gpu()
            outcome = self._train()
            gc.collect()  # the trainer was a local of _train: its reference cycles go now, and its CUDA tensors with them
            _empty_cuda_cache()
            try:
                give_back()
            except Exception as error:
                traceback.print_exc()
                outcome["message"] += f" (the webui's model could not be moved back to the GPU: {error}; it reloads when the next image is generated)"
        release_freed_memory()  # nothing of the run is reachable any more: glibc can give its pages back
        self._update(**outcome)
        return outcome["message"]

    def _train(self) -> dict:
        """Train and publish the LoRA; returns the job's final state. Nothing of the run outlives this call:
        the trainer is a local, and an exception is turned into its message here."""
        from ..core.training.trainer import TrainerCallbacks, UniFLTrainer

        try:
            callbacks = TrainerCallbacks(on_progress=self._on_progress, on_preview=self._on_preview, should_stop=self.should_stop)
            trainer = UniFLTrainer(self.config, callbacks=callbacks)
            if self._snapshot.state == LOADING:
                self._update(state=TRAINING, message="training: the first step compiles and warms up")
            result = trainer.train(resume="latest" if self.resume else None, overwrite=not self.resume)
            return self._publish(result.lora_path, result.steps, result.stopped_early)
        except Exception as error:  # everything reaches the page; unexpected ones also the console
            if not isinstance(error, EXPECTED_ERRORS):
                traceback.print_exc()
            return {"state": FAILED, "message": explain_error(error, self.config)}

    def _publish(self, lora_path: Path | None, steps: int, stopped_early: bool) -> dict:
        """Copy the exported LoRA into the Lora folder; returns the job's final state."""
        if lora_path is None or steps == 0:
            return {"state": STOPPED, "message": "stopped before the first step; no LoRA was written"}
        if self.destination.exists() and not self.replace:
            raise FileExistsError(f"{self.destination} appeared while training; the LoRA is kept at {lora_path}. Copy it by hand, or tick 'Replace an existing LoRA file' next time")
        atomic_write_bytes(self.destination, Path(lora_path).read_bytes())
        done = f"stopped at step {steps}" if stopped_early else f"finished {steps} steps"
        return {"state": STOPPED if stopped_early else FINISHED, "step": steps, "lora_path": self.destination, "message": f"{done}; LoRA saved as {self.destination}"}


def feedback_summary(config: TrainConfig) -> str:
    """One line saying what the run learns from."""
    from ..core.training.terms import feedback_terms

    terms = feedback_terms(config)
    if not terms:
        return "Feedback: none, as asked (a denoising-only LoRA)."
    models = [f"{spec.aspect} {spec.kind}" for spec in (*config.rewards, *config.perception)]
    return f"Feedback: {', '.join(terms)} ({'; '.join(models)})."


def contact_sheet(images: list[Image.Image]) -> Image.Image:
    """The preview images side by side: the host shows one live-preview image."""
    width, height = images[0].size
    sheet = Image.new("RGB", (width * len(images), height), "white")
    for i, image in enumerate(images):
        sheet.paste(image, (i * width, 0))
    return sheet


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _expected_errors() -> tuple[type[BaseException], ...]:
    from ..core.config import ConfigError
    from ..core.data import DataError
    from ..core.diffusion.loading import ModelLoadError
    from ..core.feedback.loading import UnknownModelKind
    from ..core.files import TextFileError
    from ..core.lora.kohya import LoRAFileError
    from ..core.training.checkpoint import CheckpointError, CheckpointWriteError
    from ..core.training.trainer import TrainingDiverged

    return (ConfigError, DataError, LoRAFileError, ModelLoadError, UnknownModelKind, TrainingDiverged, FileExistsError, FileNotFoundError,
            TextFileError, CheckpointError, CheckpointWriteError)


EXPECTED_ERRORS = _expected_errors()


def explain_error(error: BaseException, config: TrainConfig) -> str:
    """The message the page shows: the core's own (it names the file and the fix), plus what to do for OOM."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return (f"out of GPU memory ({error}). Lower Resolution or Batch size, keep Gradient checkpointing on, use bf16 "
                f"mixed precision, or LoRA rank; then Train again with 'continue it' to resume from the last checkpoint in {config.logging.output_dir}.")
    return f"{type(error).__name__}: {error}"


# -- the one run at a time ------------------------------------------------------------------------

_current: TrainingJob | None = None
_board_lock = threading.Lock()


def current_job() -> TrainingJob | None:
    return _current


def refuse_if_busy() -> None:
    """Raise :class:`JobBusy` naming the active run, if there is one."""
    if _current is not None and _current.snapshot().active:
        running = _current.snapshot()
        raise JobBusy(f"UniFL is already training {running.name!r} ({running.state}, step {running.step}/{running.total}); press Stop and wait for it to save, then Train again")


def submit(job: TrainingJob, host: Host) -> None:
    """Make ``job`` the current run and hand it to the host's worker; refuses while another is active."""
    global _current
    with _board_lock:
        refuse_if_busy()
        _current = job
    host.run_in_background(job.snapshot().task_id, job.run)
