"""Node: train decoupled aspect reward models from preference pairs (core ``train_reward.train_aspect_models``)."""

from __future__ import annotations

from comfy_api.latest import io, ui

CATEGORY = "UniFL/training"


class UniFLTrainRewardModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLTrainRewardModel",
            display_name="Train UniFL Aspect Reward Models",
            category=CATEGORY,
            description=(
                "Trains one reward model per aspect (Bradley–Terry on preference pairs), derives each hinge threshold α from "
                "held-out pairs, and saves <aspect>.safetensors into models/unifl/rewards/<output_folder> for 'Load UniFL Reward "
                "Model' (press Refresh). Pairs: a JSONL file, one {prompt, image_a, image_b, preferred, aspect} per line, image "
                "paths relative to the file (docs/preference-pairs.md)."
            ),
            inputs=[
                io.String.Input("pairs", default="unifl_pairs", tooltip="A pair folder holding pairs.jsonl, or a .jsonl file; inside ComfyUI's input directory (an absolute path must lie inside ComfyUI's folders)."),
                io.String.Input("backbone", default="pocket", tooltip="'pocket' (small CNN for 64 px images) or 'clip:FOLDER' (a local Hugging Face CLIP model; frozen, a head is trained)."),
                io.String.Input("output_folder", default="my_rewards", tooltip="Sub-folder of models/unifl/rewards for the trained models."),
                io.Int.Input("steps", default=500, min=1, max=1000000, tooltip="Optimizer steps per aspect model."),
                io.Float.Input("learning_rate", default=2e-3, min=0.0, max=1.0, step=1e-5, round=1e-6, tooltip="AdamW learning rate."),
                io.Int.Input("batch_size", default=32, min=1, max=4096, tooltip="Pairs per step."),
                io.Float.Input("val_fraction", default=0.1, min=0.01, max=0.9, step=0.01, tooltip="Share of each aspect's pairs held out for accuracy and α."),
                io.Boolean.Input("global_model", default=False, tooltip="Also train one global model on every aspect's pairs (the paper's ablation)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False, tooltip="Seed of the split and the training order."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace existing model files of the same aspects."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="Per aspect: pairs, held-out accuracy, α and file.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, pairs=None) -> bool | str:
        """When the prompt is queued: a missing pair file is named together with every other node's missing file."""
        from ..train_jobs import pair_file

        if pairs is None:  # linked: checked when the node runs
            return True
        try:
            pair_file(pairs)
        except (ValueError, FileNotFoundError) as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, pairs, backbone, output_folder, steps, learning_rate, batch_size, val_fraction, global_model, seed, overwrite) -> io.NodeOutput:
        from ..train_jobs import train_reward_models

        report = train_reward_models(pairs, backbone, output_folder, steps, learning_rate, batch_size, val_fraction, global_model, seed, overwrite)
        return io.NodeOutput(report, ui=ui.PreviewText(report))


NODES = [UniFLTrainRewardModel]
