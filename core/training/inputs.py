"""Every file a training run reads, checked in a moment before anything heavy is loaded.

:class:`~.trainer.UniFLTrainer` finds a missing data folder or reward file only after it loaded the base
model (10-15 s for SD1.5, more for SDXL); a host or the CLI calls :func:`check_inputs` first, so a typo
costs nothing and every problem is named at once. Nothing here loads a model or reads an image: folders
are listed, safetensors headers read.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import TrainConfig
from ..data import IMAGE_SOURCES, DataError, ImageFolderDataset, load_prompts
from ..diffusion.loading import ModelLoadError, detect_architecture
from ..feedback.registry import PERCEPTION_MODELS, REWARD_MODELS
from ..lora.kohya import LoRAFileError, check_lora_file
from ..weight_files import WEIGHT_SUFFIXES

#: Kinds whose ``path`` names no file (an importable factory).
_NOT_A_FILE_KINDS = ("module",)


class InputError(ValueError):
    """Inputs of a run that do not exist or cannot be read; one line per problem, each naming the fix."""


def check_inputs(config: TrainConfig) -> None:
    """Raise :class:`InputError` listing every missing or unreadable input of ``config``.

    Checked: the base model (its header), the image folder (images and captions) or source name, the
    prompt file, each reward and perception model (registered kind, its files), the LoRA to start from,
    and the data the enabled feedback terms need (the conditions :class:`~.trainer.UniFLTrainer` checks
    after loading).
    """
    problems: list[str] = []

    def check(action, *args) -> None:
        try:
            action(*args)
        except (DataError, ModelLoadError, LoRAFileError, FileNotFoundError) as error:
            problems.append(str(error))

    check(detect_architecture, config.model.path)
    data = config.data
    if data.images and data.images not in IMAGE_SOURCES:
        check(ImageFolderDataset, data.images, data.resolution)
    if data.prompts:
        check(load_prompts, data.prompts)
    if config.lora.init_from:
        check(check_lora_file, config.lora.init_from)  # readable, and every value finite
    for section, registry, specs in (("reward", REWARD_MODELS, config.rewards), ("perception", PERCEPTION_MODELS, config.perception)):
        for spec in specs:
            where = f"{section} model for {spec.aspect} ({spec.kind})"
            if spec.kind not in registry:
                problems.append(f"{where}: unknown kind {spec.kind!r}; known: {', '.join(sorted(registry))}")
            elif spec.kind not in _NOT_A_FILE_KINDS:
                problems += [f"{where}: {file} does not exist; put the model there or fix its path" for file in _named_files(spec.path) if not Path(file).expanduser().exists()]

    terms = feedback_terms(config)
    if ({"PeFL", "adversarial"} & set(terms) or config.regularizer.denoising_weight > 0) and not data.images:
        problems.append("this run needs real images (PeFL, the adversarial stage or the denoising regulariser): set data.images to a folder of captioned images or a source name")
    if "aesthetic" in terms and not (data.prompts or data.images):
        problems.append("aesthetic feedback needs prompts: set data.prompts to a prompt file (one per line) or data.images to captioned images")
    if problems:
        raise InputError("\n".join(problems))


def feedback_terms(config: TrainConfig) -> list[str]:
    """The feedback losses ``config`` trains with: ``"PeFL"``, ``"aesthetic"``, ``"adversarial"`` (the
    conditions of ``UniFLTrainer.uses_*``). Empty: a denoising-only run, with no feedback at all."""
    on = {
        "PeFL": config.stage == "1" and config.pefl.weight > 0 and bool(config.perception),
        "aesthetic": config.aesthetic.weight > 0 and bool(config.rewards),
        "adversarial": config.stage == "2" and config.adversarial.weight > 0,
    }
    return [term for term, used in on.items() if used]


def _named_files(path: str) -> list[str]:
    """The files and folders a model ``path`` names: the whole path, or each part of ``"clip=…;head=…"``.

    Only what reads as a path (a folder separator or a weights suffix) counts: the same string also
    carries seeds (``random-features``) and layer lists (``layers=relu1_2,relu2_2``).
    """
    items = [item.strip() for item in (path or "").split(";") if item.strip()]
    named = [item.partition("=")[2].strip() for item in items] if items and "=" in items[0] and "/" not in items[0].partition("=")[0] else items
    return [value for value in named if value and (os.sep in value or "/" in value or value.endswith(WEIGHT_SUFFIXES))]
