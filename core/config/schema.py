"""The typed training configuration: one dataclass a section, one documented field a setting.

Every field carries its documentation in ``metadata["help"]`` (TRL/HfArgumentParser style), so the same
text feeds ``unifl train --explain``, ``docs/config-reference.md`` and the UIs' tooltips. Paper values
are the defaults; where the paper is silent the choice and its reason are in ``docs/paper-choices.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, with the file/field named and the fix suggested."""


def doc(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its documentation attached."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    """The base model that receives the LoRA."""

    path: str = doc("", "A diffusers pipeline folder or a single-file checkpoint (.safetensors) in the layout ComfyUI/A1111 keep in their models folder, or 'pocket' for the embedded pocket-world model. Loaded offline.")
    architecture: str = doc("", "'sd15' or 'sdxl'; empty = detect from the file.")
    dtype: str = doc("fp32", "Storage dtype of the frozen UNet and text encoders: 'fp32', 'fp16' or 'bf16'. LoRA parameters always stay fp32.")
    vae_dtype: str = doc("fp32", "Storage dtype of the VAE. fp32 by default because the SDXL VAE overflows in fp16.")


@dataclass
class LoRAConfig:
    """The LoRA that carries both stages."""

    rank: int = doc(16, "LoRA rank (ss_network_dim).")
    alpha: float = doc(16.0, "LoRA alpha; the effective scale is alpha/rank. Written to the file as the true alpha.")
    targets: str = doc("attention", "Which UNet layers get LoRA: 'attention' (to_q/k/v/out), 'attention+ff' (adds feed-forward) or 'all' (adds proj_in/out, resnet convs, time embedding).")
    init_from: str = doc("", "A kohya LoRA file to continue from (stage 2 starts from the stage-1 LoRA). Empty = a fresh, zero-effect LoRA.")
    dropout: float = doc(0.0, "Dropout on the LoRA input during training (peft lora_dropout), in [0, 1).")
    init: str = doc("default", "Initialisation of a fresh LoRA: 'default' (A Kaiming-uniform, B zero) or 'gaussian' (A normal with std 1/rank, B zero). Both start as a no-op.")


@dataclass
class DataConfig:
    """Where real images and prompts come from."""

    images: str = doc("", "Folder of real images with a caption .txt beside each (and optional .instances.png/.semantic.png masks for PeFL structure/layout), or the name of a registered procedural source ('pocket': the embedded pocket world). Used by PeFL, the adversarial stage and the denoising regulariser.")
    prompts: str = doc("", "Text file with one prompt per line for aesthetic rollouts (ideally the output of `unifl select-prompts`). Empty = the captions of `images`.")
    resolution: int = doc(512, "Training resolution in pixels (square; images are resized on the short side and centre-cropped). 1024 for SDXL.")
    source_images: int = doc(4096, "How many images a procedural source makes (images = 'pocket').")
    source_seed: int = doc(1, "Seed of a procedural source's images (the pocket model was pretrained on pocket seed 0, its held-out evaluators use 101+).")


@dataclass
class PeFLConfig:
    """Perceptual feedback learning (paper §4.1): real image → noise to level T_a → no-grad DDIM to a random late level t → one grad step to x0 → the perception model's own loss."""

    weight: float = doc(1.0, "λ of L_pefl (the paper leaves it unspecified).")
    inference_steps: int = doc(20, "DDIM steps of the rollout schedule (paper: 20).")
    noise_level: int = doc(10, "T_a: the schedule level (counted from the clean end, 0 = last DDIM step) the real latent is noised to (paper: 10 of 20).")
    grad_levels: list = doc([0, 5], "Inclusive range [lo, hi] of the level (from the clean end) where the one grad step is taken (paper: t ∈ [0, 5]). Drawn once per sample.")
    prefix_steps: int = doc(0, "No-grad DDIM steps from T_a to the grad step: 0 = every step of the schedule between them (the sampler's own trajectory); k > 0 = at most k steps evenly spaced in timestep between the same two ends, a coarser solve of that trajectory for fewer UNet evaluations.")


@dataclass
class AestheticConfig:
    """Decoupled aesthetic feedback (paper §4.2): pure noise → no-grad DDIM → one grad step at a late level → Σ_d w_d ReLU(α_d − r_d)."""

    weight: float = doc(1.0, "Weight of L_aes.")
    inference_steps: int = doc(20, "DDIM steps of the stage-1 rollout schedule (leading spacing, as the 20-step sampler).")
    grad_levels: list = doc([0, 5], "Inclusive range of the grad level from the clean end (the paper gives no window for L_aes; ReFL uses the last quarter of the trajectory). In stage 2 it is clipped to the few-step schedule.")
    prefix_steps: int = doc(0, "No-grad DDIM steps from pure noise to the grad step: 0 = every step of the schedule above it (the sampler's own trajectory); k > 0 = at most k steps evenly spaced in timestep between the same two ends, a coarser solve of that trajectory (with the grad step late in 20, 4 steps in place of 14 to 19).")
    stage2_schedule: str = doc("rollout", "Rollout schedule of the aesthetic term in stage 2: 'rollout' (inference_steps with leading spacing, as in stage 1), 'deployment' (the few-step schedule of the adversarial section, the one the stage-2 LoRA is sampled with) or 'shared' (no rollout of its own: the aspect rewards score the adversarial term's predictions, of the real images' captions, and both terms take one backward; about 5x fewer UNet evaluations per step than 'rollout'; with the adversarial term off it rolls out as 'rollout'). docs/paper-choices.md has them measured.")
    scored_fraction: float = doc(1.0, "Share of each batch the aspect rewards score (at least one sample): below 1 the aesthetic rollout runs on that share of the prompts, or with stage2_schedule = 'shared' the rewards score that share of the adversarial rollout's predictions. Fewer reward and UNet evaluations per step for a noisier L_aes.")
    cfg: float = doc(1.0, "Classifier-free guidance of the rollout, the no-grad prefix and the grad step alike (1.0 = off, as ReFL and the same team's ID-Aligner do; CFG doubles the grad step's memory).")


@dataclass
class AdversarialConfig:
    """Adversarial feedback (paper §4.3): a reward model updated online as a discriminator, the step that makes few-step sampling work."""

    weight: float = doc(1.0, "Weight of the generator term L_G = −r_a(x0', c).")
    schedule: str = doc("few-step", "Which schedules the adversarial rollout trains: 'few-step' (the inference_steps sampler, from pure noise, grad at a position in grad_levels), 'step-counts' (per sample a count drawn from step_counts and that sampler's own schedule, from pure noise, grad at any of its steps: one LoRA for several step counts) or 'trajectory' (the paper's reading: the real latent noised to position start_level of the trajectory_steps schedule, grad at any later position).")
    inference_steps: int = doc(4, "Steps of the few-step schedule trained for ('few-step'), and the LoRA's default step count (its sampler contract).")
    step_counts: list = doc([1, 2, 4, 8], "Step counts trained at once with schedule = 'step-counts', each with timestep_spacing; one is drawn per sample. Written into the LoRA's sampler contract (unifl.sampler.step_counts); must hold inference_steps.")
    trajectory_steps: int = doc(20, "Steps of the schedule the 'trajectory' rollout runs along (paper: the 20-step DDIM trajectory, t ∈ [0, 20]).")
    timestep_spacing: str = doc("trailing", "Spacing of the few-step schedules: 'trailing' starts at t = 999 like the deployed sampler.")
    grad_levels: list = doc([0, 3], "Inclusive range of schedule positions (0 = the noisiest) where the grad step is taken with schedule = 'few-step': any step of the few-step schedule (paper: t ∈ [0, 20], the whole trajectory).")
    start_level: int = doc(0, "Position where the rollout starts. 'few-step': 0 = pure noise, where sampling starts; k > 0 = the real latent noised to position k. 'trajectory': the real latent noised to position k of the trajectory_steps schedule (0 = t 999 with trailing spacing).")
    discriminator_from: str = doc("detail", "Aspect whose reward model initialises the discriminator (paper: detail).")
    discriminator_trainable: str = doc("auto", "What of the discriminator trains: 'all' (a full copy of the reward model), 'head' (its 'head' module alone; the frozen trunk is shared, not copied), 'head+N' (the head and copies of the trunk's last N blocks, those nearest the head; the rest shared) or 'auto' (head alone for reward models over 20 M parameters that have one).")
    discriminator_lr: float = doc(1e-5, "Learning rate of the discriminator's own optimizer.")
    discriminator_text_conditioned: bool = doc(True, "Whether the discriminator sees the prompt (Eq. 6 is ambiguous).")
    reuse_fake_scores: bool = doc(False, "Whether the discriminator's step takes its fake half from the generator term's own scoring of the predictions (the same parameters and images, so the same loss and gradient) instead of scoring them again: one discriminator evaluation less per sample, for the generator's backward also reaching the discriminator's trainable weights (whose gradient is then discarded).")


@dataclass
class RegularizerConfig:
    """Regularisers against reward hacking (ReFL without them collapses: ImageReward #95)."""

    denoising_weight: float = doc(1.0, "Weight of the pre-training (denoising) loss on real images.")
    base_kl_weight: float = doc(0.0, "Weight of the KL-style term: MSE between the LoRA and the base model's (adapters disabled) predictions on the same input.")


@dataclass
class ModelSpec:
    """A reward or perception model: a registry kind plus a local path."""

    kind: str = doc("", "Registry name of the loader (see `unifl.core.feedback.registry`).")
    path: str = doc("", "Local weights file or folder, if the kind needs one.")
    weight: float = doc(1.0, "Loss weight w_d of this model.")
    threshold: float | None = doc(None, "α_d of the hinge ReLU(α_d − r_d) for rewards; empty = read 'unifl.alpha' from the model file.")
    aspect: str = doc("", "Rewards: the aspect (color, layout, detail, lighting, or any name). Perception: the task (style, structure, layout).")
    dtype: str = doc("auto", "Storage dtype of this frozen model's weights: 'auto' (the dtype of optim.mixed_precision, fp32 when it is 'no'), 'fp32', 'fp16' or 'bf16'. Half precision runs under the training autocast, so it needs optim.mixed_precision. Models that compute box geometry (maskrcnn-*) stay fp32 whatever this says.")

    def resolved_dtype(self, mixed_precision: str) -> str:
        """``'fp32'``, ``'fp16'`` or ``'bf16'``: what ``dtype`` means in a run with this ``optim.mixed_precision``."""
        if self.dtype != "auto":
            return self.dtype
        return mixed_precision if mixed_precision in ("fp16", "bf16") else "fp32"


@dataclass
class OptimConfig:
    """Optimisation and schedule."""

    learning_rate: float = doc(1e-4, "AdamW learning rate of the LoRA.")
    weight_decay: float = doc(0.0, "AdamW weight decay (0: decay fights the LoRA's zero init; AlignProp #4).")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm (0 = off).")
    batch_size: int = doc(1, "Samples per device per micro-step, for each feedback term.")
    gradient_accumulation_steps: int = doc(1, "Micro-steps per optimizer step.")
    max_steps: int = doc(1000, "Optimizer steps.")
    warmup_steps: int = doc(0, "Linear learning-rate warm-up steps.")
    mixed_precision: str = doc("no", "'no', 'fp16' or 'bf16' autocast (LoRA parameters stay fp32).")
    gradient_checkpointing: bool = doc(True, "Recompute activations of the UNet and the VAE decoder in backward.")
    seed: int = doc(0, "Seed of everything random; the same seed gives the same run.")


@dataclass
class LoggingConfig:
    """Where outputs go and how often."""

    output_dir: str = doc("runs/unifl", "Run folder: checkpoints, logs, samples, the final LoRA.")
    output_name: str = doc("unifl", "File stem of the exported LoRA (ss_output_name).")
    checkpoint_every: int = doc(100, "Save a resumable checkpoint every N steps (and at the end).")
    keep_checkpoints: int = doc(3, "How many recent checkpoints to keep (0 = all).")
    validate_every: int = doc(100, "Sample validation images with the deployment sampler every N steps (0 = only at the end).")
    validation_prompts: list = doc([], "Prompts for validation images; empty = the first prompts of the data.")
    validation_cfg: float = doc(1.0, "CFG scale of stage-1 validation images (and of the stage-1 LoRA's sampler contract). Stage 2 always samples without CFG.")
    log_every: int = doc(1, "Write CSV/TensorBoard rows every N steps.")
    tensorboard: bool = doc(True, "Also log to TensorBoard (if the tensorboard package is installed).")


STAGES = ("1", "2")
#: The values of ``lora.targets`` and ``adversarial.timestep_spacing``: the keys of ``core.lora.peft.TARGET_PRESETS``
#: and ``core.diffusion.schedule.SPACINGS``, which the config layer may not import (a test keeps them equal).
LORA_TARGETS = ("attention", "attention+ff", "all")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
ADVERSARIAL_SCHEDULES = ("few-step", "step-counts", "trajectory")
AESTHETIC_STAGE2_SCHEDULES = ("rollout", "deployment", "shared")
LORA_INITS = ("default", "gaussian")
#: Pixels per latent of every supported VAE divide it (SD1.5/SDXL: 8; the pocket model: 4).
RESOLUTION_MULTIPLE = 8
#: 4x SDXL's native 1024 (16x its activations); checked when the config is read, before any image is
#: rendered or resized at that size.
MAX_RESOLUTION = 4096
#: AdamW moves every weight by about the learning rate each step, so above 1 a LoRA's weights blow up
#: in a step or two (1e308 overflowed at step 1); LoRA rates are 1e-5 … 1e-3.
MAX_LEARNING_RATE = 1.0
MAX_SEED = 2**63 - 1
#: Numeric fields by the range they must lie in (floats must also be finite). Counts and intervals are
#: checked here, at load time, so that a bad value is one line naming it, not a crash hours into a run.
AT_LEAST_ONE = ("lora.rank", "data.source_images", "pefl.inference_steps", "aesthetic.inference_steps", "adversarial.inference_steps", "adversarial.trajectory_steps",
                "optim.batch_size", "optim.gradient_accumulation_steps", "optim.max_steps", "logging.checkpoint_every", "logging.log_every")
COUNTS_FROM_ZERO = ("data.source_seed", "pefl.noise_level", "pefl.prefix_steps", "aesthetic.prefix_steps", "adversarial.start_level", "optim.warmup_steps", "logging.keep_checkpoints", "logging.validate_every")
NON_NEGATIVE = ("pefl.weight", "aesthetic.weight", "adversarial.weight", "regularizer.denoising_weight", "regularizer.base_kl_weight",
                "optim.weight_decay", "optim.max_grad_norm")
POSITIVE = ("lora.alpha", "aesthetic.scored_fraction")
LEARNING_RATES = ("optim.learning_rate", "adversarial.discriminator_lr")
#: Classifier-free guidance scales: 1 is off, below 1 pushes away from the prompt.
GUIDANCE_SCALES = ("aesthetic.cfg", "logging.validation_cfg")
_FILE_STEM = re.compile(r"[^/\\\x00]+")


@dataclass
class TrainConfig:
    """A UniFL training run. Stage 1 (quality) = PeFL + aesthetic (+ regulariser); stage 2 (acceleration) = adversarial + aesthetic (+ regulariser)."""

    stage: str = doc("1", "'1' (quality: PeFL + decoupled aesthetic) or '2' (acceleration: adversarial + decoupled aesthetic).")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The base model."})
    lora: LoRAConfig = field(default_factory=LoRAConfig, metadata={"help": "The LoRA."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Real images and prompts."})
    pefl: PeFLConfig = field(default_factory=PeFLConfig, metadata={"help": "Perceptual feedback (stage 1)."})
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig, metadata={"help": "Decoupled aesthetic feedback (both stages)."})
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig, metadata={"help": "Adversarial feedback (stage 2)."})
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig, metadata={"help": "Regularisers."})
    rewards: list = field(default_factory=list, metadata={"help": "Aspect reward models, a list of [[rewards]] tables (kind, path, aspect, threshold, weight).", "item": ModelSpec})
    perception: list = field(default_factory=list, metadata={"help": "Perception models for PeFL, a list of [[perception]] tables (kind, path, aspect = style|structure|layout, weight).", "item": ModelSpec})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimisation."})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"help": "Outputs."})

    def validate(self) -> "TrainConfig":
        """Check every field's range and the fields' consistency; raise :class:`ConfigError` naming the field and the fix."""
        if self.stage not in STAGES:
            raise ConfigError(f"stage = {self.stage!r}: use '1' (quality) or '2' (acceleration)")
        self._check_ranges()
        for name, section in (("pefl", self.pefl), ("aesthetic", self.aesthetic)):
            lo, hi = _range(f"{name}.grad_levels", section.grad_levels)
            if hi >= section.inference_steps:
                raise ConfigError(f"{name}.grad_levels = {section.grad_levels}: levels must be < {name}.inference_steps ({section.inference_steps})")
        self._check_adversarial_schedule()
        if not self.pefl.grad_levels[1] < self.pefl.noise_level:
            raise ConfigError(f"pefl.noise_level = {self.pefl.noise_level} must be above the grad levels {self.pefl.grad_levels} (the rollout denoises from T_a down to t)")
        for key, value in (("model.dtype", self.model.dtype), ("model.vae_dtype", self.model.vae_dtype)):
            if value not in ("fp32", "fp16", "bf16"):
                raise ConfigError(f"{key} = {value!r}: use 'fp32', 'fp16' or 'bf16'")
        if self.aesthetic.stage2_schedule not in AESTHETIC_STAGE2_SCHEDULES:
            raise ConfigError(f"aesthetic.stage2_schedule = {self.aesthetic.stage2_schedule!r}: use one of {', '.join(map(repr, AESTHETIC_STAGE2_SCHEDULES))}")
        if self.stage == "2" and self.aesthetic.stage2_schedule == "shared" and self.aesthetic.cfg != 1.0:
            raise ConfigError(f"aesthetic.stage2_schedule = 'shared' scores the adversarial rollout, which runs without guidance, but aesthetic.cfg = {self.aesthetic.cfg}: set aesthetic.cfg = 1 or another stage2_schedule")
        if self.aesthetic.scored_fraction > 1.0:
            raise ConfigError(f"aesthetic.scored_fraction = {self.aesthetic.scored_fraction}: a share of the batch, at most 1 (every sample)")
        if not re.fullmatch(r"auto|all|head|head\+[1-9][0-9]*", self.adversarial.discriminator_trainable):
            raise ConfigError(f"adversarial.discriminator_trainable = {self.adversarial.discriminator_trainable!r}: use 'auto', 'all', 'head' or 'head+N' (N trunk blocks beside the head, e.g. 'head+2')")
        if self.optim.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"optim.mixed_precision = {self.optim.mixed_precision!r}: use 'no', 'fp16' or 'bf16'")
        for table, specs in (("rewards", self.rewards), ("perception", self.perception)):
            for i, spec in enumerate(specs):
                if spec.dtype not in ("auto", "fp32", "fp16", "bf16"):
                    raise ConfigError(f"{table}[{i}].dtype = {spec.dtype!r}: use 'auto', 'fp32', 'fp16' or 'bf16'")
                if spec.dtype in ("fp16", "bf16") and self.optim.mixed_precision == "no":
                    raise ConfigError(f"{table}[{i}].dtype = {spec.dtype!r} runs under the training autocast: set optim.mixed_precision = {spec.dtype!r}, or dtype = 'auto'")
        for i, spec in enumerate(self.rewards):
            if not spec.aspect:
                raise ConfigError(f"rewards[{i}] ({spec.kind}) has no aspect: set aspect = 'color' | 'layout' | 'detail' | 'lighting' | …")
        for i, spec in enumerate(self.perception):
            if spec.aspect not in ("style", "structure", "layout"):
                raise ConfigError(f"perception[{i}].aspect = {spec.aspect!r}: use 'style', 'structure' or 'layout'")
        aspects = [spec.aspect for spec in self.rewards]
        twice = sorted({a for a in aspects if aspects.count(a) > 1})
        if twice:
            raise ConfigError(f"two [[rewards]] entries judge the aspect {twice[0]!r}; give each reward its own aspect (one would silently replace the other)")
        if self.stage == "2" and self.adversarial.weight > 0 and not any(r.aspect == self.adversarial.discriminator_from for r in self.rewards):
            raise ConfigError(f"stage 2 initialises the discriminator from the {self.adversarial.discriminator_from!r} reward model, but no [[rewards]] entry has that aspect; add one or set adversarial.discriminator_from")
        return self

    def _check_adversarial_schedule(self) -> None:
        adv = self.adversarial
        if adv.schedule not in ADVERSARIAL_SCHEDULES:
            raise ConfigError(f"adversarial.schedule = {adv.schedule!r}: use one of {', '.join(map(repr, ADVERSARIAL_SCHEDULES))}")
        lo, hi = _range("adversarial.grad_levels", adv.grad_levels)
        if adv.schedule == "few-step" and (hi >= adv.inference_steps or adv.start_level > lo):
            raise ConfigError(f"adversarial.grad_levels = {adv.grad_levels} must lie in [start_level={adv.start_level}, inference_steps-1={adv.inference_steps - 1}]")
        counts = adv.step_counts
        if not (isinstance(counts, list) and counts and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts)):
            raise ConfigError(f"adversarial.step_counts = {counts!r}: give a list of step counts of at least 1, e.g. [1, 2, 4, 8]")
        if adv.schedule == "step-counts" and adv.inference_steps not in counts:
            raise ConfigError(f"adversarial.inference_steps = {adv.inference_steps} is the LoRA's default step count, so it must be one of adversarial.step_counts = {counts}: add it or pick one of them")
        if adv.schedule == "trajectory" and adv.start_level >= adv.trajectory_steps:
            raise ConfigError(f"adversarial.start_level = {adv.start_level}: a position of the {adv.trajectory_steps}-step trajectory, so at most adversarial.trajectory_steps - 1 = {adv.trajectory_steps - 1}")

    def _check_ranges(self) -> None:
        def value(key: str):
            section, name = key.split(".")
            return getattr(getattr(self, section), name)

        for key in AT_LEAST_ONE:
            _number(key, value(key), 1, integer=True)
        for key in COUNTS_FROM_ZERO:
            _number(key, value(key), 0, integer=True)
        for key in NON_NEGATIVE:
            _number(key, value(key), 0)
        for key in POSITIVE:
            _number(key, value(key), 0, above=True)
        for key in LEARNING_RATES:
            _number(key, value(key), 0, above=True, highest=MAX_LEARNING_RATE,
                    why="AdamW moves every weight by about the learning rate each step; LoRA rates are 1e-5 to 1e-3")
        for key in GUIDANCE_SCALES:
            _number(key, value(key), 1)
        _number("lora.dropout", self.lora.dropout, 0)
        if self.lora.dropout >= 1:
            raise ConfigError(f"lora.dropout = {self.lora.dropout}: a probability below 1 (0 = no dropout)")
        if self.lora.init not in LORA_INITS:
            raise ConfigError(f"lora.init = {self.lora.init!r}: use one of {', '.join(map(repr, LORA_INITS))}")
        _number("optim.seed", self.optim.seed, 0, integer=True)
        if self.optim.seed > MAX_SEED:
            raise ConfigError(f"optim.seed = {self.optim.seed}: use a seed from 0 to {MAX_SEED}")
        _number("data.resolution", self.data.resolution, RESOLUTION_MULTIPLE, integer=True, highest=MAX_RESOLUTION,
                why="pixels a side; SD1.5 trains at 512, SDXL at 1024")
        if self.data.resolution % RESOLUTION_MULTIPLE:
            raise ConfigError(f"data.resolution = {self.data.resolution}: use a multiple of {RESOLUTION_MULTIPLE} (a latent pixel is {RESOLUTION_MULTIPLE}x{RESOLUTION_MULTIPLE} image pixels in SD models), e.g. {self.data.resolution // RESOLUTION_MULTIPLE * RESOLUTION_MULTIPLE or RESOLUTION_MULTIPLE}")
        if self.pefl.noise_level >= self.pefl.inference_steps:
            raise ConfigError(f"pefl.noise_level = {self.pefl.noise_level}: a level of the {self.pefl.inference_steps}-step schedule, so at most pefl.inference_steps - 1 = {self.pefl.inference_steps - 1}")
        if self.model.architecture not in ("", "sd15", "sdxl"):
            raise ConfigError(f"model.architecture = {self.model.architecture!r}: use 'sd15', 'sdxl', or leave it empty to detect it from the file")
        if self.lora.targets not in LORA_TARGETS:
            raise ConfigError(f"lora.targets = {self.lora.targets!r}: use one of {', '.join(map(repr, LORA_TARGETS))}")
        if self.adversarial.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(f"adversarial.timestep_spacing = {self.adversarial.timestep_spacing!r}: use one of {', '.join(map(repr, TIMESTEP_SPACINGS))}")
        if not self.logging.output_dir.strip():
            raise ConfigError("logging.output_dir is empty: name the run folder, e.g. runs/my_style")
        stem = self.logging.output_name
        if not _FILE_STEM.fullmatch(stem) or stem.strip() in ("", ".", "..") or stem != stem.strip():
            raise ConfigError(f"logging.output_name = {stem!r}: a file name without folders (it becomes <output_name>.safetensors in the run folder)")
        if not (isinstance(self.logging.validation_prompts, list) and all(isinstance(p, str) for p in self.logging.validation_prompts)):
            raise ConfigError(f"logging.validation_prompts = {self.logging.validation_prompts!r}: give a list of prompt strings")
        for section, specs in (("rewards", self.rewards), ("perception", self.perception)):
            for i, spec in enumerate(specs):
                if not spec.kind:
                    raise ConfigError(f"{section}[{i}] has no kind: name its loader, e.g. kind = 'laion-aesthetic' (see docs/config-reference.md)")
                _number(f"{section}[{i}].weight", spec.weight, 0)
                if spec.threshold is not None:
                    _number(f"{section}[{i}].threshold", spec.threshold, -math.inf)


def _number(key: str, value, lowest: float, *, integer: bool = False, above: bool = False, highest: float = math.inf, why: str = "") -> None:
    """Refuse ``value`` unless it is a (whole, if ``integer``) finite number ``>= lowest`` (``> lowest`` if ``above``)
    and ``<= highest`` (``why`` says why, after a refusal of a value above it)."""
    kind = "a whole number" if integer else "a finite number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not ok or (value <= lowest if above else value < lowest):
        bound = "" if lowest == -math.inf else f" {'above' if above else 'of at least'} {lowest:g}"
        raise ConfigError(f"{key} = {value!r}: must be {kind}{bound}")
    if value > highest:
        raise ConfigError(f"{key} = {value!r}: must be at most {highest:g}{f' ({why})' if why else ''}")


def _range(name: str, value) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value) and 0 <= value[0] <= value[1]):
        raise ConfigError(f"{name} = {value!r}: give two integers [lo, hi] with 0 <= lo <= hi")
    return value[0], value[1]
