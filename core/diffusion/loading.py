"""Load Stable Diffusion 1.x and SDXL models from local files only, never from a model hub.

Users point UniFL at what they already have: a diffusers pipeline folder, or a single-file checkpoint
in the original LDM/SGM layout from ComfyUI's ``models/checkpoints`` or A1111's
``models/Stable-diffusion``. diffusers converts single files, but needs a diffusers-format folder of
component configs to know the model's shape; by default it would download one. We ship those configs
(``core/diffusion/model_configs/sd15`` and ``sdxl``, plus one copy of CLIP's BPE vocabulary) and pass
``local_files_only=True`` everywhere, so loading works air-gapped with ``HF_HUB_OFFLINE=1``.

Every failure a user can cause (wrong path, truncated download, unsupported model family, a pickle
that is more than tensors) surfaces as one :class:`ModelLoadError` naming the file and the fix.
Checkpoints are read as safetensors or with ``torch.load(weights_only=True)``; nothing else is unpickled.
"""

from __future__ import annotations

import json
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..weight_files import read_pickled_tensors
from .diffusers_denoiser import DiffusersDenoiser

MODEL_CONFIGS_DIR = Path(__file__).resolve().parent / "model_configs"
#: One shared copy of CLIP's vocabulary; tokenizer folders in the shipped configs hold only settings.
CLIP_VOCAB_DIR = MODEL_CONFIGS_DIR / "clip_tokenizer"
#: Architectures a single-file checkpoint may have (shipped configs exist for these).
SINGLE_FILE_ARCHITECTURES = ("sd15", "sdxl")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")

# A key prefix that only one model family's text encoder uses, checked in this order.
_TEXT_ENCODER_PREFIXES = (
    ("conditioner.embedders.1.model.", "sdxl"),
    ("conditioner.embedders.0.model.", "sdxl-refiner"),
    ("cond_stage_model.transformer.", "sd15"),
    ("cond_stage_model.model.", "sd2"),
)
_UNSUPPORTED_SINGLE_FILE = {
    "sd2": "Stable Diffusion 2.x single-file checkpoints are not supported (whether one predicts epsilon or v "
    "cannot be read from its weights). Convert it to a diffusers folder with diffusers' "
    "scripts/convert_original_stable_diffusion_to_diffusers.py and pass that folder instead.",
    "sdxl-refiner": "this is an SDXL refiner (img2img only), which UniFL does not train. Use an SDXL base checkpoint.",
}
_UNET_INPUT_KEY = "model.diffusion_model.input_blocks.0.0.weight"
_PIPELINE_ARCHITECTURES = {"StableDiffusionPipeline": "sd15", "StableDiffusionXLPipeline": "sdxl"}
# Components we never load: the safety checker (its weights are not in single files; training does
# not generate user-facing images) and image encoders for IP-Adapter.
_SKIPPED_COMPONENTS = {
    "sd15": {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
    "sdxl": {"feature_extractor": None, "image_encoder": None},
}
# What diffusers raises when a checkpoint does not fit the configs (missing keys, wrong shapes).
_LOAD_FAILURES = (ValueError, OSError, RuntimeError, KeyError, IndexError)


#: Held while UniFL builds or loads models. diffusers' ``from_pretrained`` and ``from_single_file`` build
#: under accelerate's ``init_empty_weights`` and its own ``no_init_weights``, which patch ``nn.Module``
#: and ``torch.nn.init`` for the whole process, not the calling thread: a module another thread builds
#: meanwhile lands on the meta device or stays uninitialised. Every load of ours takes this lock, so a
#: check or a reward-model load in a server's request thread never builds beside a job thread's load.
#: Re-entrant: a loader may call another.
MODEL_BUILD_LOCK = threading.RLock()


_RESAVE = "Re-save it as .safetensors (e.g. with a checkpoint-save node in ComfyUI) and load that."


class ModelLoadError(ValueError):
    """A model path that cannot be loaded; the message names the file and what to do about it."""


def shipped_config_dir(architecture: str) -> Path:
    """The folder of diffusers component configs shipped for ``"sd15"`` or ``"sdxl"``."""
    if architecture not in SINGLE_FILE_ARCHITECTURES:
        raise ModelLoadError(f"architecture must be one of {SINGLE_FILE_ARCHITECTURES}, got {architecture!r}")
    return MODEL_CONFIGS_DIR / architecture


def detect_architecture(path: str | Path) -> str:
    """What ``path`` holds, read cheaply: safetensors headers only (``.ckpt`` files are memory-mapped).

    Returns the ``_class_name`` of a diffusers folder's ``model_index.json`` (e.g.
    ``"StableDiffusionXLPipeline"``), or for a single file ``"sd15"`` (SD1.x), ``"sdxl"``, and also
    ``"sd2"`` / ``"sdxl-refiner"``, which are recognised but cannot be loaded from single files.
    """
    path = _model_path(path)
    if path.is_dir():
        return _pipeline_class_name(path)
    return _architecture_from_keys(path, _checkpoint_shapes(path))


def load_pipeline(
    path: str | Path,
    *,
    architecture: str | None = None,
    config_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):
    """A ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (no safety checker) from local files.

    Args:
        path: a diffusers pipeline folder (with ``model_index.json``) or a single-file checkpoint
            (``.safetensors``; ``.ckpt``/``.pt``/``.pth`` holding only tensors).
        architecture: ``"sd15"`` or ``"sdxl"`` for a single file (folders name their own class);
            detected from the file's keys when omitted.
        config_dir: diffusers-format folder with the component configs for a single file; default the
            shipped configs of the architecture. Point it at a local diffusers copy of the checkpoint's
            base model when that model's shapes differ from the originals.
        dtype: weight dtype of every component.
        device: where the pipeline ends up.

    Raises:
        ModelLoadError: for anything about ``path`` that prevents loading, with the fix in the message.
    """
    path = _model_path(path)
    with MODEL_BUILD_LOCK:
        if path.is_dir():
            pipe = _load_folder(path, dtype)
        else:
            pipe = _load_single_file(path, architecture, config_dir, dtype)
    return pipe.to(device)


@dataclass(frozen=True)
class ModelSource:
    """A model named by a word instead of a path (``model.path = "pocket"``), registered by the package
    that ships it."""

    folder: Path
    architecture: str  # the LoRA-metadata tag of models trained on it
    missing_hint: str  # how to get the folder back when it is missing


MODEL_SOURCES: dict[str, ModelSource] = {}


def register_model_source(name: str, folder: str | Path, architecture: str, missing_hint: str) -> None:
    MODEL_SOURCES[name] = ModelSource(Path(folder), architecture, missing_hint)


def resolve_model_path(path: str | Path) -> Path:
    """A registered source name (``"pocket"``) gives its folder; anything else is a path."""
    source = MODEL_SOURCES.get(str(path))
    if source is None:
        return Path(path)
    if not (source.folder / "model_index.json").is_file():
        raise ModelLoadError(f"the {path} model is missing from {source.folder}: {source.missing_hint}")
    return source.folder


def load_denoiser(path: str | Path, **kwargs) -> DiffusersDenoiser:
    """:func:`load_pipeline` wrapped as the :class:`~unifl.core.diffusion.denoiser.Denoiser` UniFL trains."""
    pipe = load_pipeline(path, **kwargs)
    # A registered model may be shaped like SD1.5 without being SD1.5 (the pocket model): its LoRAs must say
    # so, or they would be offered for SD1.5.
    source = MODEL_SOURCES.get(str(path))
    architecture = source.architecture if source is not None else pipeline_architecture(pipe)
    denoiser = DiffusersDenoiser.from_pipeline(pipe, architecture=architecture)
    denoiser.source = str(path)
    return denoiser


def empty_components(config_dir: str | Path) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoder(s) built from a diffusers-format folder's configs on the meta device.

    No weights and no memory: their shapes, dtypes-to-be and parameter counts (what ``unifl check``
    predicts memory from). ``config_dir`` is a pipeline folder or :func:`shipped_config_dir`'s.

    Built inside ``torch.device("meta")``, a torch-function mode that is local to this thread, not under
    accelerate's ``init_empty_weights``, which patches module construction for the whole process: the
    check runs in a host's request thread while the host (or a UniFL job) builds real models on others.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(config_dir)
    with MODEL_BUILD_LOCK, torch.device("meta"):
        components = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        }
        for name, model_class in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            if (folder / name / "config.json").is_file():
                components[name] = model_class(CLIPTextConfig.from_pretrained(folder / name))
    return components


def pipeline_architecture(pipe) -> str:
    """The LoRA-metadata tag of a loaded pipeline: ``"sdxl"``, ``"sd2"`` (1024-wide OpenCLIP text) or ``"sd15"``."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd15"


def load_clip_tokenizer(folder: str | Path):
    """A ``CLIPTokenizer`` from a diffusers tokenizer folder.

    A folder without its own vocabulary (``vocab.json``, or ``tokenizer.json`` as transformers 5
    saves it) -- the shipped configs -- gets the shared CLIP vocabulary plus the special tokens and
    length from its ``tokenizer_config.json`` (SDXL's second tokenizer pads with ``"!"``).
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file():
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    settings = _read_json(folder / "tokenizer_config.json")
    wanted = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
    return CLIPTokenizer.from_pretrained(str(CLIP_VOCAB_DIR), local_files_only=True, **{k: settings[k] for k in wanted if k in settings})


# -- diffusers folders ------------------------------------------------------------------------------


def _load_folder(path: Path, dtype: torch.dtype):
    class_name = _pipeline_class_name(path)
    architecture = _PIPELINE_ARCHITECTURES.get(class_name)
    if architecture is None:
        raise ModelLoadError(
            f"{path / 'model_index.json'}: is a {class_name}; UniFL loads StableDiffusionPipeline (SD1.x/2.x) "
            "and StableDiffusionXLPipeline folders. Pass one of those or a single-file SD1.5/SDXL checkpoint."
        )
    try:
        return _pipeline_class(architecture).from_pretrained(
            str(path), local_files_only=True, **_dtype_argument(dtype), **_SKIPPED_COMPONENTS[architecture]
        )
    except _LOAD_FAILURES as err:
        pickled = _refused_pickle(err)
        if pickled is not None:
            raise ModelLoadError(
                f"{pickled}: holds Python objects besides tensors, which UniFL will not unpickle (that can run arbitrary code). "
                "Where you trust it, save that component with save_pretrained(safe_serialization=True), or use a copy of the model in safetensors."
            ) from None
        raise ModelLoadError(
            f"{path}: this {class_name} folder could not be loaded ({_first_line(err)}). Check that every "
            "component folder listed in model_index.json has its config and weights (re-copy or re-download the folder)."
        ) from err


def _refused_pickle(err: BaseException) -> str | None:
    """The weights file diffusers failed to load because ``torch.load(weights_only=True)`` refused a Python
    object in it (not a damaged file), or ``None``. diffusers names the file in the error it raises on top."""
    file, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        named = re.search(r"checkpoint file for '([^']+)'", str(err))
        file = file or (named.group(1) if named else None)
        if isinstance(err, pickle.UnpicklingError) and "global" in str(err).lower():
            return file or "a weights file of the folder"
        err = err.__cause__ or err.__context__
    return None


def _pipeline_class_name(path: Path) -> str:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(
            f"{path}: is a folder without model_index.json, so not a diffusers pipeline. Pass the folder that "
            "contains model_index.json, or a single-file checkpoint (.safetensors, .ckpt)."
        )
    class_name = _read_json(index).get("_class_name")
    if not isinstance(class_name, str):
        raise ModelLoadError(f"{index}: has no '_class_name'; re-copy the diffusers folder it belongs to.")
    return class_name


# -- single files -----------------------------------------------------------------------------------


def _load_single_file(path: Path, architecture: str | None, config_dir: str | Path | None, dtype: torch.dtype):
    shapes = _checkpoint_shapes(path)
    architecture = architecture or _architecture_from_keys(path, shapes)
    if architecture in _UNSUPPORTED_SINGLE_FILE:
        raise ModelLoadError(f"{path}: {_UNSUPPORTED_SINGLE_FILE[architecture]}")
    if architecture not in SINGLE_FILE_ARCHITECTURES:
        raise ModelLoadError(f"{path}: architecture must be one of {SINGLE_FILE_ARCHITECTURES}, got {architecture!r}")
    config_dir = Path(config_dir) if config_dir is not None else shipped_config_dir(architecture)
    if not (config_dir / "model_index.json").is_file():
        raise ModelLoadError(f"{config_dir}: config_dir must be a diffusers-format folder with model_index.json (given for {path}).")
    in_channels = shapes.get(_UNET_INPUT_KEY, (0, 4))[1]
    if in_channels != 4:
        raise ModelLoadError(
            f"{path}: its UNet takes {in_channels} input channels (an inpainting or instruct-pix2pix model); UniFL "
            "trains text-to-image models with 4 latent channels. Use the base text-to-image checkpoint."
        )

    from diffusers.loaders.single_file_utils import SingleFileComponentError

    tokenizers = {name: load_clip_tokenizer(config_dir / name) for name in ("tokenizer", "tokenizer_2") if (config_dir / name).is_dir()}
    try:
        pipe = _pipeline_class(architecture).from_single_file(
            str(path), config=str(config_dir), local_files_only=True, **_dtype_argument(dtype),
            **tokenizers, **_SKIPPED_COMPONENTS[architecture],
        )
    except (SingleFileComponentError, NotImplementedError, *_LOAD_FAILURES) as err:
        # Parameters the file lacks stay on the meta device, and diffusers' dtype cast then fails on them.
        cause = _MISSING_WEIGHTS if "meta tensor" in str(err) else _first_line(err)
        raise _single_file_error(path, architecture, config_dir, cause) from err
    # diffusers < 0.35 (Forge pins 0.31) does not cast at load time, so nothing fails there: the
    # parameters the file lacks are still on the meta device, and would fail later in ``pipe.to``.
    if any(t.is_meta for module in pipe.components.values() if isinstance(module, torch.nn.Module)
           for t in (*module.parameters(), *module.buffers())):
        raise _single_file_error(path, architecture, config_dir, _MISSING_WEIGHTS)
    return pipe


_MISSING_WEIGHTS = "some parameters have no weights in the file"


def _single_file_error(path: Path, architecture: str, config_dir: Path, cause: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: could not be loaded as an {architecture} checkpoint with the configs in {config_dir} ({cause}). "
        "If it is another architecture pass architecture='sd15' or 'sdxl'; if it is incomplete, copy it again; if it "
        "is a full checkpoint of a differently shaped model, pass config_dir= a local diffusers folder of its base model."
    )


def _architecture_from_keys(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    for prefix, architecture in _TEXT_ENCODER_PREFIXES:
        if any(key.startswith(prefix) for key in shapes):
            return architecture
    sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
    raise ModelLoadError(
        f"{path}: its keys ({sample}, ...) match no supported model. UniFL loads full SD1.x and SDXL checkpoints "
        "(UNet, VAE and text encoders in one file, as in ComfyUI's models/checkpoints); a LoRA, VAE or UNet-only "
        "file is not one. Pass a full checkpoint or a diffusers pipeline folder."
    )


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape by key: from the header for safetensors, via ``weights_only`` for pickles."""
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise ModelLoadError(f"{path}: expected a diffusers folder or a {', '.join(SINGLE_FILE_SUFFIXES)} checkpoint file.")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
            raise ModelLoadError(
                f"{path}: is not a readable safetensors file ({_first_line(err)}); it is probably truncated or "
                "corrupt. Download or copy it again."
            ) from None
    return {key: tuple(value.shape) for key, value in read_pickled_tensors(path, "a model checkpoint", error=ModelLoadError, resave=_RESAVE).items()}


# -- helpers ----------------------------------------------------------------------------------------


def _model_path(path: str | Path) -> Path:
    """The existing file or folder a model path (or registered source name) stands for."""
    if not str(path).strip():  # Path("") is the current folder, which would then be blamed for not being a model
        raise ModelLoadError("no base model given (the model path is empty): set path in the config's [model] section, or --model; "
                             "a diffusers pipeline folder, a .safetensors/.ckpt checkpoint, or 'pocket' for the embedded model")
    return _existing(resolve_model_path(path))


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder. Pass a diffusers pipeline folder or a .safetensors/.ckpt checkpoint.")
    return path


#: transformers image processors that diffusers' pipeline modules import by name (for safety checkers
#: and IP-Adapters; UniFL loads neither).
_PROCESSORS_DIFFUSERS_IMPORTS = ("CLIPImageProcessor", "SiglipImageProcessor")


def prefer_torchvision_free_processors() -> None:
    """Call before importing a diffusers pipeline: without torchvision, ask for the PIL image processors.

    transformers 5 made ``CLIPImageProcessor`` the torchvision implementation; when torchvision is
    missing (UniFL never requires it), each access of the name logs "requires torchvision ... falling
    back to CLIPImageProcessorPil", which diffusers' pipeline imports trigger in every command. Binding
    the names to the ``…Pil`` classes is what transformers does after that warning, asked for up
    front. transformers 4 has no ``…Pil`` classes; its processors need no torchvision.
    """
    import sys

    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return
    for name in _PROCESSORS_DIFFUSERS_IMPORTS:
        # Looked up each time: transformers replaces its module object in sys.modules on first use.
        pil_class = getattr(sys.modules["transformers"], f"{name}Pil", None)
        if pil_class is not None:
            setattr(sys.modules["transformers"], name, pil_class)


def _pipeline_class(architecture: str):
    prefer_torchvision_free_processors()
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if architecture == "sdxl" else StableDiffusionPipeline


def _dtype_argument(dtype: torch.dtype) -> dict:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (warning on the old name); use the name this version has."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: is not a readable JSON file ({_first_line(err)}). Re-copy the folder it belongs to.") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object. Re-copy the folder it belongs to.")
    return data


def _first_line(err: BaseException) -> str:
    """The error's first sentence: enough to say what did not fit, without library-specific advice."""
    lines = str(err).strip().splitlines()
    sentence = lines[0].split(". ")[0] if lines else ""
    return f"{type(err).__name__}: {sentence}".rstrip(": ")
