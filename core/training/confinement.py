"""What a config built from a UI may touch: the host's folders only, and no code.

A UI's free-text boxes (the A1111 tab's "Extra settings", the ComfyUI training node's ``extra_settings``,
and a shared workflow file that fills them) are input from a stranger. The host adapters build the
run's :class:`~unifl.core.config.TrainConfig` as usual, then pass it through :func:`confine` with the
folders of their host: every path the config reads must lie inside those folders, the run folder inside
the host's folder of runs (it is the only place a run ever deletes in), and ``kind = "module"``, which
imports and calls Python code, is refused unless the host's owner turned it on.

Paths are checked as the loaders will read them (:func:`unifl.core.files.is_inside`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..data import IMAGE_SOURCES
from ..diffusion.loading import MODEL_SOURCES
from ..files import is_inside

#: The registry kind that imports ``package.module:factory`` and calls it (core/feedback/builtin.py).
MODULE_KIND = "module"
#: A model path that is a name or a number for its loader (``pocket-reward``'s aspect, a seed), not a file.
_NAME = re.compile(r"[\w.\-]+")
#: The ``part=path;part=path`` form of a multi-file model's path (core/weight_files.py ``parse_parts``).
_PART = re.compile(r"[A-Za-z_][\w\-]*=.*", re.DOTALL)


class ConfinementError(ValueError):
    """A setting from a UI that names something outside the host's folders, or code; the message names
    the setting, the folders allowed and the fix."""


@dataclass(frozen=True)
class UIConfinement:
    """The folders and permissions a host gives the configs its UI builds.

    Args:
        readable: folders whose files and sub-folders a config may read (images, prompt files, LoRAs,
            reward/perception model files).
        runs: the folder of run folders; ``logging.output_dir`` must be a folder inside it.
        models: base-model paths the host itself lists (its checkpoints), allowed wherever they lie.
        allow_module_kinds: whether ``kind = "module"`` may be used.
        how_to_allow_modules: how the host's owner allows it (named in the refusal).
        where: the UI, as the messages name it.
    """

    readable: tuple[Path, ...]
    runs: Path
    models: frozenset[str] = field(default_factory=frozenset)
    allow_module_kinds: bool = False
    how_to_allow_modules: str = ""
    where: str = "the UI"


def confine(config: TrainConfig, confinement: UIConfinement, names: Mapping[str, str] | None = None) -> TrainConfig:
    """Return ``config`` if everything it names is allowed; else raise :class:`ConfinementError` naming every
    setting that is not, a line each, under the host's ``names`` for its config key where it has one (as
    :meth:`~unifl.core.training.preflight.PreflightReport.raise_for_errors` does)."""
    c, rules = config, confinement
    shown = ", ".join(map(str, rules.readable))
    problems: list[str] = []

    def subject(key: str) -> str:
        return f"{names[key]} ({key})" if names and key in names else key

    run_dir = c.logging.output_dir
    if not is_inside(run_dir, [rules.runs], strictly=True):
        problems.append(f"{subject('logging.output_dir')} = {run_dir!r}: {rules.where} keeps run folders inside {rules.runs}; "
                        "remove that setting (the run folder follows the LoRA name)")

    def check(key: str, value: str, allowed_names: tuple[str, ...] = ()) -> None:
        if value and value not in allowed_names and not is_inside(value, rules.readable):
            problems.append(f"{subject(key)} = {value!r} is outside the folders {rules.where} may read ({shown}); "
                            "move the file there and name it inside them")

    if c.model.path and c.model.path not in rules.models:
        check("model.path", c.model.path, tuple(MODEL_SOURCES))
    check("lora.init_from", c.lora.init_from)
    check("data.images", c.data.images, tuple(IMAGE_SOURCES))
    check("data.prompts", c.data.prompts)
    for section, specs in (("rewards", c.rewards), ("perception", c.perception)):
        for i, spec in enumerate(specs):
            if spec.kind == MODULE_KIND and not rules.allow_module_kinds:
                problems.append(f"{section}[{i}].kind = 'module' imports and runs Python code ({spec.path!r}), which {rules.where} "
                                f"does not allow; {rules.how_to_allow_modules or 'use a registered kind'}")
            if spec.kind != MODULE_KIND:
                for value in _named_files(spec.path):
                    check(f"{section}[{i}].path", value)
    if problems:
        raise ConfinementError("\n".join(problems))
    return config


def _named_files(path: str) -> list[str]:
    """The files or folders a model spec's ``path`` may name: itself, or each value of a ``part=path;…``
    list; a bare name or number that is no existing file is the loader's own word, not a file."""
    items = [item.strip() for item in path.split(";") if item.strip()]
    if items and not Path(path).exists() and all(_PART.fullmatch(item) for item in items):
        values = [item.partition("=")[2].strip() for item in items]
    else:
        values = [path.strip()] if path.strip() else []
    return [value for value in values if not (_NAME.fullmatch(value) and value not in (".", "..") and not Path(value).exists())]
