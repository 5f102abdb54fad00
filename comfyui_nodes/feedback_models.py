"""Reward and perception models as ComfyUI objects: what the loader nodes output and the others consume.

A :class:`FeedbackModel` names a model the way a UniFL config does (registry ``kind`` + local ``path`` +
``aspect``, ``weight``, ``threshold``) and holds the loaded ``nn.Module`` in a ComfyUI ``ModelPatcher``,
so ComfyUI's model management moves it to the GPU for scoring and offloads it when memory is needed.
The trainer receives the *spec* and loads its own copy (outside inference mode, where it can be
differentiated through and, in stage 2, trained as the discriminator).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


from ..core.feedback.public_models import recognise
from . import paths

POCKET_PERCEPTION_ASPECTS = {"features": "style", "instance": "structure", "semantic": "layout"}
PERCEPTION_ASPECTS = ("style", "structure", "layout")


@dataclass
class FeedbackModel:
    """One reward (``role="reward"``) or perception (``role="perception"``) model."""

    role: str
    name: str
    kind: str
    path: str
    aspect: str
    weight: float = 1.0
    threshold: float | None = None
    patcher: object = field(default=None, repr=False)

    def spec(self) -> dict:
        """A ``[[rewards]]`` / ``[[perception]]`` table of the core config."""
        table = {"kind": self.kind, "path": self.path, "aspect": self.aspect, "weight": float(self.weight)}
        if self.threshold is not None:
            table["threshold"] = float(self.threshold)
        return table

    @property
    def module(self):
        return self.patcher.model


def ensure_kinds_registered() -> dict[str, str]:
    """Register the core's kinds and the pocket world's; returns ``{what: error}`` for those that failed (a
    missing optional dependency only makes its kinds unavailable, with the error reported when one is asked for)."""
    failed = {}
    try:
        from ..core.feedback import builtin  # noqa: F401  (its import registers the core's kinds)
    except ImportError as error:
        failed["core kinds"] = f"{type(error).__name__}: {error}"
    try:
        from ..pocket.plugin import register

        register()
    except ImportError as error:
        failed["pocket world"] = f"{type(error).__name__}: {error}"
    return failed


def _file_metadata(path: str) -> dict[str, str]:
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f"{path}: not a readable .safetensors file ({error}); copy it again") from None


def resolve(role: str, choice: str, kind: str, aspect: str) -> tuple[str, str, str]:
    """``(kind, path, aspect)`` of a loader's choice; ``kind``/``aspect`` ``"auto"``/``""`` are filled in."""
    kind, aspect = kind.strip(), aspect.strip()
    auto_kind, path, auto_aspect = "", "", ""
    if choice.startswith(paths.BUILTIN_PREFIX):
        auto_kind = choice[len(paths.BUILTIN_PREFIX):]
        auto_aspect = {**paths.BUILTIN_REWARDS, **paths.BUILTIN_PERCEPTION}.get(auto_kind, "")
    elif choice.startswith(paths.POCKET_PREFIX):
        name = choice[len(paths.POCKET_PREFIX):]
        if role == "reward":
            auto_kind, path, auto_aspect = "pocket-reward", name, name
        else:
            auto_kind, auto_aspect = f"pocket-{name}", POCKET_PERCEPTION_ASPECTS.get(name, "")
    else:
        missing = paths.missing_model(role, choice)
        if missing:
            raise FileNotFoundError(missing)
        path = str(paths.find_model(paths.REWARD_FOLDER if role == "reward" else paths.PERCEPTION_FOLDER, choice))
        meta = {} if choice.endswith("/") else _file_metadata(path)
        published = recognise("rewards" if role == "reward" else "perception", Path(path).name)
        auto_kind = meta.get("unifl.kind") or meta.get("kind", "") or (published.kind if published else "")
        auto_aspect = meta.get("unifl.aspect", "") or (published.aspect if published else "")
        if role == "perception" and auto_kind.startswith("pocket-"):
            auto_aspect = auto_aspect or {"pocket-features": "style", "pocket-instance": "structure", "pocket-semantic": "layout"}.get(auto_kind, "")
    kind = auto_kind if kind in ("", "auto") else kind
    aspect = auto_aspect if aspect in ("", "auto") else aspect
    if not kind:
        raise ValueError(f"{choice}: neither its metadata ('unifl.kind') nor its name (docs/recipes.md) says which loader reads it; set 'kind' on the node, e.g. laion-aesthetic, pickscore, hpsv2")
    if not aspect:
        what = "color, layout, detail, lighting or any name" if role == "reward" else "style, structure or layout"
        raise ValueError(f"{choice}: set 'aspect' on the node ({what}); the file does not name one")
    if role == "perception" and aspect not in PERCEPTION_ASPECTS:
        raise ValueError(f"perception aspect {aspect!r}: use style, structure or layout")
    return kind, path, aspect


def load(role: str, choice: str, kind: str = "auto", aspect: str = "", weight: float = 1.0, threshold: float | None = None) -> FeedbackModel:
    """Load a model through core's registry and wrap it for ComfyUI's model management."""
    import comfy.model_management
    import comfy.model_patcher

    from ..core.feedback import loading

    kind, path, aspect = resolve(role, choice, kind, aspect)
    if kind == "module" and not paths.module_kinds_allowed():
        raise ValueError(f"{choice}: kind 'module' imports and runs Python code; the owner of this ComfyUI can allow it by starting ComfyUI with {paths.ALLOW_MODULE_KINDS}=1")
    failed = ensure_kinds_registered()
    try:
        module = loading.load_reward_model(kind, path) if role == "reward" else loading.load_perception_model(kind, path)
    except loading.UnknownModelKind as error:
        hint = "; ".join(f"{m} could not be imported ({e})" for m, e in failed.items())
        raise ValueError(f"{choice}: {error}" + (f". Note: {hint}; install the pack's requirements.txt" if hint else "")) from None
    if role == "reward" and threshold is None:  # the model's own α, else the recipe's for a published model
        published = recognise("rewards", Path(path).name)  # None for built-ins and pocket models (no file name)
        threshold = float(module.alpha) if getattr(module, "alpha", None) is not None else (published.threshold if published else None)
    patcher = comfy.model_patcher.ModelPatcher(module, load_device=comfy.model_management.get_torch_device(), offload_device=comfy.model_management.unet_offload_device())
    return FeedbackModel(role, choice, kind, path, aspect, weight, threshold, patcher)


def describe(model: FeedbackModel) -> str:
    threshold = "none (set one on the loader)" if model.threshold is None and model.role == "reward" else model.threshold
    extra = f", threshold α = {threshold}" if model.role == "reward" else ""
    return f"{model.role} {model.name}: kind {model.kind}, aspect {model.aspect}, weight {model.weight:g}{extra}"


def to_json(models: list[FeedbackModel]) -> str:
    return json.dumps([m.spec() for m in models], indent=2)
