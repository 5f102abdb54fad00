"""What the tab needs from whoever serves it: the webui (A1111, Forge, reForge, SD.Next) or nobody.

The tab and the training job talk to a host only through the small :class:`Host` interface below, so
one UI serves the webui and the standalone ``unifl webui`` app. :class:`WebuiHost` is the only place
that touches the webui's ``modules``; it sticks to names that A1111 v1.10, Forge, reForge and SD.Next
share (see ``shared/notes/a1111-webui.md`` §1.3–1.5) and never trains on the host's in-memory model,
whose shape differs between forks: it hands the trainer the *file* of the selected checkpoint.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Protocol

from PIL import Image

#: The embedded pocket-world model (``model.path = "pocket"``), offered by the standalone app.
POCKET_TITLE = "pocket"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


class Host(Protocol):
    """The host services the tab and :class:`~.jobs.TrainingJob` use."""

    def checkpoints(self, refresh: bool = False) -> dict[str, str]:
        """Selectable base models, title → path (``"pocket"`` for the embedded model)."""

    def default_checkpoint(self) -> str | None:
        """The title to preselect: the webui's current checkpoint, or the pocket model."""

    def lora_dir(self) -> Path:
        """Where finished LoRAs go, so that ``<lora:name:1>`` finds them."""

    def unifl_dir(self) -> Path:
        """UniFL's own folder: reward/perception model files and the run folders (checkpoints, logs)."""

    def run_in_background(self, task_id: str, work: Callable[[], str]) -> None:
        """Run ``work`` on a worker thread, as a job of the host (its GPU lock, progress, interrupt)."""

    def report_progress(self, step: int, total: int, text: str) -> None:
        """Mirror training progress into the host's own progress display."""

    def report_preview(self, image: Image.Image) -> None:
        """Mirror the latest preview into the host's live preview."""

    def interrupted(self) -> bool:
        """Whether the host asked the current job to stop (the webui's global Interrupt)."""

    def release_gpu(self) -> Callable[[], None]:
        """Free the GPU memory the host holds for training; returns the function that gives it back."""

    def ui_confinement(self):
        """The :class:`~unifl.core.training.confinement.UIConfinement` of configs built by the tab: the folders
        it may read, where its run folders go, and whether ``kind = "module"`` is allowed."""


def _nothing() -> None:
    """Nothing to give back."""


class StandaloneHost:
    """``unifl webui``: checkpoints from folders, LoRAs into a folder, jobs on a plain thread."""

    def __init__(self, checkpoint_dirs: list[Path], lora_dir: Path, unifl_dir: Path, allow_module_kinds: bool = False):
        self.checkpoint_dirs = [Path(d) for d in checkpoint_dirs]
        self._lora_dir, self._unifl_dir = Path(lora_dir), Path(unifl_dir)
        self.allow_module_kinds = allow_module_kinds

    def checkpoints(self, refresh: bool = False) -> dict[str, str]:
        found = {POCKET_TITLE: POCKET_TITLE}
        for folder in self.checkpoint_dirs:
            for parent, subfolders, files in os.walk(folder):
                if "model_index.json" in files:  # a diffusers pipeline: one model, not its component files
                    found[str(Path(parent).relative_to(folder))] = parent
                    subfolders.clear()
                    continue
                subfolders.sort()
                for name in sorted(files):
                    if name.endswith(CHECKPOINT_SUFFIXES):
                        found[str(Path(parent, name).relative_to(folder))] = os.path.join(parent, name)
        return found

    def default_checkpoint(self) -> str | None:
        return POCKET_TITLE

    def lora_dir(self) -> Path:
        return self._lora_dir

    def unifl_dir(self) -> Path:
        return self._unifl_dir

    def run_in_background(self, task_id: str, work: Callable[[], str]) -> None:
        threading.Thread(target=work, name=f"unifl-{task_id}", daemon=True).start()

    def report_progress(self, step: int, total: int, text: str) -> None:
        """The standalone page shows progress from the job itself."""

    def report_preview(self, image: Image.Image) -> None:
        """The standalone page shows previews from the job itself."""

    def interrupted(self) -> bool:
        return False

    def release_gpu(self) -> Callable[[], None]:
        return _nothing

    def ui_confinement(self):
        from ..core.training.confinement import UIConfinement

        return UIConfinement(readable=(self._unifl_dir, self._lora_dir, *self.checkpoint_dirs), runs=self._unifl_dir / RUNS_FOLDER,
                             models=frozenset(self.checkpoints().values()), allow_module_kinds=self.allow_module_kinds,
                             how_to_allow_modules="start `unifl webui` with --allow-module-kinds to allow it", where="the UniFL tab")


SETTINGS_SECTION = ("unifl", "UniFL")
UNIFL_DIR_OPTION = "unifl_dir"
UNLOAD_OPTION = "unifl_unload_model"
MODULE_KINDS_OPTION = "unifl_allow_module_kinds"
#: Run folders live in ``<UniFL folder>/runs``; nothing the tab starts writes or deletes outside it.
RUNS_FOLDER = "runs"


class WebuiHost:
    """A1111 and its forks, through ``modules.shared``, ``sd_models``, ``call_queue`` and ``paths``."""

    def __init__(self):
        from modules import call_queue, paths, sd_models, shared

        self.shared, self.sd_models, self.call_queue, self.paths = shared, sd_models, call_queue, paths

    def checkpoints(self, refresh: bool = False) -> dict[str, str]:
        if refresh:
            self.sd_models.list_models()
        return {title: info.filename for title, info in self.sd_models.checkpoints_list.items()}

    def default_checkpoint(self) -> str | None:
        # The *selected* checkpoint's title; reading ``shared.sd_model`` instead would load a model.
        current = getattr(self.shared.opts, "sd_model_checkpoint", None)
        return current if current in self.sd_models.checkpoints_list else next(iter(self.sd_models.checkpoints_list), None)

    def lora_dir(self) -> Path:
        # SD.Next keeps it as a setting too; A1111/Forge/reForge only as --lora-dir.
        return Path(getattr(self.shared.opts, "lora_dir", None) or self.shared.cmd_opts.lora_dir)

    def unifl_dir(self) -> Path:
        return Path(getattr(self.shared.opts, UNIFL_DIR_OPTION, None) or os.path.join(self.paths.models_path, "unifl"))

    def run_in_background(self, task_id: str, work: Callable[[], str]) -> None:
        # wrap_gradio_gpu_call registers ``task_id`` with the progress API, waits for the webui's queue
        # lock (txt2img and UniFL never share the GPU), and runs ``shared.state.begin/end`` around it.
        job = self.call_queue.wrap_gradio_gpu_call(lambda _task_id: (work(),), extra_outputs=[])
        threading.Thread(target=job, args=(task_id,), name=f"unifl-{task_id}", daemon=True).start()

    def report_progress(self, step: int, total: int, text: str) -> None:
        state = self.shared.state
        state.job_count, state.job_no, state.textinfo = total, step, text

    def report_preview(self, image: Image.Image) -> None:
        self.shared.state.assign_current_image(image)

    def interrupted(self) -> bool:
        return bool(self.shared.state.interrupted)

    def release_gpu(self) -> Callable[[], None]:
        if not getattr(self.shared.opts, UNLOAD_OPTION, True):
            return _nothing
        # The loaded model, if any, without the lazy load that ``shared.sd_model`` would trigger.
        model = getattr(getattr(self.sd_models, "model_data", None), "sd_model", None)
        if model is None:
            return _nothing
        self.sd_models.unload_model_weights(model)
        send_back = getattr(self.sd_models, "send_model_to_device", None)

        def give_back() -> None:
            # A1111 keeps the unloaded model and needs it sent back; Forge's send is a no-op (it reloads
            # on demand) and SD.Next forgets the model on unload, so there is nothing to send back.
            if send_back is not None and self.sd_models.model_data.sd_model is model:
                send_back(model)

        return give_back

    def ui_confinement(self):
        from ..core.training.confinement import UIConfinement

        return UIConfinement(readable=(self.unifl_dir(), self.lora_dir(), Path(self.paths.models_path)), runs=self.unifl_dir() / RUNS_FOLDER,
                             models=frozenset(self.checkpoints().values()), allow_module_kinds=bool(getattr(self.shared.opts, MODULE_KINDS_OPTION, False)),
                             how_to_allow_modules="the webui's owner can allow it in Settings → UniFL", where="the UniFL tab")
