"""The UniFL sampler contract over ComfyUI's objects: its sigmas on a model's own sigma table, its sampler,
and a UniFL LoRA applied with the settings it asks for."""

from __future__ import annotations

from . import paths


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


def apply_unifl_lora(model, lora_name: str, strength: float):
    """``model`` with the UniFL LoRA ``lora_name`` (from ``models/loras``) applied, and the sampler, sigmas,
    CFG and steps its sampler contract asks for, plus a one-line description."""
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
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
    settings = contract.comfyui_settings()
    info = (f"{lora_name}: stage {meta.get('unifl.stage', '?')}, {contract.steps} steps, {contract.scheduler} "
            f"({contract.timestep_spacing} spacing), CFG {contract.cfg:g}. KSampler equivalent: sampler {settings['sampler_name']}, scheduler {settings['scheduler']}.")
    sigmas = contract_sigmas(patched, contract.steps, contract.timestep_spacing)
    return patched, contract_sampler(contract.scheduler), sigmas, contract.cfg, contract.steps, info
