"""Nodes: the UniFL sampler contract for SamplerCustom / SamplerCustomAdvanced, and the LoRA loader that applies it.

The contract (core ``SamplerContract``, stored in every UniFL LoRA) is deterministic DDIM over the
training timesteps ``unifl.core.schedule.sampling_timesteps(T, steps, spacing)``, without CFG for a
stage-2 LoRA. ComfyUI's ``ddim`` sampler is Euler in sigma space, which is exactly that DDIM step for
these discrete models; the SIGMAS node picks the model's own sigmas at exactly those timesteps (so a
4-step trailing schedule is ``σ(999), σ(749), σ(499), σ(249), 0``).
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from . import paths

CATEGORY = "UniFL/sampling"
SPACINGS = ["trailing", "leading", "linspace"]
SAMPLERS = ["ddim", "euler"]


def contract_sigmas(model, steps: int, spacing: str):
    """SIGMAS of the UniFL schedule on ``model``'s own sigma table, ending in 0."""
    import torch

    from ..core.schedule import sampling_timesteps

    table = model.get_model_object("model_sampling").sigmas
    timesteps = sampling_timesteps(len(table), steps, spacing)
    return torch.cat([table[timesteps.to(table.device)].float().cpu(), torch.zeros(1)])


def contract_sampler(name: str):
    import comfy.samplers

    from ..core.export import SCHEDULERS

    return comfy.samplers.sampler_object(SCHEDULERS[name][1])


class UniFLFewStepSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLFewStepSampler",
            display_name="UniFL Few-Step Sampler",
            category=CATEGORY,
            description="The sampler of the UniFL contract for SamplerCustom/SamplerCustomAdvanced: deterministic DDIM (ComfyUI's ddim = Euler in sigma space, the same update). Pair it with 'UniFL Few-Step Sigmas'.",
            inputs=[io.Combo.Input("sampler", options=SAMPLERS, default="ddim", tooltip="ddim (the contract's default) or euler; both are the deterministic DDIM update for SD1.x/SDXL.")],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, sampler) -> io.NodeOutput:
        return io.NodeOutput(contract_sampler(sampler))


class UniFLFewStepSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLFewStepSigmas",
            display_name="UniFL Few-Step Sigmas",
            category=CATEGORY,
            description="The timesteps UniFL trains for, as SIGMAS for SamplerCustom: 4 trailing steps = timesteps 999, 749, 499, 249 (what a stage-2 UniFL LoRA expects).",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("steps", default=4, min=1, max=1000, tooltip="Sampling steps (a stage-2 UniFL LoRA is trained for 4)."),
                io.Combo.Input("spacing", options=SPACINGS, default="trailing", tooltip="trailing: start at the last timestep (few-step models); leading: SD's default DDIM spacing; linspace: evenly from 0 to T−1."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps, spacing) -> io.NodeOutput:
        return io.NodeOutput(contract_sigmas(model, steps, spacing))


class UniFLLoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLLoadLoRA",
            display_name="Load UniFL LoRA (with sampler settings)",
            category=CATEGORY,
            description="Applies a UniFL LoRA to the MODEL and outputs the sampler, sigmas, CFG and steps stored in the file (its sampler contract), ready for SamplerCustom. The LoRA itself loads exactly as in LoraLoaderModelOnly.",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=paths.lora_choices(), tooltip="A LoRA trained by UniFL (its metadata holds the sampler contract)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip="LoRA strength on the UNet."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL"),
                io.Sampler.Output(display_name="SAMPLER"),
                io.Sigmas.Output(display_name="SIGMAS"),
                io.Float.Output(display_name="cfg", tooltip="Connect to SamplerCustom's cfg: 1.0 means no CFG (one UNet call per step)."),
                io.Int.Output(display_name="steps"),
                io.String.Output(display_name="info"),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name, strength) -> io.NodeOutput:
        import comfy.sd
        import comfy.utils

        from ..core.export import BASE_MODEL_VERSIONS, SamplerContract, read_lora_metadata
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
        patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0)
        settings = contract.comfyui_settings()
        info = (f"{lora_name}: stage {meta.get('unifl.stage', '?')}, {contract.steps} steps, {contract.scheduler} "
                f"({contract.timestep_spacing} spacing), CFG {contract.cfg:g}. KSampler equivalent: sampler {settings['sampler_name']}, scheduler {settings['scheduler']}.")
        sigmas = contract_sigmas(patched, contract.steps, contract.timestep_spacing)
        return io.NodeOutput(patched, contract_sampler(contract.scheduler), sigmas, contract.cfg, contract.steps, info, ui=ui.PreviewText(info))


NODES = [UniFLFewStepSampler, UniFLFewStepSigmas, UniFLLoadLoRA]
