"""Before hours of training: every file present and loadable, the dtypes, and one step's peak memory.

``unifl check CONFIG`` prints :func:`preflight`'s report. ``unifl train``, the ComfyUI training node and the
A1111 tab run the same checks before a run starts (:func:`check_before_training`), without loading the
feedback models (the trainer loads them next, before any step): a typo costs a second, not a model load.

What is checked, cheaply and in this order (a failure names the file and the fix):

1. the config's cross-field rules (:meth:`TrainConfig.validate`);
2. the base model: present, an SD1.x/SDXL pipeline folder or full single-file checkpoint whose
   architecture (read from its keys, as loading does) is the configured one; a model handed over by a
   host is taken as it is;
3. the LoRA to start from: readable, every value finite;
4. every reward and perception model: a known kind whose files exist; with ``load_models`` loaded on the
   CPU, one at a time, by its kind and in its dtype (as loadable as it gets), and the stage-2
   discriminator's trainable part counted (none: a statistic cannot be a discriminator);
5. the data the enabled feedback terms need: the image folder or source and its first item, the masks
   each PeFL task needs (and, where the model tells, that their labels are within its classes), prompts;
6. the peak memory of one optimizer step on the chosen device: the bytes of every weight, LoRA,
   gradient and optimizer state the run keeps there (exact, from parameter counts and dtypes), plus
   the activations of one step, ``batch × (fixed + per_pixel × H × W)``, with the two coefficients per
   architecture and stage measured by ``bench/real_size.py`` (docs/benchmarks.md says how).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from ..data import DataError, collate, image_dataset, load_prompts
from ..diffusion.loading import ModelLoadError, detect_architecture, empty_components, resolve_model_path, shipped_config_dir
from ..feedback.discriminator import trainable_parameter_count
from ..feedback.loading import DTYPES, load_perception_model, load_reward_model
from ..feedback.registry import PERCEPTION_MODELS, REWARD_MODELS
from ..files import check_output_file, check_output_folder
from ..lora.kohya import LoRAFileError, check_lora_file
from ..lora.peft import LORA_LAYER_TYPES, target_pattern
from ..weight_files import WEIGHT_SUFFIXES
from .terms import feedback_terms, needs_real_images

GIB = 2**30
#: Bytes a trainable fp32 parameter keeps on the device: weight, gradient and AdamW's two moments.
TRAINABLE_BYTES = 16

#: Activations of one step at batch 1 with gradient checkpointing, the recipe's feedback models
#: (docs/recipes.md) and their defaults: ``(fixed bytes, bytes per image pixel)`` per architecture
#: and stage, fitted to two resolutions by ``bench/real_size.py`` (its report prints them; docs/benchmarks.md;
#: the torch CPU allocator's peak above the step's start, which is what CUDA's
#: ``max_memory_allocated`` counts). Without checkpointing the per-pixel term is larger by
#: :data:`NO_CHECKPOINTING_FACTOR` (the UNet's and the VAE decoder's measured extras added).
ACTIVATIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("sd15", "1"): (0.74 * GIB, 5.16e3),
    ("sd15", "2"): (0.71 * GIB, 2.23e3),
    ("sdxl", "1"): (0.78 * GIB, 5.05e3),
    ("sdxl", "2"): (0.82 * GIB, 2.11e3),
}
NO_CHECKPOINTING_FACTOR = {"sd15": 3.6, "sdxl": 4.1}
#: What the CUDA runtime holds beside torch's tensors (context, cuBLAS/cuDNN workspaces), and the
#: caching allocator's usual excess of reserved over allocated memory.
CUDA_CONTEXT_BYTES = 0.6 * GIB
ALLOCATOR_SLACK = 0.10
#: The trainer moves the text encoders off the device (it caches each prompt's embedding once).
TEXT_ENCODERS_ON_DEVICE = False


#: Kinds whose ``path`` names no file (an importable factory).
NOT_A_FILE_KINDS = ("module",)


class PreflightError(ValueError):
    """A run that cannot start as configured; the message lists every problem and its fix."""


@dataclass(frozen=True)
class LoadedFeedback:
    """What preflight learned of a reward or perception model by loading it."""

    bytes: int
    parameters: int
    classes: int | None  # a segmenter's class count, where it tells
    discriminator_parameters: int | None = None  # stage 2's discriminator source: what of it trains


@dataclass
class Check:
    status: str  # "ok", "warning" or "error"
    subject: str
    detail: str


@dataclass
class MemoryEstimate:
    """Predicted peak of tensor memory on ``device`` during one optimizer step, by part."""

    device: str
    parts: dict[str, int]  # bytes kept on the device for the whole run, by what holds them
    activations: int | None  # the step's peak above them; None for a model of other widths than SD1.5/SDXL (not calibrated)
    capacity: int | None  # the device's memory (CPU: what is available now), if known

    @property
    def static(self) -> int:
        return sum(self.parts.values())

    @property
    def peak(self) -> int:
        return self.static + (self.activations or 0)

    @property
    def needed(self) -> int:
        """The peak plus what the device needs beside torch's tensors (CUDA context, allocator cache)."""
        if self.device.startswith("cuda"):
            return int(self.peak * (1 + ALLOCATOR_SLACK) + CUDA_CONTEXT_BYTES)
        return self.peak

    @property
    def fits(self) -> bool | None:
        if self.capacity is None:
            return None
        if self.activations is None:  # the weights alone are a lower bound: only a sure misfit is one
            return False if self.needed > self.capacity else None
        return self.needed <= self.capacity

    def render(self) -> str:
        lines = [f"predicted peak memory of one step on {self.device}: {self.peak / GIB:.2f} GiB of tensors"]
        for name, size in self.parts.items():
            lines.append(f"  {name:<38} {size / GIB:7.2f} GiB")
        if self.activations is None:
            lines.append(f"  {'activations of one step':<38}   not predicted: measured only for SD1.5 and SDXL widths")
        else:
            lines.append(f"  {'activations of one step':<38} {self.activations / GIB:7.2f} GiB")
        if self.device.startswith("cuda"):
            lines.append(f"  with the CUDA context and allocator cache: ~{self.needed / GIB:.2f} GiB")
        if self.fits is not None:
            lines.append(f"  {'fits' if self.fits else 'does NOT fit'} in {self.capacity / GIB:.2f} GiB ({'free now' if self.device == 'cpu' else 'the device'})")
        return "\n".join(lines)


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    memory: MemoryEstimate | None = None

    def add(self, status: str, subject: str, detail: str) -> None:
        self.checks.append(Check(status, subject, detail))

    @property
    def errors(self) -> list[Check]:
        return [c for c in self.checks if c.status == "error"] + (
            [Check("error", "memory", self.memory.render())] if self.memory is not None and self.memory.fits is False else []
        )

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        marks = {"ok": "ok  ", "warning": "WARN", "error": "FAIL"}
        lines = [f"[{marks[c.status]}] {c.subject}: {c.detail}" for c in self.checks]
        if self.memory is not None:
            lines += ["", self.memory.render()]
        lines += ["", "ready to train" if self.ok else f"{len(self.errors)} problem(s): fix them before training"]
        return "\n".join(lines)

    def raise_for_errors(self, names: Mapping[str, str] | None = None) -> None:
        """``names``: what a host's UI calls a config key (``{"data.images": "image_folder"}``), shown first."""
        def subject(key: str) -> str:
            return f"{names[key]} ({key})" if names and key in names else key

        if not self.ok:
            raise PreflightError("\n".join(f"{subject(c.subject)}: {c.detail}" for c in self.errors))  # a line per problem, the first first


def check_before_training(config: TrainConfig, *, denoiser=None, device: str | torch.device | None = None, prompts_given: bool = False,
                          names: Mapping[str, str] | None = None) -> PreflightReport:
    """What ``unifl train``, the ComfyUI node and the A1111 tab run before a run starts: :func:`preflight`
    without loading the feedback models; raises :class:`PreflightError` listing every problem, each under the
    host's ``names`` for its config key where it has one. Returns the report (its memory estimate is worth a log line)."""
    report = preflight(config, denoiser=denoiser, device=device, load_models=False, prompts_given=prompts_given)
    report.raise_for_errors(names)
    return report


def preflight(config: TrainConfig, *, denoiser=None, device: str | torch.device | None = None, load_models: bool = True, prompts_given: bool = False) -> PreflightReport:
    """Check ``config`` (and a host's ``denoiser``, if it hands one over) before training; see the module docstring.

    ``device``: where the run will train (default: CUDA if available, else the CPU). ``load_models=False``
    checks the feedback models' kinds and files without loading them (then their memory is not counted).
    ``prompts_given``: a host hands the trainer its prompts itself (not through ``data.prompts``).
    """
    report = PreflightReport()
    try:
        config.validate()
    except ConfigError as err:
        report.add("error", "config", str(err))
        return report
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_outputs(config, report)
    model_parts = _check_base_model(config, denoiser, report)
    _check_lora_start(config, report)
    feedback = _check_feedback_models(config, report) if load_models else _check_feedback_files(config, report)
    _check_data(config, feedback or {}, report, prompts_given)
    _check_dtypes(config, device, report)
    if model_parts is None and denoiser is None and config.model.architecture in ("sd15", "sdxl"):
        model_parts = empty_components(shipped_config_dir(config.model.architecture))  # the memory still says what a GPU needs
    if model_parts is not None:
        report.memory = predict_memory(config, model_parts, feedback, device, held_by_host=denoiser is not None,
                                       unet_widths=getattr(denoiser, "unet_widths", None))
    return report


# -- the parts ------------------------------------------------------------------------------------------


def _check_outputs(config: TrainConfig, report: PreflightReport) -> None:
    """The run folder is a folder (or can be made one) and the LoRA's name fits the file system, with the
    temporary file it is written as first: found now, not when the trained LoRA is published."""
    run_dir = Path(config.logging.output_dir)
    try:
        check_output_folder(run_dir, "")
    except NotADirectoryError as err:
        report.add("error", "logging.output_dir", str(err))
        return
    try:
        check_output_file(run_dir / f"{config.logging.output_name}.safetensors", "")
    except (OSError, ValueError) as err:
        report.add("error", "logging.output_name", str(err))


def _check_base_model(config: TrainConfig, denoiser, report: PreflightReport) -> dict[str, nn.Module] | None:
    """The model's components (meta-device copies when read from configs), or None when it cannot be used."""
    if denoiser is not None:
        parts = {"unet": denoiser.lora_target}
        for name in ("vae", "vae_model"):
            if isinstance(getattr(denoiser, name, None), nn.Module):
                parts["vae"] = getattr(denoiser, name)
        for index, encoder in enumerate(getattr(denoiser, "text_encoders", []) or []):
            parts[f"text_encoder{'' if index == 0 else f'_{index + 1}'}"] = encoder
        report.add("ok", "model", f"{getattr(denoiser, 'architecture', 'a')} model handed over by the host")
        return parts
    try:
        found = detect_architecture(config.model.path)  # first: it names an empty path as such
        path = resolve_model_path(config.model.path)
    except ModelLoadError as err:
        report.add("error", "model.path", str(err))
        return None
    architecture = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl"}.get(found, found)
    if architecture not in ("sd15", "sdxl"):
        report.add("error", "model.path", f"{path}: is {found}; UniFL trains SD1.x and SDXL text-to-image models")
        return None
    if config.model.architecture and config.model.architecture != architecture:
        report.add("error", "model.architecture", f"is {config.model.architecture!r} but {path} holds an {architecture} model: set model.architecture = {architecture!r} (or leave it empty)")
        return None
    report.add("ok", "model", f"{path}: {architecture} ({'diffusers folder' if path.is_dir() else 'single-file checkpoint'})")
    return empty_components(path if path.is_dir() else shipped_config_dir(architecture))


def _check_lora_start(config: TrainConfig, report: PreflightReport) -> None:
    if not config.lora.init_from:
        return
    try:
        check_lora_file(config.lora.init_from)
    except (LoRAFileError, OSError) as err:
        report.add("error", "lora.init_from", str(err))
        return
    report.add("ok", "lora.init_from", f"{config.lora.init_from}: readable, every value finite")


def _feedback_tables(config: TrainConfig):
    """``(name, table key, spec, registry, loader)`` of every reward and perception model, in config order."""
    for table, registry, load, specs in (("rewards", REWARD_MODELS, load_reward_model, config.rewards), ("perception", PERCEPTION_MODELS, load_perception_model, config.perception)):
        for index, spec in enumerate(specs):
            yield f"{table}[{index}] {spec.kind} ({spec.aspect})", f"{table}[{index}]", spec, registry, load


def _check_feedback_files(config: TrainConfig, report: PreflightReport) -> None:
    """Each feedback model's kind is known and the files its path names exist (nothing loaded)."""
    for name, _, spec, registry, _ in _feedback_tables(config):
        if spec.kind not in registry:
            report.add("error", name, f"unknown kind {spec.kind!r}; known: {', '.join(sorted(registry))}")
            continue
        missing = [] if spec.kind in NOT_A_FILE_KINDS else [file for file in named_files(spec.path) if not Path(file).expanduser().exists()]
        for file in missing:
            report.add("error", name, f"{file} does not exist; put the model there or fix its path")
        if not missing:
            report.add("ok", name, f"{spec.path}: present (not loaded)" if named_files(spec.path) else "a known kind that needs no file")


def _check_feedback_models(config: TrainConfig, report: PreflightReport) -> dict[str, LoadedFeedback]:
    """Loads each reward and perception model on the CPU, one at a time."""
    loaded = {}
    adversarial = "adversarial" in feedback_terms(config)
    for name, key, spec, _, load in _feedback_tables(config):
        dtype = spec.resolved_dtype(config.optim.mixed_precision)
        try:
            model = load(spec.kind, spec.path, dtype=dtype)
        except (ValueError, ImportError, OSError, RuntimeError) as err:
            report.add("error", name, str(err))
            continue
        stored = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}) or ["no weights"]
        count = sum(p.numel() for p in model.parameters())
        report.add("ok", name, f"{spec.path or '(no file)'}: {count / 1e6:.1f} M parameters, stored as {'/'.join(stored)}")
        discriminator = None
        if adversarial and key.startswith("rewards") and spec.aspect == config.adversarial.discriminator_from:
            try:
                discriminator = trainable_parameter_count(model, config.adversarial.discriminator_trainable, name)
            except ValueError as err:
                report.add("error", "adversarial.discriminator_trainable", str(err))
            if discriminator == 0:
                report.add("error", "adversarial.discriminator_from", f"{name} has no parameters to train as stage 2's discriminator (a statistic, not a learned model): "
                           "initialise it from a learned reward model's aspect")
        loaded[key] = LoadedFeedback(tensor_bytes(model), count, _class_count(model), discriminator)
        del model
    return loaded


def named_files(path: str) -> list[str]:
    """The files and folders a model ``path`` names: the whole path, or each part of ``"clip=…;head=…"``.

    Only what reads as a path (a folder separator or a weights suffix) counts: the same string also
    carries seeds (``random-features``) and layer lists (``layers=relu1_2,relu2_2``).
    """
    items = [item.strip() for item in (path or "").split(";") if item.strip()]
    named = [item.partition("=")[2].strip() for item in items] if items and "=" in items[0] and "/" not in items[0].partition("=")[0] else items
    return [value for value in named if value and (os.sep in value or "/" in value or value.endswith(WEIGHT_SUFFIXES))]


def _class_count(model: nn.Module) -> int | None:
    """How many classes a segmenter tells labels apart by, where it says (Mask R-CNN, DeepLabV3)."""
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Conv2d):
        return int(classifier[-1].out_channels)
    return None


def _check_data(config: TrainConfig, feedback: dict[str, LoadedFeedback], report: PreflightReport, prompts_given: bool) -> None:
    data, terms = config.data, feedback_terms(config)
    uses_pefl, needs_images = "PeFL" in terms, needs_real_images(config)
    if "aesthetic" in terms and not (data.prompts or data.images or prompts_given):
        report.add("error", "data.prompts", "aesthetic feedback needs prompts: set data.prompts to a prompt file (one per line) or data.images to captioned images")
    if data.prompts:
        try:
            prompts = load_prompts(data.prompts)
            report.add("ok", "data.prompts", f"{data.prompts}: {len(prompts)} prompts")
        except (OSError, DataError, ValueError) as err:
            report.add("error", "data.prompts", str(err))
    if not data.images:
        if needs_images:
            report.add("error", "data.images", "this run needs real images (PeFL, the adversarial stage or the denoising regulariser): set data.images")
        return
    try:
        images = image_dataset(data.images, data.resolution, data.source_images, data.source_seed)
        if len(images) == 0:
            raise DataError(f"{data.images}: holds no images with captions")
        first = collate([images[0]])
    except (OSError, DataError, ValueError) as err:
        report.add("error", "data.images", str(err))
        return
    report.add("ok", "data.images", f"{data.images}: {len(images)} images at {data.resolution} px")
    if not uses_pefl:
        return
    for index, spec in enumerate(config.perception):
        key = f"perception[{index}]"
        classes = feedback[key].classes if key in feedback else None
        if spec.aspect == "structure":
            if "targets" not in first:
                report.add("error", key, f"structure PeFL needs <image>.instances.png + .instances.json beside the images in {data.images} (docs/data-format.md)")
            elif classes is not None and any(int(t["labels"].max()) >= classes or int(t["labels"].min()) < 0 for t in first["targets"] if t["labels"].numel()):
                report.add("error", key, f"the first image's instance labels {first['targets'][0]['labels'].tolist()} are outside the model's {classes} classes (docs/data-format.md: the label space)")
        elif spec.aspect == "layout":
            if "semantic_mask" not in first:
                report.add("error", key, f"layout PeFL needs <image>.semantic.png beside the images in {data.images} (docs/data-format.md)")
            elif classes is not None:
                labels = first["semantic_mask"][first["semantic_mask"] != 255]
                if labels.numel() and int(labels.max()) >= classes:
                    report.add("error", key, f"the first image's semantic mask has class {int(labels.max())}, beyond the model's {classes} classes (255 = ignore; docs/data-format.md)")


def _check_dtypes(config: TrainConfig, device: str, report: PreflightReport) -> None:
    m, mixed = config.model, config.optim.mixed_precision
    feedback = ", ".join(f"{s.kind} {s.resolved_dtype(mixed)}" for s in [*config.rewards, *config.perception]) or "none"
    report.add("ok", "dtypes", f"UNet and text encoders {m.dtype}, VAE {m.vae_dtype}, LoRA fp32, autocast {mixed}; feedback models: {feedback}")
    if m.vae_dtype == "fp16" and (m.architecture == "sdxl" or config.data.resolution >= 1024):
        report.add("warning", "model.vae_dtype", "SDXL's VAE overflows in fp16 (black or NaN images): use 'fp32' or 'bf16'")
    uses_bf16 = "bf16" in (m.dtype, m.vae_dtype, mixed) or any(s.resolved_dtype(mixed) == "bf16" for s in [*config.rewards, *config.perception])
    if device.startswith("cuda") and torch.cuda.is_available() and uses_bf16 and not torch.cuda.is_bf16_supported():
        report.add("error", "dtypes", f"{torch.cuda.get_device_name(torch.device(device))} has no bf16: set model.dtype and optim.mixed_precision to 'fp16'")


# -- memory ---------------------------------------------------------------------------------------------


def tensor_bytes(module: nn.Module, on: str | None = None) -> int:
    """Bytes of a module's parameters and buffers (shared storages once); with ``on``, only those on that device type."""
    seen, total = set(), 0
    for tensor in (*module.parameters(), *module.buffers()):
        if on is not None and tensor.device.type != on:
            continue
        key = (tensor.device.type, tensor.data_ptr()) if not tensor.is_meta else id(tensor)
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def _stored_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of ``module``'s tensors once stored in ``dtype`` (floating-point ones; others as they are)."""
    return sum(t.numel() * (torch.finfo(dtype).bits // 8 if t.is_floating_point() else t.element_size()) for t in (*module.parameters(), *module.buffers()))


def lora_parameter_count(unet: nn.Module, rank: int, targets: str) -> int:
    """Parameters of the LoRA the trainer adds (:func:`~..lora.peft.add_lora`): ``rank × (fan-in + out)`` per layer."""
    total = 0
    for name, module in unet.named_modules():
        if isinstance(module, LORA_LAYER_TYPES) and re.fullmatch(target_pattern(targets), name):
            fan_in = module.weight[0].numel()  # in × k × k for a convolution: lora_A has the layer's kernel
            total += rank * (fan_in + module.weight.shape[0])
    return total


def predict_memory(config: TrainConfig, model_parts: dict[str, nn.Module], feedback: dict[str, LoadedFeedback] | None, device: str,
                   held_by_host: bool = False, unet_widths: tuple[list[int], int | None] | None = None) -> MemoryEstimate:
    """The peak tensor memory of one optimizer step (see the module docstring). ``held_by_host``: the model parts
    are a host's loaded model, so on the CPU their weights already sit in RAM and are no longer free.
    ``unet_widths``: ``(block_out_channels, cross_attention_dim)`` of a UNet without a diffusers ``config``, as a
    host's denoiser says them (``unet_widths``); they decide whether the activation figures apply."""
    weights_dtype, vae_dtype = DTYPES[config.model.dtype], DTYPES[config.model.vae_dtype]
    parts = {f"UNet ({config.model.dtype})": _stored_bytes(model_parts["unet"], weights_dtype)}
    if "vae" in model_parts:
        parts[f"VAE ({config.model.vae_dtype})"] = _stored_bytes(model_parts["vae"], vae_dtype)
    encoders = [m for name, m in model_parts.items() if name.startswith("text_encoder")]
    if encoders and TEXT_ENCODERS_ON_DEVICE:
        parts[f"text encoders ({config.model.dtype})"] = sum(_stored_bytes(m, weights_dtype) for m in encoders)
    lora = lora_parameter_count(model_parts["unet"], config.lora.rank, config.lora.targets)
    parts[f"LoRA, its gradients and AdamW ({lora / 1e6:.1f} M)"] = lora * TRAINABLE_BYTES
    if feedback:
        parts["reward and perception models"] = sum(f.bytes for f in feedback.values())
        trained = sum(f.discriminator_parameters or 0 for f in feedback.values())
        if trained:  # a head-only discriminator shares the frozen trunk: only what trains is extra
            parts[f"discriminator: its trainable part in fp32 + AdamW ({trained / 1e6:.1f} M)"] = trained * TRAINABLE_BYTES
    calibrated = _calibrated_architecture(unet_widths or _diffusers_widths(model_parts["unet"]))
    activations = None
    if calibrated is not None:
        fixed, per_pixel = ACTIVATIONS[(calibrated, config.stage)]
        if not config.optim.gradient_checkpointing:
            per_pixel *= NO_CHECKPOINTING_FACTOR[calibrated]
        activations = int(config.optim.batch_size * (fixed + per_pixel * config.data.resolution**2))
    return MemoryEstimate(device, parts, activations, _capacity(device, resident=list(model_parts.values()) if held_by_host else []))


def _diffusers_widths(unet: nn.Module) -> tuple[list[int], int | None] | None:
    """``(block_out_channels, cross_attention_dim)`` of a diffusers UNet (its ``config``); ``None`` for a UNet
    without one (a host's: its denoiser says them as ``unet_widths``)."""
    config = getattr(unet, "config", None)
    if config is None:
        return None
    return list(getattr(config, "block_out_channels", ())), getattr(config, "cross_attention_dim", None)


def _calibrated_architecture(widths: tuple[list[int], int | None] | None) -> str | None:
    """``"sd15"``/``"sdxl"`` when the UNet has that model's widths (what the activation figures were measured on)."""
    for architecture in ("sd15", "sdxl"):
        shipped = json.loads((shipped_config_dir(architecture) / "unet" / "config.json").read_text(encoding="utf-8"))
        if widths is not None and (list(widths[0]), widths[1]) == (shipped["block_out_channels"], shipped["cross_attention_dim"]):
            return architecture
    return None


def _capacity(device: str, resident: list[nn.Module]) -> int | None:
    """The device's memory: a GPU's total, or on the CPU what the OS could give this process now (MemAvailable)
    plus what the ``resident`` modules already hold in RAM. A host hands over a model it has loaded; the
    estimate counts those weights among the needs, so free RAM alone would count them twice and refuse a
    run that fits."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    available = ram_available()
    if available is None:
        return None
    return available + sum(tensor_bytes(module, on="cpu") for module in resident)


def ram_available() -> int | None:
    """The memory the OS could give this process now (Linux's MemAvailable); None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
