"""The LoRA file: kohya/webui ``.safetensors`` that ComfyUI, AUTOMATIC1111 and diffusers load unchanged.

Keys are ``lora_unet_<diffusers module path, "." → "_">.lora_down.weight`` / ``.lora_up.weight`` /
``.alpha``. All three hosts map these names onto their own UNet (ComfyUI through its diffusers→LDM key
map, A1111 through ``convert_diffusers_name_to_compvis``, diffusers through
``_convert_non_diffusers_lora_to_diffusers``), so one file serves all of them whatever host trained it.

``.alpha`` holds the alpha the LoRA was trained with. diffusers' own ``convert_state_dict_to_kohya``
writes ``alpha = rank`` instead, which silently rescales every LoRA trained with ``alpha != rank`` by
``rank / alpha`` when loaded anywhere; we do not inherit that.

The metadata carries what A1111's picker needs (``ss_base_model_version`` hides SDXL LoRAs on SD1.5
checkpoints and vice versa) and the UniFL *sampler contract*: the steps, scheduler, spacing and CFG
the LoRA was trained to be sampled with, so the ComfyUI/A1111 front ends can preset them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..diffusion import schedule as sched
from ..files import check_new_output, replaced_atomically
from .peft import LORA_LAYER_TYPES, TARGET_PRESETS, LoRASettings, add_lora, lora_layers, target_pattern

KOHYA_PREFIX = "lora_unet_"

#: ``architecture`` tag → kohya ``ss_base_model_version`` (what A1111 uses to match LoRA and checkpoint).
BASE_MODEL_VERSIONS = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
#: ``architecture`` tag → Stability AI model-spec architecture. SD2 is written as its 512 px epsilon
#: base; a caller exporting for the 768-v model passes ``modelspec.architecture`` in ``metadata``.
MODELSPEC_ARCHITECTURES = {
    "sd15": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2-512/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
}



def register_architecture(tag: str, shaped_like: str) -> None:
    """A model of its own (``unifl.architecture = tag`` in its LoRAs, which no other model accepts) whose
    keys and file metadata are those of ``shaped_like`` (the pocket model is SD1.5-shaped)."""
    BASE_MODEL_VERSIONS[tag] = BASE_MODEL_VERSIONS[shaped_like]
    MODELSPEC_ARCHITECTURES[tag] = MODELSPEC_ARCHITECTURES[shaped_like]


#: Sampler name → (diffusers scheduler class, ComfyUI ``sampler_name``). ComfyUI's ``ddim`` sampler is
#: Euler in sigma space, which is exactly deterministic DDIM for these discrete models.
SCHEDULERS = {"ddim": ("DDIMScheduler", "ddim"), "euler": ("EulerDiscreteScheduler", "euler")}
#: Timestep spacing → the ComfyUI scheduler that picks the same timesteps. ComfyUI's ``simple``
#: indexes the model's 1000-entry sigma table at ``999 - int(i·1000/steps)``, i.e. exactly diffusers'
#: trailing ``999, 749, 499, 249`` for 4 steps (and within one timestep for step counts that do not
#: divide 1000); ``sgm_uniform`` interpolates at fractional timesteps (749.25, 499.5, …) and is only
#: close. ``ddim_uniform`` takes ``1, 1 + 1000//steps, …``, diffusers' leading spacing with offset 1.
COMFYUI_SCHEDULERS = {"trailing": "simple", "leading": "ddim_uniform", "linspace": "normal"}

SAMPLER_KEYS = ("unifl.sampler.steps", "unifl.sampler.scheduler", "unifl.sampler.timestep_spacing", "unifl.sampler.cfg")
#: Optional beside :data:`SAMPLER_KEYS`: the step counts a few-step LoRA was trained for, ``"1,2,4,8"`` (a stage-2
#: file from before it was written was trained for ``unifl.sampler.steps`` alone; a stage-1 LoRA has none).
STEP_COUNTS_KEY = "unifl.sampler.step_counts"


class LoRAFileError(ValueError):
    """A LoRA file that cannot be used with this model; the message names the file and the fix."""


@dataclass
class SamplerContract:
    """How a UniFL LoRA is meant to be sampled; written into the file's metadata.

    Args:
        steps: number of sampling steps the LoRA was trained for.
        scheduler: ``"ddim"`` or ``"euler"`` (deterministic; identical updates for these models).
        timestep_spacing: ``"trailing"``, ``"leading"`` or ``"linspace"`` (see :mod:`unifl.core.diffusion.schedule`).
        cfg: classifier-free guidance scale; 1.0 means no guidance (one UNet call per step).
        step_counts: the step counts a few-step LoRA was trained to sample at (stage 2: its deployment schedules),
            ``steps`` among them as the default; empty for a LoRA trained for no particular count (stage 1, a
            quality LoRA, works at whatever count a user picks).
    """

    steps: int = 4
    scheduler: str = "ddim"
    timestep_spacing: str = "trailing"
    cfg: float = 1.0
    step_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"sampler steps must be a positive integer, got {self.steps!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"sampler scheduler must be one of {sorted(SCHEDULERS)}, got {self.scheduler!r}")
        if self.timestep_spacing not in sched.SPACINGS:
            raise ValueError(f"timestep spacing must be one of {sched.SPACINGS}, got {self.timestep_spacing!r}")
        if not self.cfg >= 1.0:
            raise ValueError(f"cfg must be >= 1.0 (1.0 = no guidance), got {self.cfg!r}")
        self.cfg = float(self.cfg)
        if not all(isinstance(n, int) and n >= 1 for n in self.step_counts):
            raise ValueError(f"sampler step counts must be positive integers, got {self.step_counts!r}")
        self.step_counts = tuple(sorted(set(self.step_counts) | {self.steps})) if self.step_counts else ()

    def steps_for(self, requested: int | None) -> tuple[int, str | None]:
        """The step count to sample with when a user asks for ``requested`` (``None``: the default), and a
        warning when a few-step LoRA was not trained for that count (then the nearest count it was trained for)."""
        if requested is None or not self.step_counts or requested in self.step_counts:
            return (self.steps if requested is None else requested), None
        nearest = min(self.step_counts, key=lambda n: (abs(n - requested), n))
        trained = ", ".join(map(str, self.step_counts))
        return nearest, f"this LoRA was trained to sample at {trained} steps, not {requested}: sampling at {nearest}"

    def to_metadata(self) -> dict[str, str]:
        return {
            "unifl.sampler.steps": str(self.steps),
            "unifl.sampler.scheduler": self.scheduler,
            "unifl.sampler.timestep_spacing": self.timestep_spacing,
            "unifl.sampler.cfg": repr(self.cfg),
            **({STEP_COUNTS_KEY: ",".join(map(str, self.step_counts))} if self.step_counts else {}),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> SamplerContract | None:
        """The contract stored in ``meta``, or ``None`` for a file without one (a foreign LoRA)."""
        present = [k for k in SAMPLER_KEYS if k in meta]
        if not present:
            return None
        if len(present) != len(SAMPLER_KEYS):
            missing = sorted(set(SAMPLER_KEYS) - set(present))
            raise ValueError(f"LoRA metadata has an incomplete UniFL sampler contract: {missing} missing")
        try:
            steps, cfg = int(meta["unifl.sampler.steps"]), float(meta["unifl.sampler.cfg"])
            counts = tuple(int(n) for n in meta[STEP_COUNTS_KEY].split(",") if n.strip()) if STEP_COUNTS_KEY in meta else None
        except ValueError as error:
            raise ValueError(f"LoRA metadata has an unreadable UniFL sampler contract: {error}") from None
        if counts is None:  # written before step counts were: a stage-2 LoRA was trained for its one count
            counts = (steps,) if meta.get("unifl.stage") == "2" else ()
        return cls(steps, meta["unifl.sampler.scheduler"], meta["unifl.sampler.timestep_spacing"], cfg, counts)

    def diffusers_kwargs(self) -> dict:
        """What a diffusers pipeline needs, split by where it goes::

            kw = contract.diffusers_kwargs()
            pipe.scheduler = getattr(diffusers, kw["scheduler_class"]).from_config(pipe.scheduler.config, **kw["scheduler_config"])
            image = pipe(prompt, **kw["call"]).images[0]

        For DDIM, ``set_alpha_to_one`` makes the last step land on the clean image (ᾱ = 1) as UniFL's
        training rollouts and ComfyUI (final sigma 0) do; SD's shipped config stops at ᾱ_0 instead.
        """
        scheduler_config: dict = {"timestep_spacing": self.timestep_spacing}
        if self.scheduler == "ddim":
            scheduler_config["set_alpha_to_one"] = True
        return {
            "scheduler_class": SCHEDULERS[self.scheduler][0],
            "scheduler_config": scheduler_config,
            "call": {"num_inference_steps": self.steps, "guidance_scale": self.cfg},
        }

    def comfyui_settings(self) -> dict:
        """``KSampler`` inputs (``sampler_name``, ``scheduler``, ``steps``, ``cfg``); see :data:`COMFYUI_SCHEDULERS`."""
        return {
            "sampler_name": SCHEDULERS[self.scheduler][1],
            "scheduler": COMFYUI_SCHEDULERS[self.timestep_spacing],
            "steps": self.steps,
            "cfg": self.cfg,
        }


def kohya_name(diffusers_path: str) -> str:
    """``down_blocks.1.attentions.0.…attn1.to_q`` → ``lora_unet_down_blocks_1_attentions_0_…attn1_to_q``."""
    return KOHYA_PREFIX + diffusers_path.replace(".", "_")


def _identity(path: str) -> str:
    return path


def _resolve_name_map(naming: str, name_map: Callable[[str], str] | None) -> Callable[[str], str]:
    if naming == "diffusers":
        if name_map is not None:
            raise ValueError("name_map is only for naming='ldm'; with naming='diffusers' module paths are used as they are")
        return _identity
    if naming == "ldm":
        if name_map is None:
            raise ValueError("naming='ldm' needs name_map, a function from the host's module path to the diffusers module path")
        return name_map
    raise ValueError(f"naming must be 'diffusers' or 'ldm', got {naming!r}")


def build_metadata(
    path: Path,
    settings: LoRASettings,
    architecture: str,
    sampler: SamplerContract | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    """The safetensors metadata of an exported LoRA (all values strings, as the format requires)."""
    from .. import __version__

    if architecture not in BASE_MODEL_VERSIONS:
        raise ValueError(f"architecture must be one of {sorted(BASE_MODEL_VERSIONS)}, got {architecture!r}")
    derived = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(settings.rank),
        "ss_network_alpha": repr(settings.alpha),
        "ss_base_model_version": BASE_MODEL_VERSIONS[architecture],
        "ss_v2": str(architecture == "sd2"),
        "ss_output_name": path.stem,
        "unifl.architecture": architecture,
        "unifl.version": __version__,
        "unifl.lora_targets": settings.targets,
        **(sampler.to_metadata() if sampler is not None else {}),
    }
    comment = "UniFL feedback-learning LoRA."
    if sampler is not None:
        comment += f" Sample with {sampler.steps} steps, {sampler.scheduler} ({sampler.timestep_spacing} spacing), CFG {sampler.cfg:g}."
    descriptive = {
        "ss_training_comment": comment,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCHITECTURES[architecture],
        "modelspec.title": path.stem,
    }
    extra = dict(extra or {})
    for key, value in extra.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"safetensors metadata must map str to str; {key!r} has a {type(value).__name__} value")
        if key in derived or key.startswith("unifl.sampler."):
            raise ValueError(f"metadata key {key!r} is written from the exporter's arguments; pass it through them, not through metadata")
    return {**descriptive, **extra, **derived}


def save_kohya_lora(
    path: str | os.PathLike,
    module: nn.Module,
    settings: LoRASettings,
    *,
    naming: str = "diffusers",
    architecture: str,
    name_map: Callable[[str], str] | None = None,
    metadata: Mapping[str, str] | None = None,
    sampler: SamplerContract | None = None,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
    adapter_name: str = "unifl",
) -> Path:
    """Write ``module``'s LoRA as a kohya ``.safetensors`` file; returns the path written.

    Args:
        path: destination, ending in ``.safetensors``. Parent folders are created.
        module: the LoRA target (the UNet) with the adapter added by :func:`~unifl.core.lora.peft.add_lora`.
        settings: the settings the LoRA was added with; checked against the module's layers.
        naming: how ``module`` names its submodules: ``"diffusers"`` or ``"ldm"`` (ComfyUI/A1111).
        architecture: ``"sd15"``, ``"pocket"``, ``"sd2"`` or ``"sdxl"``.
        name_map: for ``naming="ldm"``, host module path → diffusers module path.
        metadata: extra string metadata (e.g. ``unifl.stage``); may override ``ss_training_comment``
            and ``modelspec.*`` but not keys derived from the other arguments.
        sampler: the sampler contract to record; ``None`` records none rather than guess one.
        dtype: dtype of the LoRA weights in the file (fp16 by default, what every host expects).
            ``.alpha`` is always float32 so a non-round alpha is stored exactly.
        overwrite: replace an existing file; otherwise an existing file raises ``FileExistsError``.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a crash never leaves a truncated LoRA where a host would pick it up.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a LoRA file must end in .safetensors (ComfyUI and A1111 list only those)")
    check_new_output(path, overwrite=overwrite, how="pass overwrite=True to replace it", what="name")
    to_diffusers = _resolve_name_map(naming, name_map)
    layers = lora_layers(module, adapter_name)
    if not layers:
        raise ValueError(f"{type(module).__name__} has no LoRA adapter {adapter_name!r}; add one with add_lora before exporting")

    tensors: dict[str, torch.Tensor] = {}
    alpha = torch.tensor(settings.alpha, dtype=torch.float32)
    for host_path, layer in layers.items():
        if layer.r[adapter_name] != settings.rank or not math.isclose(layer.lora_alpha[adapter_name], settings.alpha, rel_tol=1e-6):
            raise ValueError(
                f"LoRA layer {host_path} has rank {layer.r[adapter_name]}, alpha {layer.lora_alpha[adapter_name]} but settings say "
                f"rank {settings.rank}, alpha {settings.alpha}; pass the LoRASettings the adapter was added with"
            )
        try:
            name = kohya_name(to_diffusers(host_path))
        except KeyError:
            raise ValueError(f"name_map has no diffusers name for LoRA layer {host_path}; extend the map or drop that target") from None
        if f"{name}.alpha" in tensors:
            raise ValueError(f"two LoRA layers map to the same key {name}; name_map must be one-to-one")
        tensors[f"{name}.lora_down.weight"] = layer.lora_A[adapter_name].weight.detach().to("cpu", dtype).contiguous()
        tensors[f"{name}.lora_up.weight"] = layer.lora_B[adapter_name].weight.detach().to("cpu", dtype).contiguous()
        tensors[f"{name}.alpha"] = alpha.clone()
    meta = build_metadata(path, settings, architecture, sampler, metadata)

    try:
        with replaced_atomically(path) as tmp:  # readable as the umask says: another user's host may load it
            save_file(tensors, str(tmp), metadata=meta)
    except BaseException as error:
        if isinstance(error, Exception) and not isinstance(error, OSError):  # safetensors reports a full disk as its own error
            raise OSError(f"{path}: could not be written ({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
                          "a file that was there is untouched. Free some space and export again (unifl export latest --run-dir …)") from None
        raise
    return path


def read_lora_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a LoRA file (``{}`` when it has none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own SafetensorError for corrupt headers
        raise LoRAFileError(f"{path}: not a readable .safetensors file ({error})") from None


def check_finite(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse a LoRA holding NaN or infinite values: it samples black images and, continued, blames the
    learning rate. Every loader (the trainer's ``init_from``, ``unifl sample``, the ComfyUI and A1111
    front ends) calls this with the file's tensors."""
    bad = [key for key, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise LoRAFileError(f"{path}: {len(bad)} of {len(tensors)} tensors hold NaN or infinite values (e.g. {bad[0]}); "
                            "the training that wrote it diverged. Use an earlier LoRA or checkpoint of that run")


def check_lora_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a LoRA file whole before a run starts from it: readable, finite; returns its metadata."""
    from safetensors.torch import load_file

    meta = read_lora_metadata(path)
    check_finite(path, load_file(str(path)))
    return meta


def load_kohya_lora(
    path: str | os.PathLike,
    module: nn.Module,
    *,
    settings: LoRASettings | None = None,
    name_map: Callable[[str], str] | None = None,
    architecture: str | None = None,
    adapter_name: str = "unifl",
) -> LoRASettings:
    """Load a kohya LoRA file into ``module``'s LoRA, adding the LoRA first if the module has none.

    Used to resume from, or continue in stage 2, a LoRA exported by :func:`save_kohya_lora` (or any
    plain kohya LoRA on the UNet's Linear/Conv2d layers). Rank and alpha come from the file;
    ``settings`` only supplies ``targets``/``dropout``/``init`` when the LoRA is added here (without
    it the smallest target preset that covers the file is used). Afterwards the module's LoRA
    computes exactly the file's: layers the file does not cover are reset to a no-op.

    Everything is checked before the module is touched: the metadata architecture against
    ``architecture``, every key against a layer of ``module``, every shape against that layer. Any
    mismatch, e.g. an SDXL LoRA on an SD1.5 model, raises one :class:`LoRAFileError` naming the file.

    Args:
        path: a ``.safetensors`` kohya LoRA.
        module: the LoRA target (the UNet), with or without a LoRA adapter ``adapter_name``.
        settings: ``targets``/``dropout``/``init`` for a LoRA added here; its rank/alpha are ignored.
        name_map: for LDM-named hosts, host module path → diffusers module path (as for export); it
            may raise ``KeyError`` for host modules without a diffusers counterpart.
        architecture: the model's tag; when given, the file's metadata must agree.

    Returns:
        The settings of the LoRA now in ``module`` (rank and alpha of the file).
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_lora_metadata(path)
    if architecture is not None:
        _check_architecture(path, meta, architecture)
    state = load_file(str(path))
    check_finite(path, state)
    modules = read_kohya_modules(path, state)
    rank, alpha = _uniform_rank_and_alpha(path, modules)
    if "ss_network_alpha" in meta and math.isclose(float(meta["ss_network_alpha"]), alpha, rel_tol=1e-6):
        alpha = float(meta["ss_network_alpha"])  # the exact value; the tensor is float32-rounded

    existing = lora_layers(module, adapter_name)
    if existing:
        candidates = dict(existing)
    else:
        candidates = {n: m for n, m in module.named_modules() if isinstance(m, LORA_LAYER_TYPES)}
    where = f"the LoRA layers already in {type(module).__name__}" if existing else type(module).__name__
    match = match_lora_modules(path, meta, modules, candidates, name_map, where)
    if match.unknown:
        raise match.error()
    file_hosts = match.file_hosts

    if existing:
        layer = next(iter(existing.values()))
        if layer.r[adapter_name] != rank or not math.isclose(layer.lora_alpha[adapter_name], alpha, rel_tol=1e-6):
            raise LoRAFileError(
                f"{path}: the file is rank {rank}, alpha {alpha:g} but the module's LoRA is rank {layer.r[adapter_name]}, "
                f"alpha {float(layer.lora_alpha[adapter_name]):g}; load it into a module without a LoRA or add one with the file's rank and alpha"
            )
        targets = _smallest_preset(existing) or "all"
    else:
        needed = _smallest_preset(file_hosts)
        if needed is None:
            outside = [h for h in file_hosts if not re.fullmatch(target_pattern("all"), h)]
            raise LoRAFileError(f"{path}: LoRA modules such as {outside[:3]} are outside every UniFL target preset; UniFL cannot continue this LoRA")
        targets = settings.targets if settings is not None else needed
        if list(TARGET_PRESETS).index(targets) < list(TARGET_PRESETS).index(needed):
            raise LoRAFileError(f"{path}: the file has LoRA modules outside targets={targets!r}; use targets={needed!r}")

    result = replace(settings or LoRASettings(), rank=rank, alpha=alpha, targets=targets)
    if not existing:
        add_lora(module, result, adapter_name)
    layers = lora_layers(module, adapter_name)
    with torch.no_grad():
        for host_path, layer in layers.items():
            up = layer.lora_B[adapter_name].weight
            if host_path in file_hosts:
                down_tensor, up_tensor = file_hosts[host_path][:2]
                layer.lora_A[adapter_name].weight.copy_(down_tensor)
                up.copy_(up_tensor)
            else:
                up.zero_()
    return result


def made_for(meta: Mapping[str, str]) -> str:
    """The model family a LoRA's metadata says it was made for (``unifl.architecture``, else kohya's
    ``ss_base_model_version``, else the model-spec architecture), or ``"an unknown model"``."""
    for key in ("unifl.architecture", "ss_base_model_version", "modelspec.architecture"):
        if meta.get(key):
            return repr(meta[key])
    return "an unknown model"


@dataclass
class LoRAMatch:
    """Which modules of a LoRA file a model has a layer for (:func:`match_lora_modules`)."""

    path: Path
    meta: Mapping[str, str]
    where: str
    #: host module path → the file's ``(lora_down, lora_up, alpha)`` for every module that matched.
    file_hosts: dict[str, tuple]
    #: kohya names of the file's modules the model has no layer for.
    unknown: list[str]
    total: int

    def error(self) -> LoRAFileError:
        """The refusal of a file with unmatched modules: the file, how many, and the model it was made for."""
        if any(re.match(r"lora_unet_(input_blocks|middle_block|output_blocks)_", name) for name in self.unknown):
            cause = ("It names modules LDM-style (lora_unet_input_blocks_…, kohya's SDXL convention); UniFL continues "
                     "only LoRAs with diffusers-style names, such as its own exports.")
        else:
            cause = f"The LoRA was made for {made_for(self.meta)}, another model architecture (or other targets)."
        if len(self.unknown) == self.total:
            return LoRAFileError(f"{self.path}: none of its {self.total} LoRA modules matches a layer of {self.where}, e.g. {self.unknown[:3]}. {cause}")
        return LoRAFileError(f"{self.path}: {len(self.unknown)} of {self.total} LoRA modules have no matching layer in {self.where}, e.g. {self.unknown[:3]}. {cause}")


def match_lora_modules(path: Path, meta: Mapping[str, str], modules: Mapping[str, tuple], candidates: Mapping[str, nn.Module],
                       name_map: Callable[[str], str] | None, where: str) -> LoRAMatch:
    """Match a file's kohya modules (:func:`read_kohya_modules`) to a model's layers ``candidates`` (host module
    path → ``nn.Linear``/``nn.Conv2d`` or their LoRA layers), and check the shapes of those that match.

    ``name_map`` maps a host module path to its diffusers path (``KeyError``: none). Every loader of a UniFL LoRA
    decides with this: :func:`load_kohya_lora` refuses any unmatched module, the ComfyUI node refuses a file none
    of whose modules match and warns about a partial match. A matched module of the wrong shape raises
    :class:`LoRAFileError`.
    """
    to_diffusers = name_map or _identity
    host_of = {}
    for host_path in candidates:
        try:
            host_of[kohya_name(to_diffusers(host_path))] = host_path
        except KeyError:
            continue  # a host module without a diffusers counterpart cannot carry a kohya key
    file_hosts = {host_of[name]: tensors for name, tensors in modules.items() if name in host_of}
    unknown = sorted(set(modules) - set(host_of))
    _check_shapes(path, meta, file_hosts, candidates)
    return LoRAMatch(Path(path), meta, where, file_hosts, unknown, len(modules))


def _check_architecture(path: Path, meta: Mapping[str, str], architecture: str) -> None:
    if architecture not in BASE_MODEL_VERSIONS:
        raise ValueError(f"architecture must be one of {sorted(BASE_MODEL_VERSIONS)}, got {architecture!r}")
    stored = meta.get("unifl.architecture")
    if stored is not None and stored != architecture:
        raise LoRAFileError(f"{path}: this LoRA was trained for {stored!r}, the model is {architecture!r}; pick a LoRA made for {architecture!r}")
    base = meta.get("ss_base_model_version")
    if base is not None and base != BASE_MODEL_VERSIONS[architecture]:
        raise LoRAFileError(
            f"{path}: this LoRA is for base model {base!r} (ss_base_model_version), the model is {architecture!r} "
            f"({BASE_MODEL_VERSIONS[architecture]!r}); pick a LoRA made for this model"
        )


def read_kohya_modules(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float | None]]:
    """kohya key groups → ``{lora name: (lora_down, lora_up, alpha or None)}``, refusing what we cannot load."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name, _, part = key.partition(".")
        grouped.setdefault(name, {})[part] = tensor
    foreign = sorted(n for n in grouped if not n.startswith(KOHYA_PREFIX))
    if foreign:
        raise LoRAFileError(f"{path}: keys outside the UNet such as {foreign[:3]} (text-encoder LoRA?); UniFL loads UNet-only LoRAs")
    modules = {}
    for name, parts in grouped.items():
        odd = sorted(set(parts) - {"lora_down.weight", "lora_up.weight", "alpha"})
        if odd or "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LoRAFileError(
                f"{path}: module {name} has parts {sorted(parts)}; only plain LoRA (lora_down/lora_up/alpha) "
                "is supported, not LyCORIS/LoHa/DoRA files"
            )
        alpha = parts.get("alpha")
        modules[name] = (parts["lora_down.weight"], parts["lora_up.weight"], None if alpha is None else float(alpha.item()))
    if not modules:
        raise LoRAFileError(f"{path}: the file contains no LoRA weights")
    return modules


def _uniform_rank_and_alpha(path: Path, modules: Mapping[str, tuple]) -> tuple[int, float]:
    """The file's single rank and alpha (kohya's default alpha, when absent, is the rank)."""
    pairs = {(down.shape[0], float(down.shape[0]) if alpha is None else alpha) for down, _, alpha in modules.values()}
    if len(pairs) != 1:
        raise LoRAFileError(f"{path}: modules use different (rank, alpha) pairs {sorted(pairs)}; UniFL loads LoRAs with one rank and alpha")
    rank, alpha = pairs.pop()
    return int(rank), float(alpha)


def _check_shapes(path: Path, meta: Mapping[str, str], file_hosts: Mapping[str, tuple], candidates: Mapping[str, nn.Module]) -> None:
    wrong = []
    for host_path, (down, up, _) in file_hosts.items():
        rank = down.shape[0]
        layer = candidates[host_path]
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        if isinstance(base, nn.Conv2d):
            expected = ((rank, base.in_channels, *base.kernel_size), (base.out_channels, rank, 1, 1))
        else:
            expected = ((rank, base.in_features), (base.out_features, rank))
        if (tuple(down.shape), tuple(up.shape)) != expected:
            wrong.append(f"{host_path}: file {tuple(down.shape)}/{tuple(up.shape)} vs model {expected[0]}/{expected[1]}")
    if wrong:
        raise LoRAFileError(
            f"{path}: {len(wrong)} LoRA modules do not fit this model's layers, e.g. {wrong[:2]}. "
            f"The LoRA was made for {made_for(meta)}, another model architecture."
        )


def _smallest_preset(host_paths) -> str | None:
    """The narrowest target preset (presets are nested) whose regex matches every path, else ``None``."""
    for preset in TARGET_PRESETS:
        pattern = target_pattern(preset)
        if all(re.fullmatch(pattern, p) for p in host_paths):
            return preset
    return None
