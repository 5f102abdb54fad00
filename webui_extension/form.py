"""The tab's form as data, and its translation to and from a core :class:`TrainConfig`.

Kept free of gradio so the translation is tested on its own. The form always shows the effective
values of the chosen preset (a change of checkpoint or preset refills it); pressing Train turns every
field into a ``key=value`` override of that preset, the same strings ``unifl train --set`` takes, and
``load_config`` validates the result. Labels' tooltips are the config's own help texts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.config import PRESETS, TrainConfig, explain, load_config, stage_fields
from ..core.lora.kohya import LoRAFileError, read_lora_metadata
from ..core.feedback.public_models import RECIPE_PERCEPTION, STATISTIC_KINDS, default_feedback, public_models
from ..core.lora.peft import TARGET_PRESETS
from ..pocket.plugin import register as register_pocket_world

# The tab offers the pocket model, its images, kinds and presets beside the user's own.
register_pocket_world()

AUTO_PRESET = "auto"
OFF = "off"
NO_LORA = "(fresh LoRA)"
#: The paper's four decoupled aesthetic aspects and three perception tasks, one dropdown each.
REWARD_ASPECTS = ("color", "layout", "detail", "lighting")
PERCEPTION_ASPECTS = ("style", "structure", "layout")
#: Subfolders of the UniFL folder searched for model files whose metadata names their loader.
MODEL_FOLDERS = {"rewards": "rewards", "perception": "perception"}
_OUTPUT_NAME = re.compile(r"^[\w][\w.\- ]*$")


@dataclass(frozen=True)
class Field:
    """One form field editing one config key. ``widget``: text, lines, int, float, bool, radio or choice."""

    key: str
    label: str
    widget: str
    choices: tuple[str, ...] = ()


STAGE = Field("stage", "Stage", "radio", ("1", "2"))
OUTPUT_NAME = Field("logging.output_name", "LoRA name", "text")
DATA_FIELDS = (
    Field("data.images", "Training images", "text"),
    Field("data.prompts", "Prompt file", "text"),
    Field("data.resolution", "Resolution", "int"),
)
TRAINING_FIELDS = (
    Field("optim.max_steps", "Steps", "int"),
    Field("optim.learning_rate", "Learning rate", "float"),
    Field("lora.rank", "LoRA rank", "int"),
    Field("lora.alpha", "LoRA alpha", "float"),
    Field("logging.validate_every", "Preview every N steps", "int"),
    Field("optim.seed", "Seed", "int"),
)
WEIGHT_FIELDS = (
    Field("pefl.weight", "Perceptual (PeFL) weight, stage 1", "float"),
    Field("aesthetic.weight", "Aesthetic weight", "float"),
    Field("adversarial.weight", "Adversarial weight, stage 2", "float"),
    Field("regularizer.denoising_weight", "Denoising regulariser weight", "float"),
)
ADVANCED_FIELDS = (  # shown as two rows of four
    Field("optim.batch_size", "Batch size", "int"),
    Field("optim.gradient_accumulation_steps", "Gradient accumulation steps", "int"),
    Field("optim.mixed_precision", "Mixed precision", "choice", ("no", "fp16", "bf16")),
    Field("model.dtype", "Model dtype", "choice", ("fp32", "fp16", "bf16")),
    Field("lora.targets", "LoRA targets", "choice", tuple(TARGET_PRESETS)),
    Field("logging.checkpoint_every", "Checkpoint every N steps", "int"),
    Field("optim.gradient_checkpointing", "Gradient checkpointing", "bool"),
    Field("logging.validation_prompts", "Preview prompts (one per line)", "lines"),
)
FIELDS = (STAGE, OUTPUT_NAME, *DATA_FIELDS, *TRAINING_FIELDS, *WEIGHT_FIELDS, *ADVANCED_FIELDS)
#: Config key → the field's label, for naming fields in the pre-run check's messages.
FIELD_LABELS = {f.key: f.label for f in FIELDS} | {"lora.init_from": "Start from LoRA"}
#: Fields that name a path the tab reads (confined to the webui's folders).
READ_FIELDS = ("data.images", "data.prompts")


class FormError(ValueError):
    """A form value that cannot become a config; the message names the field and the fix."""


def help_texts() -> dict[str, str]:
    """Config key → its documentation (the tooltip under each field)."""
    return {key: text for key, _default, text in explain()}


def preset_names() -> list[str]:
    return [AUTO_PRESET, *PRESETS]


def resolve_preset(preset: str, model_path: str) -> str:
    """``auto`` → the preset of the model's family; any other name is taken as it is."""
    if preset != AUTO_PRESET:
        return preset
    if model_path == "pocket":
        return "pocket"
    from ..core.diffusion.loading import detect_architecture

    return "sdxl" if detect_architecture(model_path) in ("sdxl", "StableDiffusionXLPipeline") else "sd15"


# -- feedback-model choices -------------------------------------------------------------------------


def _label(spec: dict) -> str:
    label = spec["kind"] + (f": {spec['path']}" if spec.get("path") else "")
    label += " · image statistic" if spec["kind"] in STATISTIC_KINDS else ""  # not a learned judgement: say so
    return label + (f" (α {spec['threshold']:g})" if spec.get("threshold") is not None else "")


def model_catalog(section: str, unifl_dir: Path) -> dict[str, dict]:
    """Label → ``[[rewards]]``/``[[perception]]`` table (without the aspect) for ``section``.

    The choices are what the presets use (weight-free and shipped models), the public models of the recipe
    found in the UniFL folder (:mod:`~unifl.core.feedback.public_models`: the four rewards, and the style,
    structure and layout perception models of docs/recipes.md), plus the ``.safetensors``
    files in ``<unifl_dir>/rewards`` or ``/perception`` whose ``unifl.kind`` metadata names their loader
    (what ``unifl train-reward`` writes).
    """
    catalog: dict[str, dict] = {}
    for preset in [*PRESETS.values(), default_feedback(unifl_dir), public_models(unifl_dir, RECIPE_PERCEPTION)]:
        for entry in preset.get(section, []):
            spec = {k: v for k, v in entry.items() if k != "aspect"}
            catalog.setdefault(_label(spec), spec)
    folder = Path(unifl_dir) / MODEL_FOLDERS[section]
    for path in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else ():
        try:
            kind = read_lora_metadata(path).get("unifl.kind")
        except LoRAFileError:  # a half-copied file: not offered, rather than breaking every list
            continue
        if kind:
            catalog.setdefault(f"{kind}: {path.relative_to(folder)}", {"kind": kind, "path": str(path)})
    return catalog


def lora_choices(lora_dir: Path) -> dict[str, str]:
    """LoRA files a stage-2 run can start from, label (path in the Lora folder) → path."""
    files = sorted(Path(lora_dir).rglob("*.safetensors")) if Path(lora_dir).is_dir() else []
    return {NO_LORA: "", **{str(p.relative_to(lora_dir)): str(p) for p in files}}


# -- config → form ----------------------------------------------------------------------------------


def _get(config: TrainConfig, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def form_values(config: TrainConfig) -> dict[str, object]:
    """What each field shows for ``config``."""
    values = {}
    for field in FIELDS:
        value = _get(config, field.key)
        values[field.key] = "\n".join(value) if field.widget == "lines" else value
    return values


def feedback_values(config: TrainConfig) -> tuple[dict[str, str], dict[str, str]]:
    """Which catalog entry each aspect dropdown shows for ``config`` (``off`` where none)."""
    def pick(specs, aspects):
        chosen = {spec.aspect: _label({"kind": spec.kind, "path": spec.path, "threshold": spec.threshold}) for spec in specs}
        return {aspect: chosen.get(aspect, OFF) for aspect in aspects}

    return pick(config.rewards, REWARD_ASPECTS), pick(config.perception, PERCEPTION_ASPECTS)


def shown_feedback(config: TrainConfig, unifl_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """What the aspect dropdowns start at: the preset's own models, or for a preset without any (``sd15``,
    ``sdxl``) the public-model recipe with the files present and image statistics for the rest."""
    if config.rewards or config.perception:
        return feedback_values(config)
    recipe = default_feedback(unifl_dir)
    chosen = {section: {table["aspect"]: _label({k: v for k, v in table.items() if k != "aspect"}) for table in recipe[section]}
              for section in ("rewards", "perception")}
    return ({aspect: chosen["rewards"].get(aspect, OFF) for aspect in REWARD_ASPECTS},
            {aspect: chosen["perception"].get(aspect, OFF) for aspect in PERCEPTION_ASPECTS})


def preset_config(preset: str, model_path: str, stage: str = "1") -> TrainConfig:
    return load_config(None, [f"stage={stage}"], preset=resolve_preset(preset, model_path))


def stage_refilled(preset: str, model_path: str) -> set[str]:
    """Fields whose preset value depends on the stage (``stages`` in the preset): refilled when the stage changes."""
    return stage_fields(resolve_preset(preset, model_path))


# -- form → config ----------------------------------------------------------------------------------


def toml_literal(value) -> str:
    """``value`` as the right-hand side of a TOML ``key = value`` (how overrides are parsed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items() if v is not None) + "}"
    raise FormError(f"cannot write {value!r} into a config")


def _field_value(field: Field, value):
    if field.widget == "int":
        if value is None or float(value) != int(float(value)):
            raise FormError(f"{field.label} ({field.key}) = {value!r}: enter a whole number")
        return int(float(value))
    if field.widget == "float":
        if value is None:
            raise FormError(f"{field.label} ({field.key}) is empty: enter a number")
        return float(value)
    if field.widget == "lines":
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if field.widget == "bool":
        return bool(value)
    return str(value if value is not None else "")


def check_output_name(name: str) -> str:
    name = (name or "").strip()
    if not _OUTPUT_NAME.match(name):
        raise FormError(f"LoRA name {name!r}: use letters, digits, spaces, '-', '_' or '.', starting with a letter or digit (it becomes <name>.safetensors and <lora:name:1>)")
    return name


def feedback_tables(choices: dict[str, str], catalog: dict[str, dict], what: str) -> list[dict]:
    tables = []
    for aspect, label in choices.items():
        if label in (None, "", OFF):
            continue
        if label not in catalog:
            raise FormError(f"{what} model {label!r} for {aspect} is no longer available: press 🔄 Refresh lists, then pick one from the {aspect} {what} list")
        tables.append({"aspect": aspect, **catalog[label]})
    return tables


def extra_overrides(text: str) -> list[str]:
    """The "Extra settings" box: ``key=value`` lines as for ``unifl train --set``; ``#`` starts a comment."""
    return [line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip().startswith("#")]


def confine_to_host(config: TrainConfig, host) -> TrainConfig:
    """Refuse a config whose paths leave the host's folders or that runs code (``kind = "module"``) where
    the host does not allow it: "Extra settings" is free text, and a shared preset may carry it. (Whether
    the files it names exist and load is :func:`~unifl.core.training.preflight.check_before_training`'s part.)"""
    from ..core.training.confinement import ConfinementError, confine

    try:
        confine(config, host.ui_confinement(), names=FIELD_LABELS)
    except ConfinementError as error:
        raise FormError(str(error)) from None
    return config


def build_config(*, preset: str, model_path: str, run_dir: Path, values: dict[str, object], init_from: str,
                 rewards: dict[str, str], perception: dict[str, str], unifl_dir: Path, extra: str) -> TrainConfig:
    """The run's config: the preset, then every form field, then the extra lines (checked by the core)."""
    overrides = [f"model.path={toml_literal(model_path)}", f"logging.output_dir={toml_literal(str(run_dir))}", f"lora.init_from={toml_literal(init_from)}"]
    overrides += [f"{field.key}={toml_literal(_field_value(field, values[field.key]))}" for field in FIELDS]
    overrides.append(f"rewards={toml_literal(feedback_tables(rewards, model_catalog('rewards', unifl_dir), 'reward'))}")
    overrides.append(f"perception={toml_literal(feedback_tables(perception, model_catalog('perception', unifl_dir), 'perception'))}")
    return load_config(None, overrides + extra_overrides(extra), preset=resolve_preset(preset, model_path))
