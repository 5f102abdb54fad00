"""The UniFL trainer: one loop for both stages, written against the denoiser seam.

Read it top to bottom like a diffusers training script: numbered set-up phases in ``__init__``, then
``train()``'s loop. Each feedback term is back-propagated as soon as it is computed, so only one
rollout's graph is alive at a time (the same gradient as summing the terms, at a fraction of the peak
memory). A step whose gradient is not finite is never applied, and a checkpoint is never written with
non-finite weights. The host's stop request is polled before every feedback term and every rollout step.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import TrainConfig, to_dict
from ..data import DataError, batch_indices, collate, image_dataset, load_prompts
from ..diffusion import schedule as sched
from ..diffusion.denoiser import Conditioning, Denoiser
from ..diffusion.rollouts import adversarial_rollout, aesthetic_rollout, pefl_rollout, step_count_rollout, trajectory_rollout
from ..diffusion.sampling import guided_x0
from ..feedback.discriminator import make_discriminator, trainable_parameters
from ..feedback.loading import load_perception_model, load_reward_model
from ..feedback.losses import decoupled_aesthetic_loss, discriminator_fake_loss, discriminator_loss, discriminator_real_loss, generator_loss
from ..feedback.losses.regularizers import base_model_kl, denoising_loss
from ..feedback.perception import pefl_layout_loss, pefl_structure_loss, pefl_style_loss
from ..lora.kohya import SamplerContract, load_kohya_lora, save_kohya_lora
from ..lora.peft import add_lora, load_lora_state_dict, lora_state_dict, settings_from_config
from ..progress import progress_bar
from . import checkpoint as ckpt
from .logs import RunLogger
from .outputs import RUN_LOG, describe_run, sampler_contract, training_metadata, validation_images
from .precision import DTYPES, MixedPrecision
from .run_lock import owns_run_folder
from .terms import loss_terms, needs_real_images

#: The terms a step back-propagates, as they are logged.
LOSS_TERMS = ("pefl", "adv_g", "aesthetic", "regularizer")


@dataclass
class Fakes:
    """The generator's predictions of one micro-batch, clamped and detached, for the discriminator's step.

    With ``adversarial.reuse_fake_scores`` the step's fake half is already done: ``fake_loss`` is
    ``mean softplus(r_fake)`` of the generator's own scoring of these images (the same discriminator
    parameters, the same images) and ``fake_grads`` its gradient in the discriminator's trainable
    parameters, scaled by the discriminator's loss scale; the step then scores only the real images."""

    images: torch.Tensor
    fake_loss: torch.Tensor | None = None
    fake_grads: tuple[torch.Tensor | None, ...] | None = None


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept and named in the message."""


class TrainingStopped(Exception):
    """Raised inside a step when ``should_stop`` says so; caught by :meth:`UniFLTrainer.train`, which
    saves the last finished step and skips the end-of-run validation."""


@dataclass
class TrainerCallbacks:
    """Hooks for host adapters (ComfyUI ProgressBar, gradio progress, A1111 ``shared.state``).

    Args:
        on_progress: ``(step, total_steps, logs)`` after every optimizer step.
        on_preview: ``(step, images)`` with PIL images whenever validation images are made.
        should_stop: polled before every feedback term and every rollout step; returning True abandons
            the step in progress and stops cleanly after saving the last finished step.
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


def process_accelerator(cpu: bool):
    """The process's ``Accelerator``: devices, processes and collectives (``accelerate launch``; on CPUs
    Accelerate joins the process group only when asked for ``cpu``).

    Only that: its mixed-precision setting is a process-wide singleton that cannot change between the
    runs a host makes in one process, so each run keeps its own precision (:mod:`.precision`).
    """
    from accelerate import Accelerator

    try:
        return Accelerator(cpu=cpu)
    except ValueError:  # set up on a GPU by an earlier run of this process; a host now training on the
        return Accelerator()  # CPU keeps it: the run uses the host's device, and a host is one process


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

        # 1. Devices, processes and precision. A host hands us its model on the device it chose
        #    (ComfyUI --cpu on a GPU machine stays on the CPU); otherwise Accelerate's device.
        self.accelerator = process_accelerator(cpu=denoiser.device.type == "cpu" if denoiser is not None else not torch.cuda.is_available())
        self.device = denoiser.device if denoiser is not None else self.accelerator.device
        self.precision = MixedPrecision(opt.mixed_precision, self.device)

        # 2. The model, seen through the seam. The text encoders leave the accelerator: prompts are
        #    encoded once each (PromptCache) and the encoders never train.
        if denoiser is None:
            from ..diffusion.loading import load_denoiser

            denoiser = load_denoiser(config.model.path, architecture=config.model.architecture or None, dtype=DTYPES[config.model.dtype], device=self.device)
            if config.model.vae_dtype != config.model.dtype:
                denoiser.vae.to(DTYPES[config.model.vae_dtype])
        self.denoiser = denoiser
        denoiser.offload_text_encoders()
        if opt.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()

        # 3. The LoRA: the only trainable weights; fp32 under autocast.
        self.lora_settings = settings_from_config(config.lora)
        with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG: seed it
            torch.manual_seed(opt.seed)
            self.lora_params = add_lora(denoiser.lora_target, self.lora_settings)
        if config.lora.init_from:
            load_kohya_lora(config.lora.init_from, denoiser.lora_target, settings=self.lora_settings, name_map=denoiser.lora_name_map, architecture=denoiser.architecture)

        # 4. Feedback models: frozen rewards and perception models; stage 2's discriminator is a
        #    trainable copy of one reward model (paper: the detail one), or of its head alone, in fp32
        #    whatever the reward model's storage dtype (the frozen ones follow their spec's dtype).
        mp = opt.mixed_precision
        self.rewards = {spec.aspect: load_reward_model(spec.kind, spec.path, dtype=spec.resolved_dtype(mp)).to(self.device) for spec in config.rewards}
        self.reward_specs = {spec.aspect: spec for spec in config.rewards}
        self.thresholds = {aspect: self._threshold(spec, self.rewards[aspect]) for aspect, spec in self.reward_specs.items()}
        self.perception = [(spec, load_perception_model(spec.kind, spec.path, dtype=spec.resolved_dtype(mp)).to(self.device)) for spec in config.perception]
        self.discriminator, self.d_params = None, []
        if self.uses_adversarial:
            source = config.adversarial.discriminator_from
            self.discriminator = make_discriminator(self.rewards[source], config.adversarial.discriminator_trainable, name=f"{source!r} ({self.reward_specs[source].kind})")
            self.d_params = trainable_parameters(self.discriminator)

        # 5. Data: real images (PeFL, adversarial, denoising regulariser) and prompts (aesthetic).
        self.images = image_dataset if image_dataset is not None else self._image_dataset()
        self.prompts = list(prompts) if prompts is not None else self._prompts()
        self.encode = PromptCache(denoiser)
        self._check_data()

        # 6. Optimizers and diffusers' warm-up schedule.
        from diffusers.optimization import get_scheduler

        self.optimizer = torch.optim.AdamW(self.lora_params, lr=opt.learning_rate, weight_decay=opt.weight_decay)
        self.lr_schedule = get_scheduler("constant_with_warmup", self.optimizer, num_warmup_steps=opt.warmup_steps)
        self.d_optimizer = torch.optim.AdamW(self.d_params, lr=config.adversarial.discriminator_lr) if self.d_params else None

    # -- set-up helpers ----------------------------------------------------------------------------

    @property
    def uses_pefl(self) -> bool:
        return "PeFL" in self.feedback_terms

    @property
    def uses_adversarial(self) -> bool:
        return "adversarial" in self.feedback_terms

    @property
    def uses_aesthetic(self) -> bool:
        return "aesthetic" in self.feedback_terms

    @property
    def uses_regularizer(self) -> bool:
        return any(term in ("denoising", "base-KL") for term in self.feedback_terms)

    @property
    def needs_real_images(self) -> bool:
        return needs_real_images(self.config)

    @property
    def feedback_terms(self) -> list[str]:
        """Every loss of the step (:func:`~.terms.loss_terms`), regularisers included."""
        return loss_terms(self.config)

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
        return describe_run(self.config, architecture=self.denoiser.architecture, device=self.device, processes=self.accelerator.num_processes, terms=self.feedback_terms,
                            real_images=len(self.images) if self.images is not None else 0, prompts=len(self.prompts), lora_parameters=sum(p.numel() for p in self.lora_params))

    # -- the feedback terms ------------------------------------------------------------------------

    def _stop_if_asked(self) -> None:
        if self.callbacks.should_stop and self.callbacks.should_stop():
            raise TrainingStopped

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents → images, outside autocast: the VAE runs in its own storage dtype (an fp32 VAE stays
        fp32 under fp16 mixed precision; SDXL's VAE overflows in fp16)."""
        with self.precision.full_precision():
            return self.denoiser.decode_latents(latents)

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
        x0, _ = pefl_rollout(self.denoiser, batch["latents"], self.encode(batch["caption"]), num_steps=p.inference_steps, noise_level=p.noise_level, grad_levels=tuple(p.grad_levels), generator=generator, prefix_steps=p.prefix_steps, before_step=self._stop_if_asked)
        images = self._decode(x0)
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

    def aesthetic_schedule(self) -> tuple[int, str, tuple[int, int]]:
        """``(steps, spacing, grad levels)`` of the aesthetic rollout: the stage-1 schedule, or in stage 2 with
        ``aesthetic.stage2_schedule = "deployment"`` the few-step schedule its LoRA is sampled with, the
        grad levels clipped to it."""
        a, adv = self.config.aesthetic, self.config.adversarial
        if self.config.stage == "2" and a.stage2_schedule == "deployment":
            last = adv.inference_steps - 1
            return adv.inference_steps, adv.timestep_spacing, (min(a.grad_levels[0], last), min(a.grad_levels[1], last))
        return a.inference_steps, "leading", tuple(a.grad_levels)

    def aesthetic_scored_count(self, batch_size: int) -> int:
        """How many samples of a batch of ``batch_size`` the aspect rewards score (``aesthetic.scored_fraction``, at least one)."""
        return max(1, round(self.config.aesthetic.scored_fraction * batch_size))

    def aesthetic_loss(self, prompts: list[str], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        a, res = self.config.aesthetic, self.config.data.resolution
        prompts = prompts[: self.aesthetic_scored_count(len(prompts))]  # a smaller share rolls out fewer prompts
        f = self.denoiser.vae_scale_factor
        guidance = guided_x0(self.denoiser, self.encode([""]), a.cfg) if a.cfg != 1.0 else None
        shape = (len(prompts), self.denoiser.latent_channels, res // f, res // f)
        steps, spacing, levels = self.aesthetic_schedule()
        x0, _ = aesthetic_rollout(self.denoiser, self.encode(prompts), shape, num_steps=steps, spacing=spacing, grad_levels=levels, generator=generator, prefix_steps=a.prefix_steps, guidance=guidance, before_step=self._stop_if_asked)
        return self.aesthetic_scores_loss(self._decode(x0), prompts)

    def aesthetic_scores_loss(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict]:
        """``L_aes`` of decoded predictions: Σ_d w_d ReLU(α_d − r_d), weighted by ``aesthetic.weight``."""
        scores = {aspect: model(images, prompts) for aspect, model in self.rewards.items()}
        weights = {aspect: spec.weight for aspect, spec in self.reward_specs.items()}
        total, hinges = decoupled_aesthetic_loss(scores, self.thresholds, weights)
        logs = {f"aes_hinge_{k}": v for k, v in hinges.items()} | {f"reward_{k}": v.mean() for k, v in scores.items()}
        return self.config.aesthetic.weight * total, logs

    @property
    def shares_rollout(self) -> bool:
        """Stage 2 with ``aesthetic.stage2_schedule = "shared"``: the aspect rewards score the adversarial rollout."""
        return self.uses_adversarial and self.uses_aesthetic and self.config.aesthetic.stage2_schedule == "shared"

    def adversarial_rollout(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """The generator's predictions ``x0'`` on ``adversarial.schedule``, and what to log about where they were taken."""
        adv, d = self.config.adversarial, self.denoiser
        cond = self.encode(batch["caption"])
        if adv.schedule == "step-counts":
            x0, timesteps, counts = step_count_rollout(d, cond, tuple(batch["latents"].shape), step_counts=tuple(adv.step_counts), spacing=adv.timestep_spacing, generator=generator, before_step=self._stop_if_asked)
            return x0, {"adv_timestep": timesteps.float().mean(), "adv_step_count": counts.float().mean()}
        if adv.schedule == "trajectory":
            x0, timesteps = trajectory_rollout(d, batch["latents"], cond, num_steps=adv.trajectory_steps, spacing=adv.timestep_spacing, start_level=adv.start_level, generator=generator, before_step=self._stop_if_asked)
        else:
            x0, timesteps = adversarial_rollout(d, batch["latents"], cond, num_steps=adv.inference_steps, spacing=adv.timestep_spacing, start_level=adv.start_level, grad_levels=tuple(adv.grad_levels), generator=generator, before_step=self._stop_if_asked)
        return x0, {"adv_timestep": timesteps.float().mean()}

    def adversarial_loss(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict, Fakes]:
        """The generator term (plus ``L_aes`` of the same predictions when the rollout is shared, logged
        apart as ``aesthetic``), and the predictions for the discriminator's step. The discriminator
        scores in eval mode; its fakes are clamped to [0, 1] exactly as in its own step. Its parameters
        are frozen for this scoring, so this term writes no gradient into it, unless
        ``adversarial.reuse_fake_scores`` keeps them trainable to take the discriminator's fake half
        from the same scores (:class:`Fakes`); what the generator's backward then writes into them is
        cleared before the discriminator's step."""
        x0, logs = self.adversarial_rollout(batch, generator)
        decoded = self._decode(x0)
        images = decoded.clamp(0, 1)
        prompts = self._d_prompts(batch["caption"])
        if self.config.adversarial.reuse_fake_scores:
            fake_scores = self.discriminator(images, prompts)
            fake_loss = discriminator_fake_loss(fake_scores)
            # Only the discriminator's own graph is walked (its parameters are the only inputs), and kept
            # for the generator's backward through the same scores.
            scaled = self.precision.scaler("discriminator").scale(fake_loss)
            fakes = Fakes(images.detach(), fake_loss.detach(), torch.autograd.grad(scaled, self.d_params, retain_graph=True, allow_unused=True))
        else:
            for p in self.d_params:
                p.requires_grad_(False)
            try:
                fake_scores = self.discriminator(images, prompts)
            finally:
                for p in self.d_params:
                    p.requires_grad_(True)
            fakes = Fakes(images.detach())
        loss = self.config.adversarial.weight * generator_loss(fake_scores)
        logs["d_fake_score"] = fake_scores.detach().mean()
        if self.shares_rollout:  # the rewards see the decode unclamped, as in aesthetic_loss
            scored = self.aesthetic_scored_count(len(decoded))
            aesthetic, aesthetic_logs = self.aesthetic_scores_loss(decoded[:scored], list(batch["caption"])[:scored])
            logs |= aesthetic_logs | {"adv_g": loss.detach(), "aesthetic": aesthetic.detach()}
            loss = loss + aesthetic
        return loss, logs, fakes

    def _d_prompts(self, captions: list[str]) -> list[str]:
        return captions if self.config.adversarial.discriminator_text_conditioned else [""] * len(captions)

    def discriminator_step(self, real_images: torch.Tensor, fakes: Sequence[Fakes], captions: list[str]) -> dict:
        """One step of the discriminator on real images vs the generator's (detached) predictions of
        every micro-batch; its gradients are cleared before and after the step, so none are left over
        from or for anything else. Fakes whose scores were reused add their fake half as it was taken."""
        prompts = self._d_prompts(captions)
        self.d_optimizer.zero_grad(set_to_none=True)
        reused = fakes[0].fake_grads is not None
        with self.precision.autocast():
            real_scores = self.discriminator(real_images.clamp(0, 1), prompts)
            if reused:
                loss = discriminator_real_loss(real_scores)
            else:
                loss = discriminator_loss(real_scores, self.discriminator(torch.cat([f.images for f in fakes]), prompts))
        self.precision.backward("discriminator", loss)
        if reused:  # the fake half's mean over all fakes: each micro-batch's, weighted by its size
            shares = [len(f.images) / sum(len(f.images) for f in fakes) for f in fakes]
            loss = loss.detach() + sum(share * f.fake_loss for share, f in zip(shares, fakes))
            for share, f in zip(shares, fakes):
                for p, grad in zip(self.d_params, f.fake_grads):
                    if grad is not None:
                        p.grad = share * grad if p.grad is None else p.grad.add_(grad, alpha=share)
        self._average_gradients(self.d_params)
        norm = self.precision.unscaled_grad_norm("discriminator", self.d_optimizer, self.d_params, 0.0)
        if not math.isfinite(norm) and not self.precision.skips_non_finite_steps:
            self.d_optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(self._diverged(f"the discriminator's gradient became {norm}"))
        self.precision.step("discriminator", self.d_optimizer)
        self.d_optimizer.zero_grad(set_to_none=True)
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

    def _diverged(self, what: str) -> str:
        failed = ckpt.checkpoint_dir(self.run_dir, self.step)
        marked = ""
        if failed.is_dir() and self.accelerator.is_main_process:  # the state that just failed: --resume latest must not pick it
            ckpt.mark_diverged(failed, f"{what} at step {self.step + 1}")
            marked = f" ({failed.name}, the state that diverged, is marked so that --resume latest passes it over)"
        good = self.last_good_checkpoint(before_step=self.step)
        last = f"the last good checkpoint is {good} (resume with --resume {good})" if good else "no good checkpoint exists to resume from (start again with --overwrite)"
        return f"{what} at step {self.step + 1}; nothing of that step was applied and {last}{marked}. Lower optim.learning_rate, enable optim.max_grad_norm, or use fp32/bf16 instead of fp16."

    def last_good_checkpoint(self, before_step: int) -> Path | None:
        """The newest checkpoint older than ``before_step`` whose trained weights are all finite.

        The checkpoint of the state that just failed is left out even when its weights are finite: its
        next step is exactly the one that failed (data and noise are functions of the step), so resuming
        from it would fail the same way."""
        for path in reversed([p for p in ckpt.list_checkpoints(self.run_dir) if int(p.name.split("-")[1]) < before_step]):
            if ckpt.diverged_after(path) is not None:  # an earlier run diverged right after it
                continue
            try:
                tensors, _, _ = ckpt.load_checkpoint(path)
            except Exception:  # a damaged checkpoint is not a good one; look further back
                continue
            if all(torch.isfinite(t).all() for group in tensors.values() for t in group.values()):
                return path
        return None

    def _accumulate(self, name: str, loss, logs: dict, into: dict) -> None:
        """Back-propagate one term (scaled for accumulation) and keep its logs as tensors: reading them
        back would make the host wait for the device, so that happens once per step (:meth:`train_step`)."""
        if not torch.is_tensor(loss):
            return
        accumulation = self.config.optim.gradient_accumulation_steps
        self.precision.backward("generator", loss / accumulation)
        for key, value in {name: loss, **logs}.items():
            value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
            into[key] = into.get(key, 0.0) + value / accumulation

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients across processes in one collective over a flat buffer. Host modules are not
        wrapped in DDP (the seam stays host-neutral), so the LoRA's gradients are reduced here."""
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        for grad, averaged in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(averaged.view_as(grad))

    def train_step(self) -> dict[str, float]:
        """One optimizer step: every enabled term on ``gradient_accumulation_steps`` micro-batches.

        Run with the global random generator seeded from (seed, step): what draws from it inside the models
        (dropout in a reward head trained as the discriminator) is then the same in every run and resume."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_generator(self.config.optim.seed, self.step, 0, 4, self.accelerator.process_index).initial_seed())
            return self._train_step()

    def _train_step(self) -> dict[str, float]:
        opt, logs = self.config.optim, {}
        d_real, d_fakes, d_captions = [], [], []
        try:
            for micro in range(opt.gradient_accumulation_steps):
                micro_step = self.step * opt.gradient_accumulation_steps + micro
                gen = lambda stream: step_generator(opt.seed, self.step, micro, stream, self.accelerator.process_index)  # noqa: E731
                self._stop_if_asked()
                batch = self._real_batch(micro_step) if self.needs_real_images else None
                with self.precision.autocast():
                    if self.uses_pefl:
                        self._accumulate("pefl", *self.pefl_loss(batch, gen(0)), logs)
                        self._stop_if_asked()
                    if self.uses_adversarial:
                        loss, extra, fakes = self.adversarial_loss(batch, gen(2))
                        self._accumulate("adv_g", loss, extra, logs)
                        d_real.append(batch["image"].to(self.device))
                        d_fakes.append(fakes)
                        d_captions += batch["caption"]
                        self._stop_if_asked()
                    if self.uses_aesthetic and not self.shares_rollout:  # shared: back-propagated with adv_g, logged apart
                        self._accumulate("aesthetic", *self.aesthetic_loss(self._prompt_batch(micro_step), gen(1)), logs)
                        self._stop_if_asked()
                    if batch is not None and self.uses_regularizer:
                        self._accumulate("regularizer", *self.regularizer_loss(batch, gen(3)), logs)
        except BaseException:
            self.optimizer.zero_grad(set_to_none=True)  # an abandoned step leaves nothing behind
            raise
        self._average_gradients(self.lora_params)
        grad_norm = self.precision.unscaled_grad_norm("generator", self.optimizer, self.lora_params, opt.max_grad_norm)
        values = dict(zip(logs, torch.stack([v.to(self.device) for v in logs.values()]).tolist())) if logs else {}
        non_finite = [k for k in LOSS_TERMS if not math.isfinite(values.get(k, 0.0))]
        if non_finite or (not math.isfinite(grad_norm) and not self.precision.skips_non_finite_steps):
            self.optimizer.zero_grad(set_to_none=True)
            what = f"the {', '.join(non_finite)} loss became {values[non_finite[0]]}" if non_finite else f"the LoRA's gradient norm became {grad_norm}"
            raise TrainingDiverged(self._diverged(what))
        self.precision.step("generator", self.optimizer)
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        values["grad_norm"] = grad_norm
        if self.discriminator is not None and d_real:
            values |= {k: float(v) for k, v in self.discriminator_step(torch.cat(d_real), d_fakes, d_captions).items()}
        values["lr"] = self.lr_schedule.get_last_lr()[0]
        return values

    def sampler_contract(self) -> SamplerContract:
        return sampler_contract(self.config)

    def validate(self) -> Path | None:
        """Validation images with the deployment sampler, saved as a grid and sent to ``on_preview``."""
        from ..images import save_grid, to_pil

        prompts = self.config.logging.validation_prompts or self.prompts[:4]
        if not prompts or not self.accelerator.is_main_process:
            return None
        images = validation_images(self.denoiser, self.config, prompts)
        path = save_grid(images, self.run_dir / "samples" / f"step-{self.step:06d}.png", columns=min(4, len(prompts)))
        if self.callbacks.on_preview:
            self.callbacks.on_preview(self.step, to_pil(images))
        return path

    def save_checkpoint(self) -> Path | None:
        """Save the finished steps; refuses (TrainingDiverged) to write weights that are not finite."""
        if not self.accelerator.is_main_process:
            return None
        tensors = {"lora": lora_state_dict(self.denoiser.lora_target)}
        optimizers = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_schedule.state_dict(), "grad_scalers": self.precision.state_dict()}
        if self.discriminator is not None:
            tensors["discriminator"] = {name: p.detach() for name, p in self.discriminator.named_parameters() if p.requires_grad}
            optimizers["discriminator_optimizer"] = self.d_optimizer.state_dict()
        broken = sorted(f"{group}:{key}" for group, sd in tensors.items() for key, t in sd.items() if not torch.isfinite(t).all())
        if broken:
            raise TrainingDiverged(self._diverged(f"{len(broken)} trained tensor(s) became non-finite (e.g. {broken[0]})").replace(" at step", " before the checkpoint of step"))
        state = {"step": self.step, "stage": self.config.stage, "architecture": self.denoiser.architecture, "config": to_dict(self.config)}
        return ckpt.save_checkpoint(self.run_dir, self.step, tensors, optimizers, state, self.config.logging.keep_checkpoints)

    def load_checkpoint(self, path: Path) -> None:
        tensors, optimizers, state = ckpt.load_checkpoint(path)
        if state.get("stage") != self.config.stage:
            raise ValueError(f"checkpoint {path} is from stage {state.get('stage')} but this run is stage {self.config.stage}")
        ckpt.check_model_family(path, state, self.denoiser.architecture)
        load_lora_state_dict(self.denoiser.lora_target, tensors["lora"])
        self.optimizer.load_state_dict(optimizers["optimizer"])
        self.lr_schedule.load_state_dict(optimizers["lr_scheduler"])
        self.precision.load_state_dict(optimizers.get("grad_scalers", {}))
        if self.discriminator is not None:
            params = dict(self.discriminator.named_parameters())
            with torch.no_grad():
                for name, value in tensors["discriminator"].items():
                    params[name].copy_(value)
            self.d_optimizer.load_state_dict(optimizers["discriminator_optimizer"])
        self.step = int(state["step"])

    @property
    def lora_path(self) -> Path:
        return self.run_dir / f"{self.config.logging.output_name}.safetensors"

    def export(self, overwrite: bool = False) -> Path:
        """The deployable kohya LoRA: ``<output_dir>/<output_name>.safetensors``."""
        return save_kohya_lora(
            self.lora_path, self.denoiser.lora_target, self.lora_settings, naming=self.denoiser.module_naming, name_map=self.denoiser.lora_name_map, architecture=self.denoiser.architecture,
            metadata=training_metadata(self.config, self.denoiser, self.step, self.started_at),
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
            RUN_LOG.info("%s", self.describe())
        logger = RunLogger(self.run_dir, c.logging.tensorboard and self.accelerator.is_main_process, resume_step=self.step if resume else None)
        self.denoiser.lora_target.train()
        bar = progress_bar(total=c.optim.max_steps, initial=self.step, desc=f"UniFL stage {c.stage}", disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        logs, stopped, started = {}, False, time.time()
        self.started_at = started
        try:
            while self.step < c.optim.max_steps:
                logs = self.train_step()
                self.step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in (*LOSS_TERMS, "d_loss")})
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
        if not stopped:  # a user who pressed Stop wants the host back, not more images
            self.validate()
        # This run's own file (checked free, or resumed, at the start), so replacing it loses nothing.
        lora_path = self.export(overwrite=True) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        return TrainResult(self.run_dir, lora_path, self.step, stopped, logs)
