"""Resumable checkpoints.

A checkpoint is a folder ``checkpoints/step-000123/`` holding the LoRA (safetensors), the optimizer
state(s) (``torch.save`` of plain tensors and numbers, read back with ``weights_only=True``), the
discriminator in stage 2, ``manifest.json`` (every file's size and SHA-256) and ``state.json``. It is
written to a temporary folder, flushed to disk and renamed, so a kill, a power cut or a full disk
mid-save leaves the previous checkpoints intact. A checkpoint damaged later (a half-copied folder, a
failing disk) is found by its manifest: ``--resume latest`` says which one in one line and resumes
from the newest intact one before it. Data order and noise are pure functions of (seed, step), so no
RNG state is needed for an exact resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..files import (
    TextFileError,
    atomic_write_text,
    fsync_path,
    new_temporary_folder,
    read_text,
    readable_as_umask_says,
)

MANIFEST = "manifest.json"
#: Written into the checkpoint a run diverged right after: its next step fails the same way (data and
#: noise are functions of the step), so ``--resume latest`` passes it over. Kept, not deleted: resuming
#: it by name with a lower learning rate is the user's call.
DIVERGED = "diverged.json"
#: What every checkpoint holds (stage 2 adds the discriminator and its optimizer).
REQUIRED_FILES = ("lora.safetensors", "optimizer.pt", "lr_scheduler.pt", "state.json")
_STEP_FOLDER = re.compile(r"step-\d+")
_TEMPORARY_FOLDER = re.compile(r"\.step-\d+\..+")  # what a save killed before its rename leaves behind
log = logging.getLogger("unifl")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it and what to do."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk, say); the ones before it are untouched."""


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and _STEP_FOLDER.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(done, key=_step_of)


def resolve_resume(run_dir: str | Path, resume: str) -> Path:
    """``"latest"`` → the newest intact checkpoint of ``run_dir`` (each damaged one after it is named in
    one warning line); otherwise a checkpoint folder path, which must be intact."""
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {Path(run_dir) / 'checkpoints'}; start without --resume")
        skipped = []
        for path in reversed(found):
            diverged = diverged_after(path)
            if diverged is not None:
                log.warning("UniFL: checkpoint %s is where a run diverged (%s); trying the one before it", path, diverged)
                skipped.append("diverged")
                continue
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            log.warning("UniFL: checkpoint %s is damaged (%s); trying the one before it", path, problem)
            skipped.append("damaged")
        why = {("damaged",): "is damaged", ("diverged",): "is where a run diverged"}.get(tuple(set(skipped)), "is damaged or where a run diverged")
        raise CheckpointError(f"--resume latest: every checkpoint in {Path(run_dir) / 'checkpoints'} {why}; start again with --overwrite")
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no state.json)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"--resume {resume}: the checkpoint is damaged ({problem}); resume from an earlier one, or with --resume latest")
    diverged = diverged_after(path)
    if diverged is not None:
        log.warning("UniFL: resuming from %s, where a run diverged (%s): it will again unless the settings changed (a lower optim.learning_rate)", path, diverged)
    return path


def check_model_family(path: str | Path, state: dict, architecture: str) -> None:
    """Refuse checkpoint ``path`` (its ``state``) for a model of another family than it was trained on, by
    name, before its LoRA is matched against the model's layers (which would blame the LoRA's targets)."""
    model = state.get("config", {}).get("model", {}) if isinstance(state.get("config"), dict) else {}
    trained_on = state.get("architecture") or (model.get("architecture") if isinstance(model, dict) else None)
    if trained_on and trained_on != architecture:
        raise CheckpointError(f"checkpoint {path} was trained on an {trained_on} model ({model.get('path') or 'its model.path'}), but this model is "
                              f"{architecture}: give the {trained_on} model it was trained on, or start a new run in another folder")


def mark_diverged(path: str | Path, what: str) -> None:
    """Mark checkpoint ``path`` as the state a run diverged from (``what``: the failure), so that
    ``--resume latest`` passes it over (:data:`DIVERGED`)."""
    atomic_write_text(Path(path) / DIVERGED, json.dumps({"diverged": what}, indent=2) + "\n")


def diverged_after(path: str | Path) -> str | None:
    """What failed in the step after checkpoint ``path`` (:func:`mark_diverged`), or ``None``."""
    marker = Path(path) / DIVERGED
    if not marker.is_file():
        return None
    try:
        return str(json.loads(read_text(marker, "divergence marker"))["diverged"])
    except (ValueError, KeyError, TypeError):  # unreadable: still written by a run that diverged
        return "the divergence marker is unreadable"


def checkpoint_problem(path: str | Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (a missing, truncated or altered file), or ``None``."""
    path = Path(path)
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    problem = _parsed_state(path / "state.json")[1]
    if problem is not None:
        return f"state.json: {problem}"
    if (path / MANIFEST).is_file():
        return _manifest_problem(path)
    return _structure_problem(path)  # written before checkpoints had a manifest


def save_checkpoint(run_dir: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], optimizers: dict[str, dict], state: dict, keep: int) -> Path:
    """Write one checkpoint atomically, then drop all but the newest ``keep`` up to this step (0 = keep all).

    Checkpoints of later steps (left by the run this one resumed) are not pruned: the run replaces each
    as it reaches its step.
    """
    final = checkpoint_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary_folder(final)  # readable like the user's other folders, not 0700 as mkdtemp makes it
    try:
        for name, sd in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / f"{name}.safetensors"))
        for name, sd in optimizers.items():
            torch.save(sd, tmp / f"{name}.pt")
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MANIFEST).write_text(json.dumps({name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)} for name in files}, indent=2), encoding="utf-8")
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        for file in tmp.iterdir():
            readable_as_umask_says(file, tmp)
            fsync_path(file)
        fsync_path(tmp)
        if final.exists():  # the same step saved again (a resumed run): the new one is complete by now
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception):  # a full disk is an OSError from Python, a RuntimeError from torch.save
            raise CheckpointWriteError(f"could not write checkpoint {final} ({_first_line(err)}); the checkpoints before it are intact: "
                                       "free some space, then resume with --resume latest") from None
        raise
    fsync_path(final.parent)
    earlier = [p for p in list_checkpoints(run_dir) if _step_of(p) <= step]
    for old in earlier[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_only_checkpoints(run_dir: str | Path) -> None:
    """Refuse to start a run over ``run_dir`` unless its ``checkpoints/`` holds only UniFL checkpoints, the
    one thing a fresh start there deletes: a folder of someone else's files is not a run folder."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return
    foreign = [p for p in root.iterdir() if not _is_unifl_checkpoint(p)] if root.is_dir() else [root]
    if foreign:
        raise FileExistsError(f"{root} holds files UniFL did not write (e.g. {foreign[0].name}), so {run_dir} is not a UniFL run folder: "
                              "nothing was deleted; choose another logging.output_dir")


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict], dict]:
    path = Path(path)
    tensors, optimizers = {}, {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            tensors[file.stem] = load_file(str(file))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{file}: unreadable ({_first_line(err)}); resume from an earlier checkpoint") from None
    for file in sorted(path.glob("*.pt")):
        try:
            optimizers[file.stem] = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged pickle raises anything from the unpickler
            raise CheckpointError(f"{file}: unreadable ({_first_line(err)}); resume from an earlier checkpoint") from None
    return tensors, optimizers, _read_state(path)


def _read_state(path: Path) -> dict:
    state, problem = _parsed_state(path / "state.json")
    if problem is not None:
        raise CheckpointError(f"{path / 'state.json'}: {problem}")
    return state


def _parsed_state(file: Path) -> tuple[dict | None, str | None]:
    """``(state, None)``, or ``(None, what is wrong)`` with a checkpoint's ``state.json``."""
    try:
        state = json.loads(read_text(file, "checkpoint state"))
    except TextFileError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"not readable JSON ({_first_line(err)})"
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and "stage" in state and isinstance(state.get("config"), dict)):
        return None, "not a UniFL checkpoint state (step, stage and config expected)"
    return state, None


def _manifest_problem(path: Path) -> str | None:
    try:
        manifest = json.loads(read_text(path / MANIFEST, "checkpoint manifest"))
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in manifest.items()}
    except (TextFileError, ValueError, TypeError, KeyError, AttributeError) as err:
        return f"{MANIFEST} is not readable ({_first_line(err)})"
    for name, (size, digest) in expected.items():
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
        if _sha256(file) != digest:
            return f"{name} changed since it was written"
    return None


def _structure_problem(path: Path) -> str | None:
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as err:  # safetensors checks its header against the file's size
            return f"{file.name} is unreadable ({_first_line(err)})"
    for file in sorted(path.glob("*.pt")):
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as err:
            return f"{file.name} is unreadable ({_first_line(err)})"
        if bad is not None:
            return f"{file.name} is damaged ({bad} fails its checksum)"
    return None


def _is_unifl_checkpoint(path: Path) -> bool:
    if _TEMPORARY_FOLDER.fullmatch(path.name):
        return path.is_dir()
    return path.is_dir() and _STEP_FOLDER.fullmatch(path.name) is not None and all(
        f.is_file() and f.suffix in (".safetensors", ".pt", ".json") for f in path.iterdir())


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
