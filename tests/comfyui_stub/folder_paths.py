"""Stand-in for ComfyUI's ``folder_paths``: model folders under a base directory set by the tests."""

from __future__ import annotations

import os

base_path = os.environ.get("UNIFL_STUB_COMFY_BASE", os.path.join(os.path.dirname(__file__), "_base"))
models_dir = os.path.join(base_path, "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def set_base(path: str) -> None:
    """Point every folder at ``path`` (tests call this with a tmp dir)."""
    global base_path, models_dir
    base_path, models_dir = path, os.path.join(path, "models")
    folder_names_and_paths.clear()
    for name in ("checkpoints", "loras", "vae"):
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], set(supported_pt_extensions))


set_base(base_path)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path not in paths:
            paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    paths, exts = folder_names_and_paths[folder_name]
    found = set()
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def get_output_directory() -> str:
    return os.path.join(base_path, "output")


def get_input_directory() -> str:
    return os.path.join(base_path, "input")


def get_temp_directory() -> str:
    return os.path.join(base_path, "temp")
