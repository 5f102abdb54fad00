"""Nodes: load reward / perception models, score images per aspect."""

from __future__ import annotations

from comfy_api.latest import io, ui

from .. import paths

CATEGORY = "UniFL"
SCORE_SLOTS = 4


class UniFLLoadRewardModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLLoadRewardModel",
            display_name="Load UniFL Reward Model",
            category=CATEGORY,
            description="An aspect reward model (colour, layout, detail, lighting, …) for scoring images and for UniFL's decoupled aesthetic feedback. Files live in models/unifl/rewards; builtin/* need no file.",
            inputs=[
                io.Combo.Input("model_name", options=paths.reward_choices(), tooltip="builtin/* are weight-free image statistics, not learned aesthetics; pocket/* the pocket world's models (64 px); other entries are in models/unifl/rewards: files, and model folders shown as name/ (PickScore_v1/, ImageReward/, laion-aesthetic/ as docs/recipes.md lays them out)."),
                io.String.Input("aspect", default="auto", tooltip="The aspect this model judges (color, layout, detail, lighting or any name). 'auto' reads it from the file (unifl.aspect) or the built-in's default."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="Weight w_d of this aspect's hinge loss in training."),
                io.Boolean.Input("use_model_threshold", default=True, tooltip="Use the model's own hinge threshold α_d (unifl.alpha, derived from held-out preference pairs), or for a published model of docs/recipes.md the recipe's α. Off: use 'threshold'."),
                io.Float.Input("threshold", default=0.0, min=-1e4, max=1e4, step=0.001, tooltip="α_d of the hinge ReLU(α_d − r_d), used when use_model_threshold is off."),
                io.String.Input("kind", default="auto", tooltip="Registry kind that loads the model (laion-aesthetic, pickscore, hpsv2, imagereward, pocket-reward, …). 'auto' reads unifl.kind from the file, or knows a published model by its name (docs/recipes.md)."),
            ],
            outputs=[io.Custom("UNIFL_REWARD_MODEL").Output(display_name="reward_model")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None) -> bool | str:
        """When the prompt is queued: a missing file is named together with every other node's, before anything loads
        (``None``: a linked input, checked when the node runs)."""
        return model_name is None or paths.missing_model("reward", model_name) or True

    @classmethod
    def execute(cls, model_name, aspect, weight, use_model_threshold, threshold, kind) -> io.NodeOutput:
        from .. import feedback_models as feedback

        model = feedback.load("reward", model_name, kind, aspect, weight, None if use_model_threshold else threshold)
        return io.NodeOutput(model, ui=ui.PreviewText(feedback.describe(model)))


class UniFLLoadPerceptionModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UniFLLoadPerceptionModel",
            display_name="Load UniFL Perception Model",
            category=CATEGORY,
            description="A frozen perception model for perceptual feedback (PeFL, stage 1): style (Gram features), structure (instance segmentation) or layout (semantic segmentation). Files live in models/unifl/perception.",
            inputs=[
                io.Combo.Input("model_name", options=paths.perception_choices(), tooltip="builtin/random-features is a weight-free style network; pocket/* the pocket world's models; other entries are files (and model folders, name/) in models/unifl/perception."),
                io.Combo.Input("aspect", options=["auto", "style", "structure", "layout"], tooltip="Which PeFL loss this model gives. structure needs instance masks and layout semantic masks next to the training images."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.01, tooltip="Weight of this model's PeFL loss."),
                io.String.Input("kind", default="auto", tooltip="Registry kind that loads the file; 'auto' reads it from the file's metadata, or knows a published model by its name (vgg16, Mask R-CNN, DeepLabV3 of docs/recipes.md)."),
            ],
            outputs=[io.Custom("UNIFL_PERCEPTION_MODEL").Output(display_name="perception_model")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None) -> bool | str:
        """When the prompt is queued: a missing file is named together with every other node's, before anything loads
        (``None``: a linked input, checked when the node runs)."""
        return model_name is None or paths.missing_model("perception", model_name) or True

    @classmethod
    def execute(cls, model_name, aspect, weight, kind) -> io.NodeOutput:
        from .. import feedback_models as feedback

        model = feedback.load("perception", model_name, kind, aspect, weight)
        return io.NodeOutput(model, ui=ui.PreviewText(feedback.describe(model)))


class UniFLScoreImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        rewards = [io.Custom("UNIFL_REWARD_MODEL").Input("reward_1", tooltip="A reward model from 'Load UniFL Reward Model'.")]
        rewards += [io.Custom("UNIFL_REWARD_MODEL").Input(f"reward_{i}", optional=True, tooltip="Another reward model (optional).") for i in range(2, SCORE_SLOTS + 1)]
        return io.Schema(
            node_id="UniFLScoreImages",
            display_name="UniFL Score Images",
            category=CATEGORY,
            description="Scores images with up to four aspect reward models: the mean score of each (FLOAT outputs, in slot order) and a per-image table (also shown on the node).",
            inputs=[
                io.Image.Input("images"),
                io.String.Input("prompt", multiline=True, default="", tooltip="One prompt for every image, or one line per image. Image-only scorers ignore it."),
                *rewards,
            ],
            outputs=[
                *[io.Float.Output(f"score_{i}", display_name=f"score_{i}", tooltip=f"Mean score of reward_{i} over the batch (0.0 when the slot is empty).") for i in range(1, SCORE_SLOTS + 1)],
                io.String.Output("table", display_name="table", tooltip="Per-image scores as a Markdown table."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, prompt, reward_1, reward_2=None, reward_3=None, reward_4=None) -> io.NodeOutput:
        from ..scoring import score_images

        slots = [reward_1, reward_2, reward_3, reward_4]
        means, table = score_images(images, prompt, slots)
        return io.NodeOutput(*means, table, ui=ui.PreviewText(table))


NODES = [UniFLLoadRewardModel, UniFLLoadPerceptionModel, UniFLScoreImages]
