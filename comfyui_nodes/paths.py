"""Where UniFL's files live inside ComfyUI: model folders, the LoRA folder, run folders.

Imported when ComfyUI starts, so it touches nothing heavier than ``folder_paths`` (no torch).

* ``models/unifl/rewards`` (``unifl_rewards``) and ``models/unifl/perception`` (``unifl_perception``)
  hold reward and perception model files, and model *folders* (PickScore, the LAION predictor with its
  CLIP, ImageReward with its tokenizer, any Hugging Face folder with a ``config.json``), listed as
  ``name/``. Both names can be extended in ``extra_model_paths.yaml``.
* Trained LoRAs go to the first ``loras`` folder (``models/loras/unifl/…`` by default), so the stock
  ``LoraLoader`` lists them after a refresh.
* Training runs (checkpoints, logs, samples) go to ``output/unifl_runs/<name>-<time>/``.
* Paths typed into a node or a workflow (image folders, pair files, ``extra_settings``) must lie inside
  ComfyUI's folders (:func:`comfyui_folders`); ``kind = "module"`` needs ``UNIFL_ALLOW_MODULE_KINDS=1``
  in the environment of whoever starts ComfyUI.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import folder_paths

from ..core.feedback.public_models import recognise
from ..core.files import is_inside
from ..pocket.plugin import WEIGHTS_DIR

REWARD_FOLDER = "unifl_rewards"
PERCEPTION_FOLDER = "unifl_perception"
MODEL_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}

#: Weight-free models every install has, shown first in the loaders as ``builtin/<kind>``.
BUILTIN_REWARDS = {"colorfulness": "color", "sharpness": "detail", "exposure": "lighting"}
BUILTIN_PERCEPTION = {"random-features": "style"}
BUILTIN_PREFIX = "builtin/"
#: The pocket world's shipped models (64 px, for the pocket model), shown as ``pocket/<name>``.
POCKET_PREFIX = "pocket/"
RUNS_FOLDER = "unifl_runs"
#: Set to 1 by the owner of a ComfyUI to let nodes and workflows use ``kind = "module"`` (it runs Python code).
ALLOW_MODULE_KINDS = "UNIFL_ALLOW_MODULE_KINDS"


def register_model_folders() -> None:
    """Register ``models/unifl/{rewards,perception}`` (idempotent; keeps paths a user configured)."""
    for name, sub in ((REWARD_FOLDER, "rewards"), (PERCEPTION_FOLDER, "perception")):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, "unifl", sub))
        # A newly registered name accepts every file; list model files only.
        folder_paths.folder_names_and_paths[name][1].update(MODEL_SUFFIXES)


def _pocket_names(sub: str) -> list[str]:
    folder = WEIGHTS_DIR / sub
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def reward_choices() -> list[str]:
    """Options of the reward loader: built-ins, shipped pocket rewards, then the folders and files in ``models/unifl/rewards``."""
    return [BUILTIN_PREFIX + k for k in BUILTIN_REWARDS] + [POCKET_PREFIX + n for n in _pocket_names("rewards")] + _user_models(REWARD_FOLDER, "rewards")


def perception_choices() -> list[str]:
    return [BUILTIN_PREFIX + k for k in BUILTIN_PERCEPTION] + [POCKET_PREFIX + n for n in _pocket_names("perception")] + _user_models(PERCEPTION_FOLDER, "perception")


def _user_models(folder_name: str, section: str) -> list[str]:
    """Model folders (``name/``) first, then the files that are not inside one (a folder's own files are its parts)."""
    folders = model_folders(folder_name, section)
    files = [f for f in folder_paths.get_filename_list(folder_name) if not any(f.replace("\\", "/").startswith(d) for d in folders)]
    return folders + files


def model_folders(folder_name: str, section: str) -> list[str]:
    """First-level folders of ``folder_name``'s paths that hold one model: a published model's folder
    (``core.feedback.public_models``: PickScore_v1, ImageReward, laion-aesthetic) or a Hugging Face model
    folder (``config.json``); as ``"name/"``."""
    found = set()
    for root in folder_paths.get_folder_paths(folder_name):
        base = Path(root)
        if base.is_dir():
            found |= {sub.name + "/" for sub in base.iterdir() if sub.is_dir() and (recognise(section, sub.name) or (sub / "config.json").is_file())}
    return sorted(found)


def model_folder(folder_name: str, choice: str) -> Path | None:
    """The folder a ``"name/"`` choice stands for (the first of ``folder_name``'s paths that has it)."""
    name = choice.rstrip("/")
    if not name or "/" in name or name in (".", ".."):
        return None
    return next((Path(root) / name for root in folder_paths.get_folder_paths(folder_name) if (Path(root) / name).is_dir()), None)


def find_model(folder_name: str, choice: str) -> Path | None:
    """The file or (``"name/"``) model folder a loader's choice stands for, or ``None`` when it is not there."""
    if choice.endswith("/"):
        return model_folder(folder_name, choice)
    found = folder_paths.get_full_path(folder_name, choice)
    return None if found is None else Path(found)


def missing_model(role: str, choice: str) -> str | None:
    """``None`` when a reward (``role="reward"``) or perception loader's choice is there, else the one-line reason,
    naming the file and the folders searched. Checked when a prompt is queued (the loaders' ``validate_inputs``)
    and again when a loader runs."""
    folder = REWARD_FOLDER if role == "reward" else PERCEPTION_FOLDER
    if choice.startswith((BUILTIN_PREFIX, POCKET_PREFIX)):
        shipped = reward_choices() if role == "reward" else perception_choices()
        return None if choice in shipped else f"{choice!r} is not a model this pack ships; pick one of {[c for c in shipped if c.startswith((BUILTIN_PREFIX, POCKET_PREFIX))]}"
    if find_model(folder, choice) is not None:
        return None
    return f"{choice!r} is not in {folder_paths.get_folder_paths(folder)}; put it there (docs/recipes.md says where to get the published ones) and press Refresh"


def missing_lora(name: str) -> str | None:
    """``None`` when ``name`` is in a ``loras`` folder, else the one-line reason (see :func:`lora_file`)."""
    if folder_paths.get_full_path("loras", name) is not None:
        return None
    return f"LoRA {name!r} is not in {folder_paths.get_folder_paths('loras')}; put it there (or pick one from the list) and press Refresh"


def lora_choices() -> list[str]:
    return folder_paths.get_filename_list("loras")


def lora_file(name: str) -> str:
    """Full path of a file listed in ``loras``; the error names the folders searched and the fix."""
    missing = missing_lora(name)
    if missing:
        raise FileNotFoundError(missing)
    return folder_paths.get_full_path("loras", name)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\- ]+$")


def new_lora_path(name: str, overwrite: bool) -> Path:
    """``models/loras/<name>.safetensors`` for a LoRA about to be trained; checked *before* training.

    ``name`` may contain sub-folders (``unifl/portrait_s1``) but must stay inside the LoRA folder.
    An existing file is refused unless ``overwrite`` is set, so a long run never ends in a surprise.
    """
    name = name.strip().replace("\\", "/")
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") or not _SAFE_NAME.match(p) for p in parts):
        raise ValueError(f"lora_name {name!r}: use letters, digits, '_', '-', '.' and '/' for sub-folders, e.g. 'unifl/my_style_s1'")
    root = Path(folder_paths.get_folder_paths("loras")[0]).resolve()
    path = root.joinpath(*parts).with_name(parts[-1] + ".safetensors")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another lora_name, or set overwrite to true to replace it")
    return path


def run_folder(lora_path: Path) -> Path:
    """A fresh run folder ``output/unifl_runs/<stem>-<YYYYmmdd-HHMMSS>`` (checkpoints, logs.csv, samples)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_folder()
    folder, n = base / f"{lora_path.stem}-{stamp}", 1
    while folder.exists():
        n += 1
        folder = base / f"{lora_path.stem}-{stamp}-{n}"
    return folder


def runs_folder() -> Path:
    """``output/unifl_runs``: the only folder a training from ComfyUI writes run folders into (and deletes in)."""
    return Path(folder_paths.get_output_directory()) / RUNS_FOLDER


def comfyui_folders() -> list[Path]:
    """The folders a path from a node or workflow may name: input, output, every model folder (also those
    of ``extra_model_paths.yaml``) and the pack's shipped weights."""
    model_folders = [Path(p) for paths, _ in folder_paths.folder_names_and_paths.values() for p in paths]
    return [Path(folder_paths.get_input_directory()), Path(folder_paths.get_output_directory()), *model_folders, WEIGHTS_DIR]


def module_kinds_allowed() -> bool:
    return os.environ.get(ALLOW_MODULE_KINDS, "").strip() == "1"


def input_folder(text: str) -> Path | None:
    """An image folder: relative to ComfyUI's input directory, or absolute inside ComfyUI's folders; ``""`` = none."""
    if not text.strip():
        return None
    path = input_path(text)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; give a folder inside ComfyUI's input directory ({folder_paths.get_input_directory()})")
    return path


def input_path(text: str) -> Path:
    """A file or folder: relative to ComfyUI's input directory, or absolute inside ComfyUI's folders; it must exist."""
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = Path(folder_paths.get_input_directory()) / path
    if not is_inside(path, comfyui_folders()):
        raise ValueError(f"{text.strip()!r} is outside ComfyUI's folders; put it inside the input directory ({folder_paths.get_input_directory()}) and give its path there")
    if not text.strip() or not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a path inside ComfyUI's input directory ({folder_paths.get_input_directory()})")
    return path


def relative_lora_name(path: Path) -> str:
    """The name ``LoraLoader`` shows for a file in a ``loras`` folder (``unifl/x.safetensors``)."""
    for root in folder_paths.get_folder_paths("loras"):
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return Path(path).name
