"""Running core's ``UniFLTrainer`` inside a ComfyUI node: config from node inputs, callbacks to ComfyUI's
progress bar and interrupt, the LoRA into ``models/loras``, memory back to ComfyUI afterwards.

No loss, sampler or LoRA math lives here; everything is :mod:`unifl.core`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

log = logging.getLogger("unifl")
REQUIRED_MODULES = ("peft", "accelerate", "safetensors")


@dataclass
class TrainRequest:
    stage: str = "1"
    lora_name: str = "unifl/unifl"
    prompts: str = ""
    image_folder: str = ""
    steps: int = 500
    learning_rate: float = 5e-5
    rank: int = 16
    alpha: float = 16.0
    lora_targets: str = "attention"
    resolution: int = 512
    batch_size: int = 1
    gradient_accumulation: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = True
    init_lora: str | None = None
    overwrite: bool = False
    extra_settings: str = ""
    rewards: list = field(default_factory=list)
    perception: list = field(default_factory=list)
    #: The checkpoint file the MODEL was loaded from, when the graph says (LoRA metadata ``ss_sd_model_name``).
    base_model: str = ""


def check_dependencies() -> None:
    """Fail at execute time, with the fix, when a training dependency is missing (never at ComfyUI start)."""
    import importlib.util

    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pack = Path(__file__).resolve().parent.parent
        raise ImportError(f"UniFL training needs {', '.join(missing)}: run `python -m pip install -r {pack / 'requirements.txt'}` with ComfyUI's Python, then restart ComfyUI")


def extra_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


#: Images a registered source (``image_folder = "pocket"``, for trying the node) makes for a ComfyUI run. Its
#: captions are encoded by the CLIP model before training starts (up to ``denoiser.UPFRONT_PROMPTS``, so it
#: usually never loads beside the UNet): 256 took several minutes in ComfyUI on a busy 2-core CPU (fp16 text
#: encoder). ``extra_settings`` may ask for more (``data.source_images=4096``).
SOURCE_IMAGES = 64


#: The node's inputs by the config key they set, for naming them in the pre-run check's messages.
NODE_INPUTS = {
    "data.images": "image_folder", "data.prompts": "prompts", "data.resolution": "resolution", "lora.init_from": "init_lora",
    "optim.mixed_precision": "mixed_precision", "optim.batch_size": "batch_size", "optim.gradient_checkpointing": "gradient_checkpointing",
}


def image_sources() -> list[str]:
    """Names of the registered procedural image sources (the pocket world's ``pocket``)."""
    from ..core.data import IMAGE_SOURCES
    from .feedback_models import ensure_kinds_registered

    ensure_kinds_registered()
    return sorted(IMAGE_SOURCES)


def missing_inputs(image_folder: str, init_lora: str | None) -> str | None:
    """What the training node's file inputs lack (``None``: nothing), one line: checked when the prompt is queued."""
    problems = []
    source = image_folder.strip()
    if source and source not in image_sources():
        try:
            paths.input_folder(image_folder)
        except (ValueError, FileNotFoundError) as error:
            problems.append(f"image_folder: {error}")
    if init_lora:
        problems += [f"init_lora: {m}" for m in [paths.missing_lora(init_lora)] if m]
    return "; ".join(problems) or None


def pair_file(pairs: str) -> Path:
    """The preference-pair file a ``pairs`` input names (a ``pairs.jsonl`` inside a folder), inside ComfyUI's folders."""
    source = paths.input_path(pairs)
    if source.is_dir():
        source = source / "pairs.jsonl"
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist; a pairs folder holds pairs.jsonl (docs/preference-pairs.md)")
    return source


def build_config(request: TrainRequest, architecture: str, run_dir: Path, lora_stem: str, image_folder: Path | str | None, init_meta: dict | None):
    """The core ``TrainConfig``: preset of the architecture ← node inputs ← ``extra_settings`` lines.

    ``image_folder`` is a folder, the name of a registered image source (``"pocket"``) or ``None``.
    """
    from ..core.config import ConfigError, TrainConfig, from_dict, merge, parse_override, preset_dict

    lora = {"rank": request.rank, "alpha": float(request.alpha), "targets": request.lora_targets}
    if init_meta is not None:  # continue a UniFL LoRA: its shape wins
        lora = {"rank": int(init_meta["ss_network_dim"]), "alpha": float(init_meta["ss_network_alpha"]), "targets": init_meta.get("unifl.lora_targets", request.lora_targets)}
    data = {"images": str(image_folder) if image_folder else "", "resolution": request.resolution}
    if isinstance(image_folder, str):
        data["source_images"] = SOURCE_IMAGES
    inputs = {
        "stage": request.stage,
        "lora": lora,
        "data": data,
        "optim": {
            "learning_rate": float(request.learning_rate), "max_steps": request.steps, "batch_size": request.batch_size,
            "gradient_accumulation_steps": request.gradient_accumulation, "seed": request.seed,
            "mixed_precision": request.mixed_precision, "gradient_checkpointing": bool(request.gradient_checkpointing),
        },
        "logging": {"output_dir": str(run_dir), "output_name": lora_stem, "tensorboard": False},
        "rewards": [m.spec() for m in request.rewards],
        "perception": [m.spec() for m in request.perception],
    }
    aspects = [m.aspect for m in request.rewards]
    if len(set(aspects)) != len(aspects):
        raise ValueError(f"two reward models judge the same aspect ({', '.join(sorted({a for a in aspects if aspects.count(a) > 1}))}); give each a different aspect on its loader")
    merged = merge(preset_dict("sdxl" if architecture == "sdxl" else "sd15", request.stage), inputs)
    for line in extra_lines(request.extra_settings):
        merged = merge(merged, parse_override(line))
    try:
        return from_dict(TrainConfig, merged).validate()
    except ConfigError as error:
        raise ConfigError(f"UniFL Train LoRA: {error} (node inputs and extra_settings)") from None


def confine_to_comfyui(config):
    """The node's config may name only ComfyUI's folders, write its run only into ``output/unifl_runs``, and
    use ``kind = "module"`` only where the owner set ``UNIFL_ALLOW_MODULE_KINDS=1`` (``extra_settings`` and
    shared workflows are text from strangers)."""
    from ..core.training.confinement import UIConfinement, confine

    return confine(config, UIConfinement(
        readable=tuple(paths.comfyui_folders()), runs=paths.runs_folder(), allow_module_kinds=paths.module_kinds_allowed(),
        how_to_allow_modules=f"the owner of this ComfyUI can allow it by starting ComfyUI with {paths.ALLOW_MODULE_KINDS}=1", where="ComfyUI"))


def place_lora(source: Path, target: Path, overwrite: bool) -> Path:
    """Copy the exported LoRA into the LoRA folder atomically; a name taken meanwhile gets a number."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        n = 2
        while target.with_name(f"{target.stem}_{n}.safetensors").exists():
            n += 1
        renamed = target.with_name(f"{target.stem}_{n}.safetensors")
        log.warning("UniFL: %s appeared during training; saving the LoRA as %s instead", target, renamed.name)
        target = renamed
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a models folder is often shared with other tools
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def loss_curve_image(history: list[tuple[int, dict]], title: str):
    """A ComfyUI IMAGE ``[1, H, W, 3]`` of the logged losses (one line per term)."""
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from PIL import Image

    keys = sorted({k for _, logs in history for k in logs if k not in ("lr", "grad_norm", "seconds")})
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for key in keys:
        points = [(step, logs[key]) for step, logs in history if key in logs]
        ax.plot([s for s, _ in points], [v for _, v in points], label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    if keys:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no steps logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    image = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(image)[None]


def train_lora(model, clip, vae, request: TrainRequest):
    """Train, save into ``models/loras``, and return ``(patched MODEL, lora name, loss-curve IMAGE)``."""
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils
    import torch

    check_dependencies()
    from ..core.data import image_dataset
    from ..core.lora.kohya import read_lora_metadata
    from ..core.training.preflight import check_before_training
    from ..core.training.trainer import TrainerCallbacks, UniFLTrainer
    from .denoiser import ComfyDenoiser, architecture_of, release

    architecture = architecture_of(model)
    if clip is None:
        raise ValueError("clip input is None: this checkpoint has no text encoder; load one with a CLIP loader")
    lora_path = paths.new_lora_path(request.lora_name, request.overwrite)  # refused before any work
    run_dir = paths.run_folder(lora_path)
    source = request.image_folder.strip()
    image_folder = source if source in image_sources() else paths.input_folder(request.image_folder)
    init_path, init_meta = None, None
    if request.init_lora:
        init_path = paths.lora_file(request.init_lora)
        init_meta = read_lora_metadata(init_path)
        if "ss_network_dim" not in init_meta or "ss_network_alpha" not in init_meta:
            raise ValueError(f"init_lora {init_path} has no ss_network_dim/ss_network_alpha metadata; UniFL continues only its own LoRAs")
    config = build_config(request, architecture, run_dir, lora_path.stem, image_folder, init_meta)
    if init_path is not None:
        config.lora.init_from = str(init_path)  # the trainer loads it through the denoiser's LDM name map
    confine_to_comfyui(config)

    data = config.data
    dataset = image_dataset(data.images, data.resolution, data.source_images, data.source_seed) if data.images else None
    prompts = [line.strip() for line in request.prompts.splitlines() if line.strip()] or None
    texts = list(prompts or []) + (dataset.captions() if dataset is not None else [])
    texts = list(config.logging.validation_prompts or (prompts or texts)[:4]) + texts  # every validation encoded before training

    total = config.optim.max_steps
    bar = comfy.utils.ProgressBar(total)
    history: list[tuple[int, dict]] = []

    def on_progress(step: int, _total: int, logs: dict) -> None:
        history.append((step, {k: float(v) for k, v in logs.items()}))
        if not mm.processing_interrupted():  # else the progress hook would raise before the clean stop
            bar.update_absolute(step, total)

    def on_preview(step: int, images: list) -> None:
        if images and not mm.processing_interrupted():
            bar.update_absolute(step, total, preview=("JPEG", images[0], 512))

    callbacks = TrainerCallbacks(on_progress=on_progress, on_preview=on_preview, should_stop=mm.processing_interrupted)
    denoiser = trainer = result = None
    try:
        with torch.inference_mode(False), torch.enable_grad():
            denoiser = ComfyDenoiser(model, clip, vae, texts)
            denoiser.source = request.base_model
            report = check_before_training(config, denoiser=denoiser, device=mm.get_torch_device(), prompts_given=bool(prompts), names=NODE_INPUTS)
            if report.memory is not None:
                log.info("UniFL: %s", report.memory.render())
            trainer = UniFLTrainer(config, denoiser=denoiser, callbacks=callbacks, image_dataset=dataset, prompts=prompts)
            result = trainer.train()
    finally:
        trainer = None  # its optimizer, LoRA and activations go before the memory is handed back (also on an error)
        release(denoiser)
        release_host_memory()
    if result.stopped_early:
        log.warning("UniFL: training cancelled at step %d; the run folder %s keeps its checkpoint and LoRA", result.steps, run_dir)
        mm.throw_exception_if_processing_interrupted()
    saved = place_lora(result.lora_path, lora_path, request.overwrite)
    name = paths.relative_lora_name(saved)
    log.info("UniFL: saved %s (%d steps) for LoraLoader as %s", saved, result.steps, name)
    lora = comfy.utils.load_torch_file(str(saved), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    curve = loss_curve_image(history, f"UniFL stage {config.stage}: {name}")
    return patched, name, curve


def release_host_memory() -> None:
    """Once a job's tensors are out of reach: ComfyUI's cache, then the heap glibc keeps (``core.memory``), which a
    host that lives for days otherwise never gets back."""
    import gc

    import comfy.model_management as mm

    from ..core.memory import release_freed_memory

    gc.collect()
    mm.soft_empty_cache()
    release_freed_memory()


def train_reward_models(pairs: str, backbone: str, output_folder: str, steps: int, learning_rate: float, batch_size: int,
                        val_fraction: float, global_model: bool, seed: int, overwrite: bool) -> str:
    """Core's ``train_aspect_models`` on a pair file from ComfyUI's input folder, into ``models/unifl/rewards``."""
    import comfy.model_management as mm
    import folder_paths
    import torch

    from ..core.training.aspect_rewards import train_aspect_models
    from .feedback_models import ensure_kinds_registered

    ensure_kinds_registered()  # the 'pocket' backbone, also when this is the first UniFL node since ComfyUI started
    source = pair_file(pairs)
    name = output_folder.strip().strip("/")
    if not name or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"output_folder {output_folder!r}: give a sub-folder name such as 'my_rewards'")
    out_dir = Path(folder_paths.get_folder_paths(paths.REWARD_FOLDER)[0]) / name
    mm.throw_exception_if_processing_interrupted()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            results = train_aspect_models(source, out_dir, backbone=backbone.strip(), steps=steps, lr=learning_rate, batch_size=batch_size,
                                          val_fraction=val_fraction, include_global=global_model, seed=seed, overwrite=overwrite,
                                          should_stop=mm.processing_interrupted)
    finally:
        release_host_memory()
    if mm.processing_interrupted():
        log.warning("UniFL: reward training cancelled; finished aspect models kept: %s", ", ".join(r.aspect for r in results) or "none")
        mm.throw_exception_if_processing_interrupted()
    lines = ["| aspect | train pairs | held-out pairs | held-out accuracy | α | file |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.aspect} | {r.pairs} | {r.val_pairs} | {r.val_accuracy:.3f} | {r.alpha:.4g} | {name}/{r.path.name} |" for r in results]
    return "\n".join(lines)
