"""Reading local weight files for the reward and perception loaders, with errors a user can act on.

The scorers people use come as files in their original projects' layouts (an ``improved-aesthetic-
predictor`` ``.pth``, an OpenCLIP checkpoint, a torchvision state dict). Each loader maps those keys
onto a module it defines; this module holds what they share: reading a file (safetensors, or a pickle
read with ``torch.load(weights_only=True)`` so nothing but tensors is ever unpickled), loading a
mapped state dict strictly, and the ``part=path;part=path`` form of a loader's ``path`` for models
made of several files.

Every problem a file can have surfaces as one :class:`WeightFileError` whose message names the file,
what was expected and the fix, instead of a stack trace from deep inside ``load_state_dict``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: Buffers a module may have that a file need not hold (see :func:`load_exactly`).
_OPTIONAL_BUFFERS = ("num_batches_tracked", "embeddings.position_ids")
_SHOWN_KEYS = 4


class WeightFileError(ValueError):
    """A weights file or folder that does not match what its loader expects (file, expectation and fix named)."""


def existing_path(path: str | Path, expected: str) -> Path:
    """``path`` as a ``Path`` if it exists; otherwise an error saying what should have been there."""
    resolved = Path(path).expanduser()
    if not str(path) or not resolved.exists():
        raise WeightFileError(f"{path or '(empty path)'}: no such file or folder; expected {expected}.")
    return resolved


def read_weights(path: str | Path, expected: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a weights file by key, and its safetensors string metadata (``{}`` for pickles).

    A pickle holding ``{"state_dict": {...}, "epoch": ...}`` (Lightning, OpenCLIP and HPSv2 checkpoints)
    is unwrapped to its ``state_dict``; other non-tensor entries are dropped.
    """
    path = existing_path(path, expected)
    if path.is_dir() or path.suffix not in WEIGHT_SUFFIXES:
        raise WeightFileError(f"{path}: expected {expected} as a {'/'.join(WEIGHT_SUFFIXES)} file.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return read_pickled_tensors(path, expected), {}


def read_state_dict(path: str | Path, expected: str) -> dict[str, torch.Tensor]:
    return read_weights(path, expected)[0]


def read_hf_folder_weights(folder: Path, expected: str) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face model folder: ``model.safetensors``, ``pytorch_model.bin`` or their shards."""
    import json

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            try:
                shards = sorted(set(json.loads((folder / index_name).read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError) as err:
                raise WeightFileError(f"{folder / index_name}: is not a readable shard index ({_first_line(err)}). Copy the folder again.") from None
            return {key: value for shard in shards for key, value in read_state_dict(folder / shard, expected).items()}
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return read_state_dict(folder / name, expected)
    raise WeightFileError(f"{folder}: has no model.safetensors or pytorch_model.bin (nor a shard index); expected {expected}.")


def shape_of(state: Mapping[str, torch.Tensor], key: str, path: str | Path, expected: str) -> tuple[int, ...]:
    """The shape of ``state[key]``, for reading an architecture off a file; a missing key names the file."""
    if key not in state:
        raise WeightFileError(f"{path}: has no {key}; expected {expected}.")
    return tuple(state[key].shape)


def count_indexed(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many numbered submodules (``prefix0.…``, ``prefix1.…``) the keys hold: a model's layer count."""
    return len({key[len(prefix):].split(".", 1)[0] for key in state if key.startswith(prefix)})


def with_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def load_exactly(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, expected: str) -> None:
    """Load ``state`` into ``module``: every key must be present with its shape, and no key left over.

    ``num_batches_tracked`` counters may be absent (older torchvision files lack them); they only matter
    for training batch norm, which a frozen judge never does. So may ``embeddings.position_ids``: a
    constant ``arange`` the constructor fills, which transformers < 4.31 (A1111 1.10 pins 4.30.2) keeps
    in the state dict and newer versions do not, so files from either side load on both.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(_OPTIONAL_BUFFERS)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{label}: {_few(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise WeightFileError(f"{path}: does not hold {expected} ({'; '.join(problems)}). Pass the file that model was released as.")
    module.load_state_dict(dict(state), strict=False)


def parse_parts(path: str, parts: Iterable[str]) -> dict[str, str] | None:
    """``"clip=/models/clip;head=/models/head.pth"`` → ``{"clip": ..., "head": ...}``; ``None`` for a plain path.

    The form is recognised by its first item naming one of ``parts``, so an ordinary path (even one
    containing ``=``) is left alone.
    """
    parts = tuple(parts)
    items = [item.strip() for item in path.split(";") if item.strip()]
    if not items or items[0].partition("=")[0].strip() not in parts or "=" not in items[0]:
        return None
    spec: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or name not in parts or name in spec:
            raise WeightFileError(f"{path!r}: expected 'part=path' items separated by ';' with parts from {', '.join(parts)}, each once; {item!r} is not one.")
        spec[name] = value.strip()
    return spec


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
        raise WeightFileError(f"{path}: is not a readable safetensors file ({_first_line(err)}); it is probably truncated. Copy it again.") from None


def read_pickled_tensors(path: Path, expected: str, *, error: type[Exception] = WeightFileError,
                         resave: str = "Load it where you trust it, save its state_dict() with safetensors, and pass that file.") -> dict[str, torch.Tensor]:
    """The named tensors of a PyTorch pickle (``.pt``/``.bin``/``.ckpt``), read with ``weights_only=True``.

    Nested ``state_dict`` wrappers (Lightning, old SD checkpoints) are unwrapped. Every failure raises ``error``
    with a message naming the file and what to do: ``resave`` for a pickle holding Python objects.
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        # weights_only refuses globals ("Unsupported global …"), and the framing opcode of protocol-4/5 pickles
        # written by plain `pickle` (torch.save writes protocol 2): Python objects either way, not a damaged file.
        if "global" in str(err).lower() or _written_by_pickle(path):
            raise error(f"{path}: holds Python objects besides tensors (or was written by pickle, not torch.save), which UniFL will not "
                        f"unpickle (that can run arbitrary code). {resave}") from None
        raise error(f"{path}: is not a readable PyTorch file; it is probably truncated or corrupt. Copy it again.") from None
    except Exception as err:  # a damaged pickle raises anything from the unpickler: RuntimeError, EOFError, IndexError, struct.error …
        raise error(f"{path}: is not a readable PyTorch file ({_first_line(err)}); it is probably truncated or corrupt. Copy it again.") from None
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise error(f"{path}: holds no tensors by name (a {type(state).__name__}); expected {expected}.")
    return tensors


def _written_by_pickle(path: Path) -> bool:
    """Whether ``path`` starts as a protocol 4 or 5 pickle does (``PROTO`` opcode 0x80, then 4 or 5)."""
    with open(path, "rb") as fh:
        return fh.read(2) in (b"\x80\x04", b"\x80\x05")


def _few(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
