"""Real-size benchmark: one UniFL step of SD1.5 and SDXL at their real widths, and what each economy saves.

Everything is built from configs with random weights; nothing is downloaded. The diffusion models come
from the configs UniFL ships (``core/diffusion/model_configs``: SD1.5's 860 M and SDXL's 2.57 B-parameter
UNets, their VAEs and CLIP text encoders); the feedback models are the recipe's (docs/recipes.md), at
their published sizes: LAION aesthetic (CLIP ViT-L/14 + MLP), HPSv2 and PickScore (CLIP ViT-H/14),
ImageReward (BLIP ViT-L/16 + BERT) as the four aspect rewards, and VGG16 (style), Mask R-CNN
ResNet-50-FPN (structure, needs torchvision) and DeepLabV3-ResNet50 (layout) for PeFL.

Each measurement runs in its own process: build, then one step under the memory meter (one, not
two: on the shared 2-core machine every step costs minutes). Reported per step:

* **static**: bytes of every tensor the run keeps on the device when the step starts (weights, LoRA,
  the discriminator), counted over unique storages;
* **step peak**: the most tensor memory live during the step above what was live when it began (it
  includes what the first step creates for good: AdamW's state, a discriminator's gradients). CPU:
  torch's CPU allocator reports every allocation and free to the profiler (``profile_memory=True``);
  the running sum in time order is live tensor memory, the quantity ``torch.cuda.max_memory_allocated``
  gives on a GPU (same meter as ``bench/train_step.py``). CUDA: ``max_memory_allocated``;
* **total** = static + step peak, the number to hold against a GPU's memory;
* **peak RSS** of the process during the step (Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``), a cross-check that includes the C allocator's caches and libraries;
* wall and CPU time of the step (a first step, under the profiler; on a shared machine the CPU time
  is the steadier figure).

Rollouts are shortened (PeFL from level 1 of 2, aesthetic with 1 step, adversarial at its first
position): their no-grad prefix frees everything it allocates, so the peak is the grad step's, as with
the paper's 20-step schedules, and only time is saved. Peak memory is linear in pixels (convolutions,
and attention through SDPA's memory-efficient kernels), so two resolutions give ``fixed + per_pixel ×
pixels`` and the prediction at 512/1024 px; a third SD1.5 resolution checks the line.

``--alignprop-python`` runs TRL's ``AlignPropTrainer`` (trl==0.23.1, in its own venv) on the same
random SD1.5 and the same four rewards, in the same meter: 20 DDIM steps, the last 10 with gradients
(truncated backprop as its defaults draw it, fixed here), its own per-step UNet checkpointing, bf16.

    python bench/real_size.py --threads 1 --alignprop-python /venvs/trl/bin/python --json results.json
    python bench/real_size.py --report bench/real_size_cpu.json   # the tables of docs/benchmarks.md
    python bench/real_size.py --quick          # toy widths, the same plan: checks that it runs (two minutes)
    python bench/real_size.py --device cuda    # bench/gpu_check.sh
    python bench/real_size.py --predict-stage2  # unifl check's prediction for candidate stage-2 presets (seconds, no step)

``--predict-stage2`` runs no step: for the SD1.5 (512 px) and SDXL (1024 px) stage-2 presets it prints what
``unifl check`` predicts on a GPU (``core.training.preflight.predict_memory``: exact bytes of weights, LoRA
and optimizer state from parameter counts on the meta device, plus the activations fitted by the runs above)
for each candidate LoRA target set and rank and each discriminator (head alone, head and trunk blocks).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import allocator_peak  # noqa: E402  (one way to measure a step's peak, shared by the benchmarks)

RESULT_PREFIX = "REAL-SIZE-RESULT "
GIB = 2**30
PROMPTS = ["a photo of a cat on a sofa", "a red car in front of a house", "a dog running on the beach", "a bowl of fruit on a table"]

# The recipe's aspect stand-ins (docs/recipes.md) and PeFL experts, as bench kinds with random weights.
REWARDS = [("color", "bench-hpsv2", 20.0, 0.28), ("layout", "bench-pickscore", 1.0, 21.5), ("detail", "bench-imagereward", 1.0, 0.5), ("lighting", "bench-laion", 1.0, 6.0)]
PERCEPTION = [("style", "bench-vgg16"), ("structure", "bench-maskrcnn"), ("layout", "bench-deeplabv3")]


@dataclass
class Run:
    architecture: str  # sd15 | sdxl
    stage: str  # 1 | 2 | alignprop
    resolution: int
    variant: str = "lean"  # lean | no-unet-checkpointing | no-vae-checkpointing | fp32-weights | resident-text-encoders | full-discriminator

    @property
    def name(self) -> str:
        return f"{self.architecture} {'AlignProp' if self.stage == 'alignprop' else 'stage ' + self.stage} {self.resolution}px {self.variant}"


VARIANTS = {
    "lean": "the defaults: bf16 frozen weights, checkpointed UNet and VAE decoder, text encoders off the device, head-only discriminator",
    "no-unet-checkpointing": "UNet activations kept",
    "no-vae-checkpointing": "VAE-decoder activations kept",
    "fp32-weights": "frozen UNet and feedback models in fp32",
    "resident-text-encoders": "text encoders kept on the device",
    "full-discriminator": "stage 2's discriminator a full trainable fp32 copy of the detail reward model (+ AdamW)",
}


def plan(args) -> list[Run]:
    """The runs, the same with ``--quick`` (which only narrows the models): a check that it runs is a check of this plan."""
    runs, sd15, sdxl = [], args.sd15_resolutions, args.sdxl_resolutions
    # Most telling first, so that a run cut short still has the fits: the lean steps at two resolutions,
    # then each economy switched off at the lowest, AlignProp beside SD1.5, then the checks of the line.
    if "sd15" in args.architectures:
        runs += [Run("sd15", stage, r) for stage in ("1", "2") for r in sd15[:2]]
    if "sdxl" in args.architectures:
        runs += [Run("sdxl", stage, r) for stage in ("1", "2") for r in sdxl[:2]]
    if "sd15" in args.architectures and not args.lean_only:
        runs += [Run("sd15", "1", sd15[0], v) for v in ("no-unet-checkpointing", "no-vae-checkpointing", "fp32-weights", "resident-text-encoders")]
        runs += [Run("sd15", "2", sd15[0], "full-discriminator")]
    if "sdxl" in args.architectures and not args.lean_only:  # fp32 SDXL and a full fp32 discriminator beside it do not fit 24 GB of RAM
        runs += [Run("sdxl", "1", sdxl[0], v) for v in ("no-unet-checkpointing", "no-vae-checkpointing", "resident-text-encoders")]
    if "sd15" in args.architectures and args.alignprop_python:
        runs += [Run("sd15", "alignprop", r) for r in sd15[:2]]
    if "sd15" in args.architectures:
        runs += [Run("sd15", "1", r) for r in sd15[2:]]
    if "sdxl" in args.architectures:
        runs += [Run("sdxl", "1", r) for r in sdxl[2:]]
    return runs


# -- random weights at real size ----------------------------------------------------------------------


def fill_random_(module, seed: int):
    """Random weights in place, fast: a prime-length block of normal noise tiled over each tensor, scaled 1/√fan-in.

    Initialising 2.6 B parameters with the libraries' own initialisers takes minutes on one thread; the
    values do not change memory or time. Norm weights become 1, biases 0, running variances 1. Integer
    buffers (CLIP's position ids) were built on the CPU and are kept.
    """
    import torch

    block = torch.randn(1_000_003, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if tensor.ndim >= 2 and leaf != "running_var":
                flat, scale = tensor.view(-1), tensor[0].numel() ** -0.5
                for start in range(0, flat.numel(), block.numel()):
                    piece = flat[start:start + block.numel()]
                    piece.copy_(block[: piece.numel()] * scale)
            elif leaf in ("weight", "running_var"):
                tensor.fill_(1.0)
            else:
                tensor.zero_()
    return module


def empty(build):
    """``build()`` on the meta device (no memory), as :func:`unifl.core.diffusion.loading.empty_components` builds."""
    import torch
    from unifl.core.diffusion.loading import MODEL_BUILD_LOCK

    with MODEL_BUILD_LOCK, torch.device("meta"):
        return build()


def materialize(module, dtype, device: str, seed: int):
    """A meta-device ``module`` at its full size in ``dtype`` on ``device``, with :func:`fill_random_` weights, frozen."""
    import torch

    index_tables = [name for name, b in module.named_buffers() if not b.is_floating_point()]
    unknown = [name for name in index_tables if not name.endswith(("position_ids", "num_batches_tracked"))]
    if unknown:
        raise ValueError(f"{type(module).__name__}: integer buffers other than position ids and batch-norm counters, which random weights cannot stand in for: {unknown}")
    module = module.to(dtype).to_empty(device=device)
    fill_random_(module, seed)
    for name in index_tables:
        table = module.get_buffer(name)
        if name.endswith("num_batches_tracked"):  # a frozen batch norm's step counter: unused in eval mode
            table.zero_()
        else:  # CLIP's position ids, built on the meta device: 0 … n−1 along the last axis
            table.copy_(torch.arange(table.shape[-1], device=table.device).expand_as(table))
    return module.eval().requires_grad_(False)


def random_denoiser(architecture: str, weights_dtype, vae_dtype, device: str, quick: bool):
    """UNet, VAE and text encoders at the shipped configs' widths (``quick``: the tiny test pipeline), random weights."""
    from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser
    from unifl.core.diffusion.loading import empty_components, load_clip_tokenizer, shipped_config_dir
    from unifl.core.diffusion.tiny import build_tiny_pipeline

    if quick:  # toy widths, the same code path
        pipe = build_tiny_pipeline(architecture, seed=0)
        pipe.unet.to(device, weights_dtype), pipe.vae.to(device, vae_dtype)
        for encoder in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if encoder is not None:
                encoder.to(device, weights_dtype)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.eval()
        return DiffusersDenoiser.from_pipeline(pipe, architecture)
    folder = shipped_config_dir(architecture)
    parts = {name: materialize(module, vae_dtype if name == "vae" else weights_dtype, device, seed=index) for index, (name, module) in enumerate(empty_components(folder).items())}
    tokenizers = [load_clip_tokenizer(folder / name) for name in ("tokenizer", "tokenizer_2") if (folder / name).is_dir()]
    encoders = [parts[name] for name in ("text_encoder", "text_encoder_2") if name in parts]
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return DiffusersDenoiser(parts["unet"], parts["vae"], encoders, tokenizers, scheduler, architecture)


#: The bench kinds' builders (filled by :func:`register_bench_models`): meta-device copies count their parameters.
BUILDERS: dict = {}


def register_bench_models(quick: bool) -> None:
    """The recipe's feedback models as registry kinds with random weights; ``path`` names the dtype (fp32/bf16)."""
    import torch
    from unifl.core.feedback.registry import register_perception_model, register_reward_model

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "": torch.float32}

    def kind(register, name, build, seed, keeps_fp32=False):
        BUILDERS[name] = build
        register(name)(lambda path="": materialize(empty(build), torch.float32 if keeps_fp32 else dtypes[path], "cpu", seed))

    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection
    from unifl.core.feedback.rewards.clip_models import ClipSimilarity, load_clip_tokenizer
    from unifl.core.feedback.rewards.laion import AestheticMLP, LaionAesthetic

    clip_tokenizer = load_clip_tokenizer()
    scale = 8 if quick else 1  # --quick divides every width by 8

    def vit(width, layers, heads, patch, projection, act):
        return dict(hidden_size=width // scale, intermediate_size=4 * width // scale, num_hidden_layers=layers // scale or 1, num_attention_heads=max(1, heads // scale),
                    image_size=224, patch_size=patch, projection_dim=projection // scale, hidden_act=act)

    def vit_h_clip():  # HPSv2 and PickScore: OpenCLIP ViT-H/14
        text = dict(hidden_size=1024 // scale, intermediate_size=4096 // scale, num_hidden_layers=24 // scale, num_attention_heads=16 // scale or 1,
                    max_position_embeddings=77, vocab_size=49408, projection_dim=1024 // scale, hidden_act="gelu")
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vit(1280, 32, 16, 14, 1024, "gelu"), projection_dim=1024 // scale))

    kind(register_reward_model, "bench-hpsv2", lambda: ClipSimilarity(vit_h_clip(), clip_tokenizer, scale=1.0, fit="pad"), 11)
    kind(register_reward_model, "bench-pickscore", lambda: ClipSimilarity(vit_h_clip(), clip_tokenizer, scale=None), 12)
    kind(register_reward_model, "bench-laion", lambda: LaionAesthetic(CLIPVisionModelWithProjection(CLIPVisionConfig(**vit(1024, 24, 16, 14, 768, "quick_gelu"))), AestheticMLP((768 // scale, 1024, 128, 64, 16))), 13)
    kind(register_reward_model, "bench-imagereward", lambda: _imagereward(scale), 14)

    from unifl.core.feedback.perception.loaders import DeepLabV3, DilatedResNet, VGG16Features

    kind(register_perception_model, "bench-vgg16", lambda: VGG16Features(tuple(w // scale for w in (64, 128, 256, 512, 512))), 21)
    kind(register_perception_model, "bench-deeplabv3", lambda: DeepLabV3(DilatedResNet((3, 4, 6, 3), 64 // scale, [w // scale for w in (64, 128, 256, 512)], [w // scale for w in (256, 512, 1024, 2048)]), 256 // scale, 21), 22)
    with contextlib.suppress(ImportError):  # structure PeFL only where torchvision imports (not with --quick: 800 px inputs)
        if quick:
            raise ImportError
        from unifl.core.feedback.perception.maskrcnn import MaskRCNNStructure, build_detector, import_torchvision

        import_torchvision()
        kind(register_perception_model, "bench-maskrcnn", lambda: MaskRCNNStructure(build_detector("v1", 91)), 23, keeps_fp32=True)


def _imagereward(scale: int):
    """ImageReward's networks: BLIP ViT-L/16, its BERT-base with cross-attention, the MLP head; a made-up BERT vocabulary."""
    from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel
    from unifl.core.feedback.rewards.imagereward import ImageReward
    from unifl.core.feedback.rewards.laion import AestheticMLP

    folder = tempfile.mkdtemp(prefix="bench-bert-")
    words = sorted({w for p in PROMPTS for w in p.split()})
    with open(os.path.join(folder, "vocab.txt"), "w") as fh:
        fh.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *(f"[unused{i}]" for i in range(64))]) + "\n")
    tokenizer = BertTokenizer(os.path.join(folder, "vocab.txt"))
    vision = BlipVisionModel(BlipVisionConfig(hidden_size=1024 // scale, intermediate_size=4096 // scale, num_hidden_layers=24 // scale, num_attention_heads=16 // scale or 1,
                                              image_size=224, patch_size=16, layer_norm_eps=1e-6))
    text = BlipTextModel(BlipTextConfig(vocab_size=30524, hidden_size=768 // scale, encoder_hidden_size=1024 // scale, intermediate_size=3072 // scale,
                                        num_hidden_layers=12 // scale or 1, num_attention_heads=12 // scale or 1, max_position_embeddings=512, is_decoder=True,
                                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                                        sep_token_id=tokenizer.sep_token_id), add_pooling_layer=False)
    return ImageReward(vision, text, AestheticMLP((768 // scale, 1024, 128, 64, 16)), tokenizer)


def write_images(folder: str, size: int) -> None:
    """Captioned images with instance masks (COCO category ids) and semantic masks (VOC classes)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, caption in enumerate(PROMPTS):
        image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        instances = np.zeros((size, size), np.uint8)
        semantic = np.zeros((size, size), np.uint8)
        for k, (coco_id, voc_class) in enumerate(((17, 8), (3, 7)), start=1):  # cat/cat, car/car
            y, x = rng.integers(0, size // 2, 2)
            h, w = rng.integers(size // 6, size // 2, 2)
            image[y:y + h, x:x + w] = rng.integers(80, 255, 3)
            instances[y:y + h, x:x + w] = k
            semantic[y:y + h, x:x + w] = voc_class
        stem = os.path.join(folder, f"{index:04d}")
        Image.fromarray(image).save(stem + ".png")
        Image.fromarray(instances).save(stem + ".instances.png")
        Image.fromarray(semantic).save(stem + ".semantic.png")
        with open(stem + ".instances.json", "w") as fh:
            json.dump({"labels": [17, 3]}, fh)
        with open(stem + ".txt", "w") as fh:
            fh.write(caption)


# -- one UniFL step ------------------------------------------------------------------------------------


def build_trainer(run: Run, args, scratch: str):
    import torch
    from unifl.core.config import load_config
    from unifl.core.training.trainer import UniFLTrainer

    fp32 = run.variant == "fp32-weights"
    feedback_dtype = "fp32" if fp32 else "bf16"
    write_images(os.path.join(scratch, "images"), 512)
    with open(os.path.join(scratch, "prompts.txt"), "w") as fh:
        fh.write("\n".join(PROMPTS) + "\n")
    checkpointing = run.variant not in ("no-unet-checkpointing", "no-vae-checkpointing")
    overrides = [
        f"stage={run.stage}", f"data.resolution={run.resolution}", f"data.images={os.path.join(scratch, 'images')}", f"data.prompts={os.path.join(scratch, 'prompts.txt')}",
        f"model.dtype={'fp32' if fp32 else 'bf16'}", "model.vae_dtype=fp32", "optim.mixed_precision=bf16", f"optim.gradient_checkpointing={str(checkpointing).lower()}",
        "optim.batch_size=1", "optim.gradient_accumulation_steps=1", "lora.rank=16", "lora.alpha=16.0", "lora.targets=attention",
        "pefl.inference_steps=2", "pefl.noise_level=1", "pefl.grad_levels=[0, 0]", "aesthetic.inference_steps=1", "aesthetic.grad_levels=[0, 0]",
        "adversarial.grad_levels=[0, 0]", "adversarial.start_level=0", "adversarial.discriminator_from=detail",
        f"logging.output_dir={os.path.join(scratch, 'run')}", "logging.tensorboard=false", "logging.validate_every=0",
        "rewards=[" + ", ".join(f'{{aspect = "{a}", kind = "{k}", path = "{feedback_dtype}", dtype = "{feedback_dtype}", weight = {w}, threshold = {t}}}' for a, k, w, t in REWARDS) + "]",
    ]
    from unifl.core.feedback.registry import PERCEPTION_MODELS

    perception = [(a, k) for a, k in PERCEPTION if k in PERCEPTION_MODELS]
    overrides.append("perception=[" + ", ".join(f'{{aspect = "{a}", kind = "{k}", path = "{feedback_dtype}", dtype = "{feedback_dtype}"}}' for a, k in perception) + "]")
    config = load_config(None, overrides)
    weights = torch.float32 if fp32 else torch.bfloat16
    denoiser = random_denoiser(run.architecture, weights, torch.float32, args.device, args.quick)
    trainer = UniFLTrainer(config, denoiser=denoiser)
    if run.variant == "no-unet-checkpointing":
        denoiser.enable_gradient_checkpointing()
        denoiser.unet.disable_gradient_checkpointing()
    elif run.variant == "no-vae-checkpointing":
        denoiser.enable_gradient_checkpointing()
        denoiser.vae.disable_gradient_checkpointing()
    denoiser.lora_target.train()  # as UniFLTrainer.train() does before its loop
    if run.variant != "resident-text-encoders":
        text_encoders_off_device(trainer)
    if trainer.discriminator is not None:
        (full_discriminator if run.variant == "full-discriminator" else head_only_discriminator)(trainer)
    return trainer, [(a, k) for a, k in perception]


def text_encoders_off_device(trainer) -> None:
    """Every prompt encoded once, then the text encoders leave the device (meta: their memory is freed).

    What the trainer does once issue 11's prompt-embedding change lands; emulated here so the lean
    configuration is measured either way (the set of prompts is fixed and known).
    """
    prompts = ["", *PROMPTS, *trainer.images.captions()]
    trainer.encode(prompts)
    for encoder in trainer.denoiser.text_encoders:
        if any(not p.is_meta for p in encoder.parameters()):
            encoder.to("meta")


def head_only_discriminator(trainer) -> None:
    """The discriminator as a head-only option builds it: the frozen reward model's backbone, shared, and a
    trainable fp32 copy of its head, the only parameters the module registers (so ``requires_grad_``,
    ``parameters()`` and the state dict see the head alone).

    Emulates the option issue 11 adds to the trainer (until then the trainer deep-copies the whole reward
    model): same forward, a fraction of the memory.
    """
    import torch
    from torch import nn

    class Discriminator(nn.Module):
        def __init__(self, frozen: nn.Module):
            super().__init__()
            self.head = copy.deepcopy(frozen.head).float().requires_grad_(True)
            scorer = copy.copy(frozen)
            scorer._modules = {**frozen._modules, "head": self.head}
            object.__setattr__(self, "scorer", scorer)  # not registered: its backbone is the frozen model's

        def forward(self, images, prompts):
            return self.scorer(images, prompts)

    trainer.discriminator = Discriminator(trainer.rewards[trainer.config.adversarial.discriminator_from]).train()
    trainer.d_optimizer = trainer.accelerator.prepare_optimizer(torch.optim.AdamW(trainer.discriminator.parameters(), lr=trainer.config.adversarial.discriminator_lr))


def full_discriminator(trainer) -> None:
    """A full trainable copy as a correct full-copy discriminator keeps it: fp32 weights, AdamW over all of them."""
    import torch

    disc = trainer.discriminator.float().requires_grad_(True)
    trainer.d_optimizer = trainer.accelerator.prepare_optimizer(torch.optim.AdamW(disc.parameters(), lr=trainer.config.adversarial.discriminator_lr))


def live_bytes(objects) -> int:
    """Bytes of every tensor reachable from ``objects`` (modules, optimizers, tensors), each storage once, meta excluded."""
    import torch

    seen, total = set(), 0

    def add(tensor):
        nonlocal total
        if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
            storage = tensor.untyped_storage()
            key = (storage.device.type, storage.data_ptr())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()

    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                add(tensor)
                add(tensor.grad)
        elif hasattr(obj, "state_dict") and hasattr(obj, "state"):  # optimizers (Accelerate's wrap one)
            inner = getattr(obj, "optimizer", obj)
            for state in inner.state.values():
                for value in state.values():
                    add(value)
    return total


def unifl_step(trainer):
    return trainer.train_step()


# -- the meter ------------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Linux: reset this process's VmHWM (``echo 5 > /proc/self/clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    return None


def measure(run: Run, args, scratch: str) -> dict:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    torch.manual_seed(0)
    register_bench_models(args.quick)
    if run.stage == "alignprop":
        from alignprop_step import build_alignprop  # bench/alignprop_step.py, run in trl's venv

        step, keep = build_alignprop(run, args, scratch, random_denoiser, PROMPTS, REWARDS)
    else:
        trainer, _ = build_trainer(run, args, scratch)
        step = lambda: unifl_step(trainer)  # noqa: E731
        keep = [trainer.denoiser.unet, trainer.denoiser.vae, *trainer.denoiser.text_encoders, *trainer.rewards.values(),
                *(m for _, m in trainer.perception), trainer.discriminator, trainer.optimizer, trainer.d_optimizer]
    # One step under the meter, the run's first: static = what is live before it; the step's peak above
    # that includes what the step creates for good (AdamW's state, a discriminator's gradients), so
    # static + peak is the most the device holds during the step, what max_memory_allocated reports.
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    keep = [k for k in keep if k is not None]
    static = live_bytes(keep)
    rss_reset = reset_peak_rss()
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    peak = allocator_peak(step, args.device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # What the step left for good (AdamW's state, a discriminator's gradients) is in its peak already.
    return {
        "run": asdict(run), "static_bytes": static, "static_after_bytes": live_bytes(keep), "step_peak_bytes": peak, "total_bytes": static + peak,
        "peak_rss_bytes": peak_rss() if rss_reset and args.device == "cpu" else None,
        "wall_seconds": wall, "cpu_seconds": cpu, "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


# -- the parent ------------------------------------------------------------------------------------------


def run_child(run: Run, args) -> dict:
    python = args.alignprop_python if run.stage == "alignprop" else sys.executable
    command = [python, __file__, "--child", json.dumps(asdict(run)), "--device", args.device]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--quick"] if args.quick else []
    paths = [os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH", "")]
    if run.stage == "alignprop":  # TRL's venv has no unifl installed: it imports this checkout through a link
        from unifl.pocket.arena.run import package_path_entry

        paths.insert(0, str(package_path_entry(Path(args.scratch))))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONPATH=os.pathsep.join(filter(None, paths)))
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        return {"run": asdict(run), "error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['no output'])[-1][:300]}", "seconds": time.perf_counter() - started}
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def fit(results: list[dict], architecture: str, stage: str, variant: str = "lean") -> tuple[float, float, float, list[dict]] | None:
    """``(static, fixed, per_pixel, checks)``: the step peak's line through the two lowest resolutions measured,
    and the other measurements of the same configuration (to check the line); None without two."""
    runs = sorted((r for r in results if "error" not in r and r["run"]["architecture"] == architecture and r["run"]["stage"] == stage and r["run"]["variant"] == variant),
                  key=lambda r: r["run"]["resolution"])
    if len(runs) < 2:
        return None
    a, b = runs[:2]
    pa, pb = a["run"]["resolution"] ** 2, b["run"]["resolution"] ** 2
    per_pixel = (b["step_peak_bytes"] - a["step_peak_bytes"]) / (pb - pa)
    return max(a["static_bytes"], b["static_bytes"]), a["step_peak_bytes"] - per_pixel * pa, per_pixel, runs[2:]


TARGETS = {"sd15": (512, 12), "sdxl": (1024, 24)}


def report(results: list[dict], args) -> None:
    gib = lambda b: f"{b / GIB:.2f}" if b is not None else "–"  # noqa: E731
    print("\n| model | step | px | variant | static GiB | step peak GiB | total GiB | peak RSS GiB | wall s | CPU s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    order = lambda r: (r["run"]["architecture"], r["run"]["stage"], r["run"]["variant"] != "lean", r["run"]["variant"], r["run"]["resolution"])  # noqa: E731
    for r in sorted(results, key=order):
        run = Run(**r["run"])
        step = "AlignProp (TRL 0.23.1)" if run.stage == "alignprop" else f"UniFL stage {run.stage}"
        if "error" in r:
            print(f"| {run.architecture} | {step} | {run.resolution} | {run.variant} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {run.architecture} | {step} | {run.resolution} | {run.variant} | {gib(r['static_bytes'])} | {gib(r['step_peak_bytes'])} | {gib(r['total_bytes'])} | "
              f"{gib(r['peak_rss_bytes'])} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} |")

    print("\nPredicted GPU peak (tensor memory, what torch.cuda.max_memory_allocated counts; the CUDA context and the")
    print("allocator's cache come on top): static + fixed + per_pixel × pixels, the line through the two lowest resolutions.\n")
    print("| model | step | variant | at px | static GiB | fixed GiB | bytes / px | predicted GiB | vs lean | line checked at |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    groups = sorted({(r["run"]["architecture"], r["run"]["stage"], r["run"]["variant"]) for r in results if "error" not in r}, key=lambda g: (g[0], g[1], g[2] != "lean", g[2]))
    predicted = {}
    for architecture, stage, variant in groups:
        line = fit(results, architecture, stage, variant)
        lean = fit(results, architecture, stage) if stage != "alignprop" else None
        single = [r for r in results if "error" not in r and r["run"]["architecture"] == architecture and r["run"]["stage"] == stage and r["run"]["variant"] == variant]
        if line is None and lean is not None and len(single) == 1 and variant in ("fp32-weights", "resident-text-encoders"):
            # Measured at one resolution only (fp32 weights: two would not fit this machine). These variants
            # change weights, not activations per pixel: the lean line's per-pixel term, through the one
            # measurement; marked in the table.
            r, per_pixel = single[0], lean[2]
            line = (r["static_bytes"], r["step_peak_bytes"] - per_pixel * r["run"]["resolution"] ** 2, per_pixel, [])
            variant_label = f"{variant} (one resolution; lean's bytes/px)"
        else:
            variant_label = variant
        if line is None:
            continue
        static, fixed, per_pixel, checks = line
        pixels = TARGETS[architecture][0]
        predicted[(architecture, stage, variant)] = total = static + fixed + per_pixel * pixels**2
        base = predicted.get((architecture, stage, "lean"))
        versus = f"{total / base:.2f}×" if base and variant != "lean" else ""
        checked = "; ".join(f"{c['run']['resolution']} px: {gib(fixed + per_pixel * c['run']['resolution'] ** 2)} predicted, {gib(c['step_peak_bytes'])} measured" for c in checks)
        label = "AlignProp" if stage == "alignprop" else f"stage {stage}"
        print(f"| {architecture} | {label} | {variant_label} | {pixels} | {gib(static)} | {gib(fixed)} | {per_pixel:.0f} | **{gib(total)}** | {versus} | {checked} |")

    carried = predicted.get(("sd15", "2", "full-discriminator")), predicted.get(("sd15", "2", "lean")), predicted.get(("sdxl", "2", "lean"))
    if None not in carried and ("sdxl", "2", "full-discriminator") not in predicted:
        # SDXL beside a full fp32 discriminator does not fit this machine's RAM. The discriminator is the same
        # reward model whatever the base model (the detail reward), so what it adds, measured beside SD1.5, is
        # what it adds beside SDXL: SDXL's lean stage-2 prediction plus that difference.
        total = carried[2] + carried[0] - carried[1]
        predicted[("sdxl", "2", "full-discriminator")] = total
        print(f"| sdxl | stage 2 | full-discriminator (not measured: SDXL's lean stage 2 + what it adds beside SD1.5) | 1024 | | | | **{gib(total)}** | {total / carried[2]:.2f}× |  |")

    print()
    for architecture, (pixels, budget) in TARGETS.items():
        at_target = {r["run"]["stage"]: r["total_bytes"] for r in results if "error" not in r and r["run"]["architecture"] == architecture
                     and r["run"]["variant"] == "lean" and r["run"]["resolution"] == pixels}  # measured there (a GPU run)
        for stage, total in sorted(at_target.items()):
            predicted[(architecture, stage, "lean")] = total
        lean = predicted.get((architecture, "1", "lean"))
        if lean is not None:
            how = "measured" if "1" in at_target else "predicted"
            print(f"- {architecture} stage 1 at {pixels} px: {gib(lean)} GiB {how}; target < {budget} GB: {'met' if lean < budget * 1e9 else 'MISSED'}")
        alignprop = predicted.get((architecture, "alignprop", "lean"))
        if lean is not None and alignprop is not None:
            print(f"  beside AlignProp's {gib(alignprop)} GiB: {'below' if lean < alignprop else 'NOT below'} ({lean / alignprop:.2f}×)")
    print("\nCalibration for core/training/preflight.py (activations of one step above the static bytes, batch 1):")
    for architecture in TARGETS:
        for stage in ("1", "2"):
            line = fit(results, architecture, stage)
            if line is not None:
                print(f"    ({architecture!r}, {stage!r}): ({line[1] / GIB:.2f} * GIB, {line[2]:.3g}),")
        lean, no_unet, no_vae = (fit(results, architecture, "1", v) for v in ("lean", "no-unet-checkpointing", "no-vae-checkpointing"))
        if lean and no_unet and no_vae:
            factor = (no_unet[2] + no_vae[2] - lean[2]) / lean[2]
            print(f"    {architecture}: NO_CHECKPOINTING_FACTOR (per-pixel term without any checkpointing, UNet and VAE extras added) = {factor:.1f}")


# -- predicted memory of candidate stage-2 presets (no step) ---------------------------------------------

#: Stage-2 candidates: LoRA targets × ranks (LCM-LoRA's SD1.5 recipe is rank 64 on what 'all' covers) and
#: what of the discriminator (the detail reward, ImageReward) trains; budgets in bytes (12 GB, 24 GB).
CANDIDATE_LORAS = [(targets, rank) for targets in ("attention", "attention+ff", "all") for rank in (16, 64)]
CANDIDATE_DISCRIMINATORS = ("head", "head+2", "head+4")
BUDGETS = {("sd15", 512): 12e9, ("sdxl", 1024): 24e9}


def predict_stage2(args) -> None:
    """What ``unifl check`` predicts on a GPU for each candidate: the static parts from parameter counts, the
    activations from the fitted line (measured with rank-16 attention LoRA and a head-only discriminator)."""
    from unifl.core.config import load_config
    from unifl.core.diffusion.loading import empty_components, shipped_config_dir
    from unifl.core.feedback.discriminator import trainable_parameter_count
    from unifl.core.training.preflight import GIB as PREFLIGHT_GIB, LoadedFeedback, predict_memory
    from unifl.core.training.preflight import lora_parameter_count

    register_bench_models(quick=False)
    reward_models = {aspect: empty(BUILDERS[kind]) for aspect, kind, _, _ in REWARDS}
    bf16 = lambda m: sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in (*m.parameters(), *m.buffers()))  # noqa: E731
    print("# Predicted peak GPU memory of a stage-2 step (unifl check's prediction, batch 1, bf16 weights, checkpointing on)\n")
    print("| model | px | LoRA targets | rank | LoRA M | discriminator trains | D M | predicted GiB (with CUDA context) | budget | fits |")
    print("|---|---:|---|---:|---:|---|---:|---:|---:|---|")
    for (architecture, resolution), budget in BUDGETS.items():
        if architecture not in args.architectures:
            continue
        parts = empty_components(shipped_config_dir(architecture))
        for targets, rank in CANDIDATE_LORAS:
            for trainable in CANDIDATE_DISCRIMINATORS:
                config = load_config(None, [f"lora.targets={targets}", f"lora.rank={rank}", f"lora.alpha={float(rank)}", f"adversarial.discriminator_trainable={trainable}"], preset=architecture)
                config.stage = "2"
                d_params = trainable_parameter_count(reward_models["detail"], trainable, "detail")
                feedback = {aspect: LoadedFeedback(bf16(model), sum(p.numel() for p in model.parameters()), None, d_params if aspect == "detail" else None)
                            for aspect, model in reward_models.items()}
                estimate = predict_memory(config, parts, feedback, "cuda")
                lora = lora_parameter_count(parts["unet"], rank, targets)
                fits = "yes" if estimate.needed <= budget else "NO"
                print(f"| {architecture} | {resolution} | {targets} | {rank} | {lora / 1e6:.1f} | {trainable} | {d_params / 1e6:.1f} | "
                      f"{estimate.needed / PREFLIGHT_GIB:.2f} | {budget / 1e9:.0f} GB = {budget / PREFLIGHT_GIB:.2f} GiB | {fits} |")
    print("\nThe activation term is the fitted line of the lean runs (rank-16 attention LoRA, head-only discriminator): a LoRA on "
          "convolutions adds its rank-r inputs inside each recomputed block, and unfrozen discriminator blocks add their own "
          "activations in the discriminator step; neither is in the prediction. A GPU run of bench/gpu_check.sh measures them.")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--architectures", default="sd15,sdxl")
    parser.add_argument("--sd15-resolutions", default="128,192,256", help="first two fit the line, the rest check it")
    parser.add_argument("--sdxl-resolutions", default="128,192")
    parser.add_argument("--alignprop-python", default=None, help="a Python with trl==0.23.1 (and this repo's dependencies) for the AlignProp runs")
    parser.add_argument("--json", default=None, help="also write every result to this file")
    parser.add_argument("--quick", action="store_true", help="toy widths (every width / 8): checks that it runs")
    parser.add_argument("--lean-only", action="store_true", help="only the lean configuration (and AlignProp): no economy switched off")
    parser.add_argument("--report", default=None, help="only print the tables of a --json file")
    parser.add_argument("--resume", default=None, help="a --json file of an earlier run: keep its results, measure only the missing runs")
    parser.add_argument("--predict-stage2", action="store_true", help="print unifl check's predicted memory for candidate stage-2 presets (LoRA targets/ranks, discriminators) and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if _cuda() else "cpu")
    args.architectures = args.architectures.split(",")
    args.sd15_resolutions = [int(x) for x in args.sd15_resolutions.split(",")]
    args.sdxl_resolutions = [int(x) for x in args.sdxl_resolutions.split(",")]
    return args


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.predict_stage2:
        predict_stage2(args)
        return 0
    if args.report:
        with open(args.report) as fh:
            report(json.load(fh), args)
        return 0
    if args.child:
        run = Run(**json.loads(args.child))
        with tempfile.TemporaryDirectory(prefix="unifl-real-size-") as scratch:
            result = measure(run, args, scratch)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    print("# Real-size benchmark: one UniFL step at SD1.5/SDXL widths, random weights\n")
    from unifl.core.machine import describe_machine

    print(f"machine: {describe_machine(args.device)}; device {args.device}; torch threads {args.threads or 'default'}")
    print("variants: " + "; ".join(f"{k}: {v}" for k, v in VARIANTS.items()), flush=True)
    results, started = [], time.perf_counter()
    if args.resume:  # a run cut short: keep what it measured, measure the rest
        with open(args.resume) as fh:
            results = [r for r in json.load(fh) if "error" not in r]
    with tempfile.TemporaryDirectory(prefix="unifl-real-size-") as args.scratch:
        measure_missing(args, results)
    report(results, args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{Run(**r['run']).name}: {r['error']}" for r in failed), file=sys.stderr)
    return 1 if failed else 0


def measure_missing(args, results: list[dict]) -> None:
    """Measure every run of the plan that ``results`` lacks, adding each result (and writing --json) as it comes."""
    done = [Run(**r["run"]) for r in results]
    for run in plan(args):
        if run in done:
            continue
        result = run_child(run, args)
        results.append(result)
        status = result.get("error") or f"total {result['total_bytes'] / GIB:.2f} GiB, step {result['wall_seconds']:.0f} s wall / {result['cpu_seconds']:.0f} s CPU"
        print(f"  {run.name}: {status}", flush=True)
        if args.json:  # after every run: a benchmark cut short keeps what it measured
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
