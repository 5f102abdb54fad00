"""The UniFL trainer: one loop for both stages, written against the denoiser seam.

Read it top to bottom like a diffusers training script: numbered set-up phases in ``__init__``, then
``train()``'s loop. Each feedback term is back-propagated as soon as it is computed, so only one
rollout's graph is alive at a time (the same gradient as summing the terms, at a fraction of the peak
memory).
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..config import TrainConfig, to_dict
from ..data import DataError, batch_indices, collate, image_dataset, load_prompts
from ..diffusion import schedule as sched
from ..diffusion.denoiser import Conditioning, Denoiser
from ..diffusion.rollouts import adversarial_rollout, aesthetic_rollout, pefl_rollout
from ..diffusion.sampling import generate, guided_x0
from ..feedback.loading import load_perception_model, load_reward_model
from ..feedback.losses import decoupled_aesthetic_loss, discriminator_loss, generator_loss
from ..feedback.losses.regularizers import base_model_kl, denoising_loss
from ..feedback.perception import pefl_layout_loss, pefl_structure_loss, pefl_style_loss
from ..lora.kohya import SamplerContract, load_kohya_lora, save_kohya_lora
from ..lora.peft import LoRASettings, add_lora, load_lora_state_dict, lora_state_dict
from . import checkpoint as ckpt
from .logs import RunLogger
from .run_lock import owns_run_folder

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept and named in the message."""


class TrainingStopped(Exception):
    """Raised inside the loop when ``should_stop`` says so; caught by :meth:`UniFLTrainer.train`."""


@dataclass
class TrainerCallbacks:
    """Hooks for host adapters (ComfyUI ProgressBar, gradio progress, A1111 ``shared.state``).

    Args:
        on_progress: ``(step, total_steps, logs)`` after every optimizer step.
        on_preview: ``(step, images)`` with PIL images whenever validation images are made.
        should_stop: polled every micro-step; returning True stops cleanly after saving a checkpoint.
    """

    on_progress: Callable[[int, int, dict], None] | None = None
    on_preview: Callable[[int, list], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class TrainResult:
    run_dir: Path
    lora_path: Path | None
    steps: int
    stopped_early: bool
    last_logs: dict = field(default_factory=dict)


def step_generator(seed: int, step: int, micro: int, stream: int, rank: int = 0) -> torch.Generator:
    """Noise and truncation points are a pure function of (seed, step, micro, stream, rank): exact
    resumes, and different draws on each process of a multi-GPU run."""
    return torch.Generator().manual_seed(hash((seed, step, micro, stream, rank)) & 0x7FFFFFFFFFFF)


def fresh_accelerator(mixed_precision: str, cpu: bool):
    """An ``Accelerator`` for this run, even when an earlier run in the same process chose other settings.

    Accelerate keeps its settings in a process-wide singleton and refuses to change them, but a host
    (ComfyUI, the webui) runs many trainings in one long-lived process. The per-run part of that state is
    reset; the process group of an ``accelerate launch`` run (``PartialState``) is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def sampler_contract(config: TrainConfig) -> SamplerContract:
    """How a LoRA of this stage is meant to be sampled: stage 2 is the few-step model, without CFG."""
    if config.stage == "2":
        return SamplerContract(steps=config.adversarial.inference_steps, scheduler="ddim", timestep_spacing=config.adversarial.timestep_spacing, cfg=1.0)
    return SamplerContract(steps=config.pefl.inference_steps, scheduler="ddim", timestep_spacing="leading", cfg=config.logging.validation_cfg)


class PromptCache:
    """Text conditioning computed once per distinct prompt (the text encoders never train)."""

    def __init__(self, denoiser: Denoiser, max_entries: int = 4096):
        self.denoiser, self.max_entries, self.entries = denoiser, max_entries, {}

    def __call__(self, prompts: Sequence[str]) -> Conditioning:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.entries))
        if missing:
            encoded = self.denoiser.encode_prompts(missing).to("cpu")
            if len(self.entries) + len(missing) > self.max_entries:
                self.entries.clear()
            self.entries.update({p: encoded[i] for i, p in enumerate(missing)})
        return Conditioning.cat([self.entries[p] for p in prompts]).to(self.denoiser.device)


class UniFLTrainer:
    """Trains one UniFL stage as a LoRA on ``denoiser`` (or on the model that ``config.model`` names)."""

    def __init__(self, config: TrainConfig, denoiser: Denoiser | None = None, callbacks: TrainerCallbacks | None = None, image_dataset=None, prompts: Sequence[str] | None = None):
        self.config = config.validate()
        self.callbacks = callbacks or TrainerCallbacks()
        self.run_dir = Path(config.logging.output_dir)
        self.step, self.started_at = 0, time.time()
        opt = config.optim

        # 1. Devices and precision (Accelerate: one process per GPU under `accelerate launch`).
        # A host hands us its model on the device it chose (ComfyUI --cpu on a GPU machine stays on the CPU).
        self.accelerator = fresh_accelerator(opt.mixed_precision, cpu=denoiser.device.type == "cpu" if denoiser is not None else not torch.cuda.is_available())
        self.device = self.accelerator.device

        # 2. The model, seen through the seam.
        if denoiser is None:
            from ..diffusion.loading import load_denoiser

            denoiser = load_denoiser(config.model.path, architecture=config.model.architecture or None, dtype=DTYPES[config.model.dtype], device=self.device)
            if config.model.vae_dtype != config.model.dtype:
                denoiser.vae.to(DTYPES[config.model.vae_dtype])
        self.denoiser = denoiser
        if opt.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()

        # 3. The LoRA: the only trainable weights; fp32 under autocast.
        self.lora_settings = LoRASettings(rank=config.lora.rank, alpha=config.lora.alpha, targets=config.lora.targets)
        with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG: seed it
            torch.manual_seed(opt.seed)
            self.lora_params = add_lora(denoiser.lora_target, self.lora_settings)
        if config.lora.init_from:
            load_kohya_lora(config.lora.init_from, denoiser.lora_target, settings=self.lora_settings, name_map=denoiser.lora_name_map, architecture=denoiser.architecture)

        # 4. Feedback models: frozen rewards and perception models; stage 2's discriminator is a
        #    trainable copy of one reward model (paper: the detail one).
        self.rewards = {spec.aspect: load_reward_model(spec.kind, spec.path).to(self.device) for spec in config.rewards}
        self.reward_specs = {spec.aspect: spec for spec in config.rewards}
        self.thresholds = {aspect: self._threshold(spec, self.rewards[aspect]) for aspect, spec in self.reward_specs.items()}
        self.perception = [(spec, load_perception_model(spec.kind, spec.path).to(self.device)) for spec in config.perception]
        self.discriminator = None
        if self.uses_adversarial:
            self.discriminator = copy.deepcopy(self.rewards[config.adversarial.discriminator_from]).train()
            self.discriminator.requires_grad_(True)
            if not any(p.requires_grad for p in self.discriminator.parameters()):
                raise ValueError(f"the {config.adversarial.discriminator_from!r} reward model ({self.reward_specs[config.adversarial.discriminator_from].kind}) has no parameters to train as a discriminator; use a learned reward model")

        # 5. Data: real images (PeFL, adversarial, denoising regulariser) and prompts (aesthetic).
        self.images = image_dataset if image_dataset is not None else self._image_dataset()
        self.prompts = list(prompts) if prompts is not None else self._prompts()
        self.encode = PromptCache(denoiser)
        self._check_data()

        # 6. Optimizers (prepared by Accelerate for fp16 loss scaling) and the warm-up schedule.
        self.optimizer = self.accelerator.prepare_optimizer(torch.optim.AdamW(self.lora_params, lr=opt.learning_rate, weight_decay=opt.weight_decay))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, lambda s: min(1.0, (s + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0)
        self.d_optimizer = None
        if self.discriminator is not None:
            self.d_optimizer = self.accelerator.prepare_optimizer(torch.optim.AdamW(self.discriminator.parameters(), lr=config.adversarial.discriminator_lr))

    # -- set-up helpers ----------------------------------------------------------------------------

    @property
    def uses_pefl(self) -> bool:
        return self.config.stage == "1" and self.config.pefl.weight > 0 and bool(self.perception)

    @property
    def uses_adversarial(self) -> bool:
        return self.config.stage == "2" and self.config.adversarial.weight > 0

    @property
    def uses_aesthetic(self) -> bool:
        return self.config.aesthetic.weight > 0 and bool(self.rewards)

    @property
    def needs_real_images(self) -> bool:
        return self.uses_pefl or self.uses_adversarial or self.config.regularizer.denoising_weight > 0

    def _threshold(self, spec, model) -> float:
        if spec.threshold is not None:
            return spec.threshold
        if getattr(model, "alpha", None) is not None:
            return float(model.alpha)
        raise ValueError(f"reward {spec.aspect!r} ({spec.kind}) has no threshold α_d: set threshold in its [[rewards]] table or use a model file that carries 'unifl.alpha'")

    def _image_dataset(self):
        data = self.config.data
        if not data.images:
            return None
        return image_dataset(data.images, data.resolution, data.source_images, data.source_seed)

    def _prompts(self) -> list[str]:
        if self.config.data.prompts:
            return load_prompts(self.config.data.prompts)
        return self.images.captions() if self.images is not None else []

    def _check_data(self) -> None:
        if self.needs_real_images and self.images is None:
            raise DataError("this run needs real images (PeFL, the adversarial stage or the denoising regulariser): set data.images to a folder or a source name ('pocket'), or set regularizer.denoising_weight = 0")
        if self.uses_aesthetic and not self.prompts:
            raise DataError("aesthetic feedback needs prompts: set data.prompts to a prompt file (one per line) or data.images to captioned images")
        if self.uses_pefl:
            first = collate([self.images[0]])
            for spec, _ in self.perception:
                if spec.aspect == "structure" and "targets" not in first:
                    raise DataError(f"PeFL structure ({spec.kind}) needs instance masks, but {self.config.data.images} has none: add <image>.instances.png + .instances.json files or remove that [[perception]] entry")
                if spec.aspect == "layout" and "semantic_mask" not in first:
                    raise DataError(f"PeFL layout ({spec.kind}) needs semantic masks, but {self.config.data.images} has none: add <image>.semantic.png files or remove that [[perception]] entry")

    def describe(self) -> str:
        """The derived batch and step math, printed at start (ddpo-pytorch does this; people need it)."""
        c, a = self.config, self.accelerator
        per_step = c.optim.batch_size * c.optim.gradient_accumulation_steps * a.num_processes
        terms = [name for name, on in (("PeFL", self.uses_pefl), ("aesthetic", self.uses_aesthetic), ("adversarial", self.uses_adversarial), ("denoising", c.regularizer.denoising_weight > 0), ("base-KL", c.regularizer.base_kl_weight > 0)) if on]
        lines = [
            f"UniFL stage {c.stage} on {self.denoiser.architecture} ({a.num_processes} process(es), {self.device}, mixed precision {c.optim.mixed_precision})",
            f"  feedback terms: {', '.join(terms) or 'none'}",
            f"  samples per optimizer step and term: {c.optim.batch_size} per device × {c.optim.gradient_accumulation_steps} accumulation × {a.num_processes} processes = {per_step}",
            f"  {c.optim.max_steps} steps → {c.optim.max_steps * per_step} samples per term; {len(self.images) if self.images is not None else 0} real images, {len(self.prompts)} prompts",
            f"  LoRA rank {c.lora.rank}, alpha {c.lora.alpha} ({c.lora.targets}): {sum(p.numel() for p in self.lora_params):,} trainable parameters",
        ]
        return "\n".join(lines)

    # -- the feedback terms ------------------------------------------------------------------------

    def _real_batch(self, micro_step: int) -> dict:
        idx = batch_indices(self.config.optim.seed, micro_step, self.config.optim.batch_size, len(self.images), stream=0, rank=self.accelerator.process_index, world=self.accelerator.num_processes)
        batch = collate([self.images[i] for i in idx])
        with torch.no_grad():
            batch["latents"] = self.denoiser.encode_images(batch["image"].to(self.device))
        return batch

    def _prompt_batch(self, micro_step: int) -> list[str]:
        idx = batch_indices(self.config.optim.seed, micro_step, self.config.optim.batch_size, len(self.prompts), stream=1, rank=self.accelerator.process_index, world=self.accelerator.num_processes)
        return [self.prompts[i] for i in idx]

    def pefl_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        p = self.config.pefl
        x0, _ = pefl_rollout(self.denoiser, batch["latents"], self.encode(batch["caption"]), num_steps=p.inference_steps, noise_level=p.noise_level, grad_levels=tuple(p.grad_levels), generator=generator)
        images = self.denoiser.decode_latents(x0)
        terms = {}
        for spec, model in self.perception:
            if spec.aspect == "style":
                terms[f"pefl_style_{spec.kind}"] = spec.weight * pefl_style_loss(model, images, batch["image"].to(images))
            elif spec.aspect == "structure":
                targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch["targets"]]
                terms[f"pefl_structure_{spec.kind}"] = spec.weight * pefl_structure_loss(model, images, targets)
            else:
                terms[f"pefl_layout_{spec.kind}"] = spec.weight * pefl_layout_loss(model, images, batch["semantic_mask"].to(self.device))
        return p.weight * sum(terms.values()), terms

    def aesthetic_loss(self, prompts: list[str], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        a, res = self.config.aesthetic, self.config.data.resolution
        f = self.denoiser.vae_scale_factor
        guidance = guided_x0(self.denoiser, self.encode([""]), a.cfg) if a.cfg != 1.0 else None
        shape = (len(prompts), self.denoiser.latent_channels, res // f, res // f)
        x0, _ = aesthetic_rollout(self.denoiser, self.encode(prompts), shape, num_steps=a.inference_steps, grad_levels=tuple(a.grad_levels), generator=generator, guidance=guidance)
        images = self.denoiser.decode_latents(x0)
        scores = {aspect: model(images, prompts) for aspect, model in self.rewards.items()}
        weights = {aspect: spec.weight for aspect, spec in self.reward_specs.items()}
        total, hinges = decoupled_aesthetic_loss(scores, self.thresholds, weights)
        logs = {f"aes_hinge_{k}": v for k, v in hinges.items()} | {f"reward_{k}": v.mean() for k, v in scores.items()}
        return a.weight * total, logs

    def adversarial_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict, torch.Tensor]:
        adv = self.config.adversarial
        x0, _ = adversarial_rollout(self.denoiser, batch["latents"], self.encode(batch["caption"]), num_steps=adv.inference_steps, spacing=adv.timestep_spacing, start_level=adv.start_level, grad_levels=tuple(adv.grad_levels), generator=generator)
        images = self.denoiser.decode_latents(x0)
        self.discriminator.requires_grad_(False)  # the generator step must not write D's gradients
        fake_scores = self.discriminator(images, self._d_prompts(batch["caption"]))
        self.discriminator.requires_grad_(True)
        return adv.weight * generator_loss(fake_scores), {"d_fake_score": fake_scores.mean()}, images.detach()

    def _d_prompts(self, captions: list[str]) -> list[str]:
        return captions if self.config.adversarial.discriminator_text_conditioned else [""] * len(captions)

    def discriminator_step(self, real_images: torch.Tensor, fake_images: torch.Tensor, captions: list[str]) -> dict:
        prompts = self._d_prompts(captions)
        with self.accelerator.autocast():
            loss = discriminator_loss(self.discriminator(real_images, prompts), self.discriminator(fake_images.clamp(0, 1), prompts))
        self._check_finite("discriminator", loss)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self._sync_gradients(list(self.discriminator.parameters()))
        self.d_optimizer.step()
        return {"d_loss": loss.detach()}

    def regularizer_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        r, d = self.config.regularizer, self.denoiser
        x0 = batch["latents"]
        t = torch.randint(0, d.num_train_timesteps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        x_t = d.add_noise(x0, noise, t)
        cond = self.encode(batch["caption"])
        output = d.predict_model_output(x_t, t, cond)
        logs, total = {}, 0.0
        if r.denoising_weight > 0:
            target = sched.model_target(x0, noise, sched.signal_level(d.alphas_cumprod, t), d.prediction_type)
            logs["denoising"] = denoising_loss(output, target)
            total = total + r.denoising_weight * logs["denoising"]
        if r.base_kl_weight > 0:
            with torch.no_grad(), d.adapters_disabled():
                base = d.predict_model_output(x_t, t, cond)
            logs["base_kl"] = base_model_kl(output, base)
            total = total + r.base_kl_weight * logs["base_kl"]
        return total, logs

    # -- the loop ------------------------------------------------------------------------------------

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value).all():
            found = ckpt.list_checkpoints(self.run_dir)
            last = f"the last good checkpoint is {found[-1]} (resume with --resume latest)" if found else "no checkpoint was written yet"
            raise TrainingDiverged(f"the {name} loss became {value.item()} at step {self.step}; {last}. Lower optim.learning_rate, enable optim.max_grad_norm, or use fp32/bf16 instead of fp16.")

    def _backward(self, name: str, loss, logs: dict, into: dict) -> None:
        if not torch.is_tensor(loss):
            return
        self._check_finite(name, loss)
        self.accelerator.backward(loss / self.config.optim.gradient_accumulation_steps)
        for key, value in {name: loss, **logs}.items():
            into[key] = into.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value) / self.config.optim.gradient_accumulation_steps

    def _sync_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients across processes. Host modules are not wrapped in DDP (the seam stays
        host-neutral), so the LoRA's few parameters are all-reduced explicitly."""
        if self.accelerator.num_processes > 1:
            for p in params:
                if p.grad is not None:
                    p.grad = self.accelerator.reduce(p.grad, reduction="mean")

    def train_step(self) -> dict:
        """One optimizer step: every enabled term on ``gradient_accumulation_steps`` micro-batches."""
        opt, logs = self.config.optim, {}
        d_real, d_fake, d_captions = [], [], []
        for micro in range(opt.gradient_accumulation_steps):
            if self.callbacks.should_stop and self.callbacks.should_stop():
                raise TrainingStopped
            micro_step = self.step * opt.gradient_accumulation_steps + micro
            gen = lambda stream: step_generator(opt.seed, self.step, micro, stream, self.accelerator.process_index)  # noqa: E731
            batch = self._real_batch(micro_step) if self.needs_real_images else None
            with self.accelerator.autocast():
                if self.uses_pefl:
                    self._backward("pefl", *self.pefl_loss(batch, gen(0)), logs)
                if self.uses_adversarial:
                    loss, extra, fake = self.adversarial_loss(batch, gen(2))
                    self._backward("adv_g", loss, extra, logs)
                    d_real.append(batch["image"].to(self.device))
                    d_fake.append(fake)
                    d_captions += batch["caption"]
                if self.uses_aesthetic:
                    self._backward("aesthetic", *self.aesthetic_loss(self._prompt_batch(micro_step), gen(1)), logs)
                if batch is not None and (self.config.regularizer.denoising_weight > 0 or self.config.regularizer.base_kl_weight > 0):
                    self._backward("regularizer", *self.regularizer_loss(batch, gen(3)), logs)
        self._sync_gradients(self.lora_params)
        if opt.max_grad_norm > 0:
            logs["grad_norm"] = float(self.accelerator.clip_grad_norm_(self.lora_params, opt.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.discriminator is not None and d_real:
            logs |= {k: float(v) for k, v in self.discriminator_step(torch.cat(d_real), torch.cat(d_fake), d_captions).items()}
        logs["lr"] = self.scheduler.get_last_lr()[0]
        return logs

    def sampler_contract(self) -> SamplerContract:
        return sampler_contract(self.config)

    def validate(self) -> Path | None:
        """Validation images with the deployment sampler, saved as a grid and sent to ``on_preview``."""
        from ..images import save_grid, to_pil

        prompts = self.config.logging.validation_prompts or self.prompts[:4]
        if not prompts or not self.accelerator.is_main_process:
            return None
        contract = self.sampler_contract()
        res = self.config.data.resolution
        images = generate(self.denoiser, prompts, list(range(len(prompts))), height=res, width=res, steps=contract.steps, spacing=contract.timestep_spacing, cfg=contract.cfg)
        path = save_grid(images, self.run_dir / "samples" / f"step-{self.step:06d}.png", columns=min(4, len(prompts)))
        if self.callbacks.on_preview:
            self.callbacks.on_preview(self.step, to_pil(images))
        return path

    def save_checkpoint(self) -> Path | None:
        if not self.accelerator.is_main_process:
            return None
        tensors = {"lora": lora_state_dict(self.denoiser.lora_target)}
        optimizers = {"optimizer": self.optimizer.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict()}
        if self.discriminator is not None:
            tensors["discriminator"] = self.discriminator.state_dict()
            optimizers["discriminator_optimizer"] = self.d_optimizer.optimizer.state_dict()
        state = {"step": self.step, "stage": self.config.stage, "config": to_dict(self.config)}
        return ckpt.save_checkpoint(self.run_dir, self.step, tensors, optimizers, state, self.config.logging.keep_checkpoints)

    def load_checkpoint(self, path: Path) -> None:
        tensors, optimizers, state = ckpt.load_checkpoint(path)
        if state.get("stage") != self.config.stage:
            raise ValueError(f"checkpoint {path} is from stage {state.get('stage')} but this run is stage {self.config.stage}")
        load_lora_state_dict(self.denoiser.lora_target, tensors["lora"])
        self.optimizer.optimizer.load_state_dict(optimizers["optimizer"])
        self.scheduler.load_state_dict(optimizers["lr_scheduler"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(tensors["discriminator"])
            self.d_optimizer.optimizer.load_state_dict(optimizers["discriminator_optimizer"])
        self.step = int(state["step"])

    @property
    def lora_path(self) -> Path:
        return self.run_dir / f"{self.config.logging.output_name}.safetensors"

    def training_metadata(self) -> dict[str, str]:
        """What the A1111 Lora card and kohya tools show about how the file was trained."""
        c, d = self.config, self.denoiser
        return {
            "unifl.stage": c.stage,
            "unifl.steps_trained": str(self.step),
            "unifl.host": d.host,
            "ss_sd_model_name": Path(d.source).name if d.source else "",
            "ss_resolution": f"({c.data.resolution}, {c.data.resolution})",
            "ss_learning_rate": repr(c.optim.learning_rate),
            "ss_max_train_steps": str(c.optim.max_steps),
            "ss_training_started_at": repr(self.started_at),
            "ss_training_finished_at": repr(time.time()),
        }

    def export(self, overwrite: bool = False) -> Path:
        """The deployable kohya LoRA: ``<output_dir>/<output_name>.safetensors``."""
        return save_kohya_lora(
            self.lora_path, self.denoiser.lora_target, self.lora_settings, naming=self.denoiser.module_naming, name_map=self.denoiser.lora_name_map, architecture=self.denoiser.architecture,
            metadata=self.training_metadata(),
            sampler=self.sampler_contract(), overwrite=overwrite,
        )

    @owns_run_folder  # one run per folder: the main process holds <run_dir>/run.lock until train() returns
    def train(self, resume: str | None = None, overwrite: bool = False) -> TrainResult:
        """Run to ``optim.max_steps`` (or until stopped); returns where the LoRA went."""
        c = self.config
        self.step = 0
        if resume:
            self.load_checkpoint(ckpt.resolve_resume(self.run_dir, resume))
        elif not overwrite and (ckpt.list_checkpoints(self.run_dir) or self.lora_path.exists()):
            raise FileExistsError(f"{self.run_dir} already holds another run (checkpoints or {self.lora_path.name}): pass --resume latest to continue it, --overwrite to replace it, or choose another logging.output_dir")
        elif overwrite and self.accelerator.is_main_process:
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)  # else "latest" could pick the old run's
        if self.accelerator.is_main_process:
            print(self.describe())
        logger = RunLogger(self.run_dir, c.logging.tensorboard and self.accelerator.is_main_process, resume_step=self.step if resume else None)
        self.denoiser.lora_target.train()
        bar = tqdm(total=c.optim.max_steps, initial=self.step, desc=f"UniFL stage {c.stage}", disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        logs, stopped, started = {}, False, time.time()
        self.started_at = started
        try:
            while self.step < c.optim.max_steps:
                logs = self.train_step()
                self.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("pefl", "aesthetic", "adv_g", "d_loss", "regularizer")})
                if self.step % c.logging.log_every == 0 and self.accelerator.is_main_process:
                    logger.log(self.step, logs | {"seconds": time.time() - started})
                if self.callbacks.on_progress:
                    self.callbacks.on_progress(self.step, c.optim.max_steps, logs)
                if self.step % c.logging.checkpoint_every == 0 and self.step < c.optim.max_steps:
                    self.save_checkpoint()
                if c.logging.validate_every and self.step % c.logging.validate_every == 0 and self.step < c.optim.max_steps:
                    self.validate()
        except TrainingStopped:
            stopped = True
        finally:
            bar.close()
            logger.close()
        self.save_checkpoint()
        self.validate()
        # This run's own file (checked free, or resumed, at the start), so replacing it loses nothing.
        lora_path = self.export(overwrite=True) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        return TrainResult(self.run_dir, lora_path, self.step, stopped, logs)
