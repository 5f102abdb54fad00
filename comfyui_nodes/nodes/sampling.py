"""Nodes: the UniFL sampler contract for SamplerCustom / SamplerCustomAdvanced, and the LoRA loader that applies it.

The contract (core ``SamplerContract``, stored in every UniFL LoRA) is deterministic DDIM over the
training timesteps ``unifl.core.diffusion.schedule.sampling_timesteps(T, steps, spacing)``, without CFG for a
stage-2 LoRA. ComfyUI's ``ddim`` sampler is Euler in sigma space, which is exactly that DDIM step for
these discrete models; the SIGMAS node picks the model's own sigmas at exactly those timesteps (so a
4-step trailing schedule is ``σ(999), σ(749), σ(499), σ(249), 0``).
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from .. import paths, sampling

CATEGORY = "UniFL/sampling"
SPACINGS = ["trailing", "leading", "linspace"]
SAMPLERS = ["ddim", "euler"]


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
        return io.NodeOutput(sampling.contract_sampler(sampler))


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
        return io.NodeOutput(sampling.contract_sigmas(model, steps, spacing))


class UniFLLoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLLoadLoRA",
            display_name="Load UniFL LoRA (with sampler settings)",
            category=CATEGORY,
            description="Applies a UniFL LoRA to the MODEL and outputs the sampler, sigmas, CFG and steps stored in the file (its sampler contract), ready for SamplerCustom. The LoRA itself loads exactly as in LoraLoaderModelOnly; a LoRA made for another model (none of its layers in this MODEL) is refused.",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=paths.lora_choices(), tooltip="A LoRA trained by UniFL (its metadata holds the sampler contract)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip="LoRA strength on the UNet."),
                io.Int.Input("steps", default=0, min=0, max=1000, optional=True, tooltip="Sampling steps. 0: the LoRA's own count. A count the LoRA was not trained for is replaced by the nearest one it was (the info output says so)."),
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
    def validate_inputs(cls, lora_name=None) -> bool | str:
        """When the prompt is queued: a missing LoRA is named together with every other node's missing file."""
        return lora_name is None or paths.missing_lora(lora_name) or True

    @classmethod
    def execute(cls, model, lora_name, strength, steps=0) -> io.NodeOutput:
        from ..sampling import apply_unifl_lora

        patched, sampler, sigmas, cfg, steps, info = apply_unifl_lora(model, lora_name, strength, steps or None)
        return io.NodeOutput(patched, sampler, sigmas, cfg, steps, info, ui=ui.PreviewText(info))

NODES = [UniFLFewStepSampler, UniFLFewStepSigmas, UniFLLoadLoRA]
