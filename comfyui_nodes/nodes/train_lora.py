"""Node: train a UniFL LoRA (stage 1 or 2) on the MODEL/CLIP/VAE already loaded in the graph."""

from __future__ import annotations

from comfy_api.latest import io

from .. import paths
from ..graph import checkpoint_name

CATEGORY = "UniFL/training"
REWARD_SLOTS = 4
PERCEPTION_SLOTS = 3
NONE = "(none)"


class UniFLTrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        rewards = [io.Custom("UNIFL_REWARD_MODEL").Input(f"reward_{i}", optional=True, tooltip="An aspect reward model (decoupled aesthetic feedback; stage 2's discriminator starts from the 'detail' one).") for i in range(1, REWARD_SLOTS + 1)]
        perception = [io.Custom("UNIFL_PERCEPTION_MODEL").Input(f"perception_{i}", optional=True, tooltip="A perception model for PeFL (stage 1).") for i in range(1, PERCEPTION_SLOTS + 1)]
        return io.Schema(
            node_id="UniFLTrainLoRA",
            display_name="Train UniFL LoRA",
            category=CATEGORY,
            description=(
                "Trains one UniFL stage as a LoRA on this MODEL (with CLIP and VAE) and saves it, kohya-format with its sampler "
                "settings, into models/loras so LoraLoader lists it (press Refresh). Stage 1 (quality): perceptual + aesthetic "
                "feedback; stage 2 (4-step): adversarial + aesthetic feedback, usually continuing the stage-1 LoRA (init_lora). "
                "Progress, previews and Cancel work as for sampling; the run folder (checkpoints, logs.csv, samples) is in output/unifl_runs."
            ),
            inputs=[
                io.Model.Input("model"),
                io.Clip.Input("clip"),
                io.Vae.Input("vae"),
                io.Combo.Input("stage", options=["1", "2"], default="1", tooltip="1: quality (PeFL + decoupled aesthetic). 2: few-step acceleration (adversarial + aesthetic)."),
                io.String.Input("lora_name", default="unifl/unifl_stage1", tooltip="File name under models/loras (sub-folders allowed), without .safetensors."),
                io.String.Input("prompts", multiline=True, default="", tooltip="Prompts for aesthetic rollouts, one per line. Empty: the captions of the images."),
                io.String.Input("image_folder", default="", tooltip="Real images for PeFL, stage 2 and the denoising regulariser: a folder of your images with a .txt caption each (+ .instances.png/.json, .semantic.png masks for PeFL structure/layout), inside ComfyUI's input directory (an absolute path must lie inside ComfyUI's folders). 'pocket': the embedded pocket world's shape images with exact masks, to try the node on the pocket model (a LoRA of your checkpoint trained on them learns to draw shapes). Empty: none, for aesthetic feedback alone with regularizer.denoising_weight=0 in extra_settings (the check before training names what needs images)."),
                io.Int.Input("steps", default=500, min=1, max=1000000, tooltip="Optimizer steps."),
                io.Float.Input("learning_rate", default=5e-5, min=0.0, max=1.0, step=1e-6, round=1e-7, tooltip="AdamW learning rate of the LoRA."),
                io.Int.Input("rank", default=16, min=1, max=512, tooltip="LoRA rank."),
                io.Float.Input("alpha", default=16.0, min=0.01, max=1024.0, step=0.01, tooltip="LoRA alpha (scale alpha/rank); stored as the true alpha in the file."),
                io.Combo.Input("lora_targets", options=["attention", "attention+ff", "all"], default="attention", tooltip="UNet layers that get the LoRA."),
                io.Int.Input("resolution", default=512, min=32, max=4096, step=8, tooltip="Training resolution in pixels (square). 1024 for SDXL."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="Samples per step and feedback term."),
                io.Int.Input("gradient_accumulation", default=1, min=1, max=1024, tooltip="Micro-batches per optimizer step."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False, tooltip="Seed of all noise and data order; the same seed repeats the run."),
                io.Combo.Input("mixed_precision", options=["no", "bf16", "fp16"], default="no", tooltip="Autocast for the forward passes; LoRA weights stay fp32."),
                io.Boolean.Input("gradient_checkpointing", default=True, tooltip="Recompute UNet and VAE-decoder activations in backward: much less memory, ~30% slower."),
                io.Combo.Input("init_lora", options=[NONE, *paths.lora_choices()], default=NONE, tooltip="Continue from a UniFL LoRA (stage 2 starts from the stage-1 LoRA); its rank, alpha and targets are used."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing LoRA of the same name. Off: an existing name stops the node before training starts."),
                io.String.Input("extra_settings", multiline=True, default="", tooltip="More settings, one KEY=VALUE per line, any field of `unifl train --explain` (e.g. pefl.inference_steps=20, regularizer.denoising_weight=0.5, logging.validate_every=100)."),
                *rewards,
                *perception,
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The input MODEL with the trained LoRA applied (as LoraLoader would)."),
                io.String.Output(display_name="lora_name", tooltip="The LoRA's name in LoraLoader's list."),
                io.Image.Output(display_name="loss_curve"),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # the checkpoint's file name, for the LoRA's ss_sd_model_name
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, image_folder="", init_lora=NONE) -> bool | str:
        """When the prompt is queued: a missing image folder or init_lora is named together with every other node's
        missing file, before the checkpoint loads. ComfyUI repeats the one message under each of these inputs."""
        from ..train_jobs import missing_inputs

        return missing_inputs(image_folder, None if init_lora == NONE else init_lora) or True

    @classmethod
    def execute(cls, model, clip, vae, stage, lora_name, prompts, image_folder, steps, learning_rate, rank, alpha, lora_targets,
                resolution, batch_size, gradient_accumulation, seed, mixed_precision, gradient_checkpointing, init_lora, overwrite,
                extra_settings, **models) -> io.NodeOutput:
        from ..train_jobs import TrainRequest, train_lora

        request = TrainRequest(
            stage=stage, lora_name=lora_name, prompts=prompts, image_folder=image_folder, steps=steps, learning_rate=learning_rate,
            rank=rank, alpha=alpha, lora_targets=lora_targets, resolution=resolution, batch_size=batch_size,
            gradient_accumulation=gradient_accumulation, seed=seed, mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing, init_lora=None if init_lora == NONE else init_lora, overwrite=overwrite,
            extra_settings=extra_settings,
            rewards=[models[f"reward_{i}"] for i in range(1, REWARD_SLOTS + 1) if models.get(f"reward_{i}") is not None],
            perception=[models[f"perception_{i}"] for i in range(1, PERCEPTION_SLOTS + 1) if models.get(f"perception_{i}") is not None],
            base_model=checkpoint_name(cls.hidden.prompt, cls.hidden.unique_id) if cls.hidden is not None else "",
        )
        patched, name, curve = train_lora(model, clip, vae, request)
        return io.NodeOutput(patched, name, curve)


NODES = [UniFLTrainLoRA]
