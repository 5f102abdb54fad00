"""The UniFL sampler contract over ComfyUI's objects: its sigmas on a model's own sigma table, its sampler,
and a UniFL LoRA applied with the settings it asks for."""

from __future__ import annotations

import logging

from . import paths

log = logging.getLogger("unifl")


def contract_sigmas(model, steps: int, spacing: str):
    """SIGMAS of the UniFL schedule on ``model``'s own sigma table, ending in 0."""
    import torch

    from ..core.diffusion.schedule import sampling_timesteps

    table = model.get_model_object("model_sampling").sigmas
    timesteps = sampling_timesteps(len(table), steps, spacing)
    return torch.cat([table[timesteps.to(table.device)].float().cpu(), torch.zeros(1)])


def contract_sampler(name: str):
    import comfy.samplers

    from ..core.lora.kohya import SCHEDULERS

    return comfy.samplers.sampler_object(SCHEDULERS[name][1])


def check_lora_matches(path: str, meta: dict, lora: dict, model) -> str | None:
    """Refuse a LoRA none of whose modules matches a layer of ``model``'s UNet (ComfyUI would apply nothing and log
    one "lora key not loaded" line per key), naming the file and the model it was made for; a warning when only
    some match. Core's :func:`~unifl.core.lora.kohya.match_lora_modules` decides, as for every UniFL loader."""
    from ..core.lora.kohya import match_lora_modules, read_kohya_modules
    from ..core.lora.peft import LORA_LAYER_TYPES
    from .denoiser import ldm_to_diffusers_map

    unet = model.model.diffusion_model
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, LORA_LAYER_TYPES)}
    to_diffusers = ldm_to_diffusers_map(model.model.model_config.unet_config)
    match = match_lora_modules(path, meta, read_kohya_modules(path, lora), layers, to_diffusers.__getitem__, f"this MODEL's UNet ({type(model.model.model_config).__name__})")
    if not match.file_hosts:
        raise match.error()
    return str(match.error()) if match.unknown else None


def apply_unifl_lora(model, lora_name: str, strength: float, steps: int | None = None):
    """``model`` with the UniFL LoRA ``lora_name`` (from ``models/loras``) applied, and the sampler, sigmas,
    CFG and steps its sampler contract asks for, plus a one-line description.

    ``steps`` (``None``: the LoRA's default) is followed when the LoRA was trained for it, else the nearest
    count it was trained for is used and the description says so.
    """
    import comfy.sd
    import comfy.utils

    from ..core.lora.kohya import BASE_MODEL_VERSIONS, SamplerContract, check_finite, read_lora_metadata
    from .denoiser import architecture_of

    path = paths.lora_file(lora_name)
    meta = read_lora_metadata(path)
    contract = SamplerContract.from_metadata(meta)
    if contract is None:
        raise ValueError(f"{path} has no UniFL sampler contract (unifl.sampler.* metadata): it was not trained by UniFL. Load it with LoraLoader and pick steps/sigmas yourself, e.g. with 'UniFL Few-Step Sigmas'.")
    architecture = architecture_of(model)
    base = meta.get("ss_base_model_version")
    if base is not None and base != BASE_MODEL_VERSIONS[architecture]:
        raise ValueError(f"{path} is a LoRA for {base} but this MODEL is {architecture} ({BASE_MODEL_VERSIONS[architecture]}); pick a LoRA trained on this kind of model")
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    check_finite(path, lora)
    warnings = [w for w in (check_lora_matches(path, meta, lora, model),) if w]
    steps, steps_warning = contract.steps_for(steps)
    warnings += [f"{lora_name}: {steps_warning}"] if steps_warning else []
    for warning in warnings:
        log.warning("UniFL: %s", warning)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    settings = contract.comfyui_settings()
    trained = "" if len(contract.step_counts) <= 1 else f" (trained for {', '.join(map(str, contract.step_counts))})"
    info = (f"{lora_name}: stage {meta.get('unifl.stage', '?')}, {steps} steps{trained}, {contract.scheduler} "
            f"({contract.timestep_spacing} spacing), CFG {contract.cfg:g}. KSampler equivalent: sampler {settings['sampler_name']}, scheduler {settings['scheduler']}."
            + "".join(f" WARNING: {w}" for w in warnings))
    sigmas = contract_sigmas(patched, steps, contract.timestep_spacing)
    return patched, contract_sampler(contract.scheduler), sigmas, contract.cfg, steps, info
