"""Stand-in for ``comfy.sd``: ``load_lora_for_models`` with ComfyUI's kohya key rules for the UNet.

Keys map as ComfyUI maps them: ``lora_unet_<diffusers path with _>`` through ``unet_to_diffusers`` and
``lora_unet_<host path with _>``. Every unmatched key is logged as ``lora key not loaded: …`` and
recorded in :data:`NOT_LOADED` (the message tests read in the real ComfyUI log).
"""

from __future__ import annotations

import logging

import comfy.utils

NOT_LOADED: list[str] = []


def _key_map(model) -> dict[str, str]:
    key_map = {}
    for key in model.model.state_dict():
        if key.startswith("diffusion_model.") and key.endswith(".weight"):
            key_map["lora_unet_" + key[len("diffusion_model."):-len(".weight")].replace(".", "_")] = key
    for diffusers_key, host_key in comfy.utils.unet_to_diffusers(model.model.model_config.unet_config).items():
        if diffusers_key.endswith(".weight"):
            key_map["lora_unet_" + diffusers_key[:-len(".weight")].replace(".", "_")] = "diffusion_model." + host_key
    return key_map


def load_lora_for_models(model, clip, lora: dict, strength_model: float, strength_clip: float):
    loaded, used = {}, set()
    for name, target in _key_map(model).items():
        up, down = f"{name}.lora_up.weight", f"{name}.lora_down.weight"
        if up in lora and down in lora:
            alpha = f"{name}.alpha"
            loaded[target] = ("lora", (lora[up], lora[down], lora[alpha].item() if alpha in lora else None))
            used.update({up, down, alpha})
    for key in lora:
        if key not in used:
            logging.warning("lora key not loaded: %s", key)
            NOT_LOADED.append(key)
    patched = model.clone()
    patched.add_patches(loaded, strength_model)
    return patched, None
