"""What the arena runs: its seeds and splits, its trainings and its rows (a model and a sampler each).

Seeds, all disjoint from every stream a model was built from (LDM 0, perception and rewards 1/2,
held-out evaluators 101/102, the demo's 103/202, the prompt judge 301/302):

* **Training seeds** :data:`TRAINING_SEEDS` = 0 … 4 (``optim.seed`` of UniFL, ``--seed`` of each peer):
  LoRA initialisation, noise and batch order. Every training reads the same data stream (the ``pocket``
  preset's: world stream 1, 8192 images).
* **Splits** (:data:`SPLITS`): *validation* (prompts from world stream 401, real images from 402) is the
  only one presets and peers may be tuned on; *test* (prompts 501, real images 502) is what the report
  uses, and nothing is tuned on it.
* **Sampling seeds**: replicate ``r`` (the model of training seed ``r``; for untrained rows just the
  ``r``-th draw) samples image ``i`` from noise seed ``split.noise_seed + 100_000·r + i``: disjoint
  between replicates and splits, shared by every row of one replicate (same prompts, same noise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

TRAINING_SEEDS = (0, 1, 2, 3, 4)
DATA_STREAM = (1, 8192)
"""(world seed, images) of the training data every method reads: the ``pocket`` preset's ``data``."""


@dataclass(frozen=True)
class Split:
    name: str
    prompt_seed: int
    """World stream whose scenes' captions are the prompts (and whose renders are the ceiling)."""
    real_seed: int
    """World stream of the real reference images (realism) and of the "other scenes" floor."""
    noise_seed: int
    """Base of the sampling noise seeds (see the module docstring)."""

    def noise_seeds(self, replicate: int, count: int) -> list[int]:
        return [self.noise_seed + 100_000 * replicate + i for i in range(count)]


SPLITS = {
    "validation": Split("validation", prompt_seed=401, real_seed=402, noise_seed=4_000_000),
    "test": Split("test", prompt_seed=501, real_seed=502, noise_seed=5_000_000),
}


@dataclass(frozen=True)
class Sampler:
    """How a row is sampled through the arena's diffusers pipeline."""

    scheduler: str  # "ddim" | "lcm" | "tcd"
    steps: int
    cfg: float
    spacing: str = "leading"  # DDIM timestep spacing: "leading" (the pocket model's own) or "trailing"

    @property
    def label(self) -> str:
        spacing = f" {self.spacing}" if self.scheduler == "ddim" else ""
        return f"{self.scheduler.upper()}{spacing}, {self.steps} steps, CFG {self.cfg:g}"

    def unet_calls_per_image(self) -> int:
        return self.steps * (2 if self.cfg != 1.0 else 1)


@dataclass(frozen=True)
class Training:
    """One LoRA per training seed: a UniFL run (``overrides`` of the pocket preset) or a peer's own script."""

    name: str
    method: str  # "unifl" | "lcm_lora" | "pcm" | "pcm_adv" | "alignprop"
    overrides: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    init_from: str = ""
    """UniFL: the training whose LoRA this one continues (stage 2 continues stage 1); its compute counts into this
    one's (:func:`.counting.lineage`)."""
    budget_of: tuple[str, ...] = ()
    """Peers: the UniFL trainings whose measured wall times (same seed), summed, are this run's budget."""
    steps_of: str = ""
    """Peers: the UniFL training whose step count this run takes instead of a time budget."""
    group: str = "unifl"  # "unifl" | "ablation" | "peer" | "variant"
    lora: str = "unifl"
    """Peers: ``"unifl"`` (UniFL's rank 16, alpha 16, attention + feed-forward), ``"own"`` (its script's defaults) or
    ``"best"`` (the one of the two its tuning chose, :func:`~.run.adopt_tuning`)."""


@dataclass(frozen=True)
class Row:
    name: str
    training: str | None  # None: the base model
    sampler: Sampler
    group: str  # "unifl" | "ablation" | "peer" | "variant"
    label: str = ""
    control_of: str = ""
    """A control row: the row whose images it post-filters (:mod:`.controls`), with the filter and strength chosen
    for that row on the validation split."""
    own_lora: str = ""
    """A peer row with UniFL's LoRA: the row of the same peer and sampler trained with its script's own LoRA."""


@dataclass(frozen=True)
class Variant:
    """A candidate default for UniFL, trained beside today's in a choices run (``make arena-choices``): its rows are
    compared with today's rows of the same seeds, prompts and noise by the family :data:`~.claims.CHOICES_FAMILY`."""

    name: str
    scope: str  # "stage2": a stage 2 continuing today's stage 1 | "both": its own stage 1 and the stage 2 continuing it
    overrides: tuple[str, ...]


REAL_Q10_ALPHAS = {"color": -1.607, "layout": -1.199, "detail": 0.640, "lighting": -0.091}
"""Each pocket aspect reward's 10 % quantile on 512 real renders of the training stream (world seed 1) with their
captions: a hinge that lifts only the samples worse than nine real renders in ten, where the paper's rule (the mean
reward of the preferred images of held-out pairs) sits near the real renders' mean and so pushes half of them."""


def pocket_rewards(alphas: dict[str, float]) -> str:
    """The pocket preset's ``rewards`` override with these thresholds α_d (an aspect not named keeps its file's)."""
    tables = []
    for aspect in ("color", "layout", "detail", "lighting"):
        threshold = f", threshold = {alphas[aspect]!r}" if aspect in alphas else ""
        tables.append(f'{{aspect = "{aspect}", kind = "pocket-reward", path = "{aspect}"{threshold}}}')
    return f"rewards=[{', '.join(tables)}]"


VARIANT_PREFIX = {"stage1": "stage1_v_", "stage2": "stage2_v_"}
"""A variant's training names: ``stage2_v_<name>`` (and ``stage1_v_<name>`` for a "both" variant)."""
VARIANT_SETS = {
    "stage2": (
        Variant("shared", "stage2", ("aesthetic.stage2_schedule=shared",)),
        Variant("counts", "stage2", ("adversarial.schedule=step-counts",)),
        Variant("counts_shared", "stage2", ("adversarial.schedule=step-counts", "aesthetic.stage2_schedule=shared")),
        # the feedback-evaluation cuts on the shared rollout: the discriminator's fake half from the generator's
        # scores (the same update, tests/test_trainer.py) and the aspect rewards on half of each batch
        Variant("shared_lean", "stage2", ("aesthetic.stage2_schedule=shared", "adversarial.reuse_fake_scores=true", "aesthetic.scored_fraction=0.5")),
        Variant("trajectory", "stage2", ("adversarial.schedule=trajectory",)),
        Variant("prefix", "stage2", ("aesthetic.prefix_steps=4",)),
        Variant("prefix_both", "both", ("aesthetic.prefix_steps=4", "pefl.prefix_steps=2")),
    ),
    # stage 1's aesthetic term pushes every aspect past real renders on the pocket base (docs/paper-choices.md):
    # the paper's lower detail threshold, thresholds at the real renders' 10 % quantile, a rollout at the sampling CFG
    "stage1": (
        Variant("detail_alpha0", "both", (pocket_rewards({"detail": 0.0}),)),
        Variant("real_q10", "both", (pocket_rewards(REAL_Q10_ALPHAS),)),
        Variant("cfg3", "both", ("aesthetic.cfg=3.0",)),
        Variant("cfg3_real_q10", "both", ("aesthetic.cfg=3.0", pocket_rewards(REAL_Q10_ALPHAS))),
    ),
    "lora": tuple(
        Variant(f"{targets.replace('+', '_')}_r{rank}", "both", (f"lora.targets={targets}", f"lora.rank={rank}", f"lora.alpha={rank}"))
        for targets in ("attention", "attention+ff", "all") for rank in (16, 64) if (targets, rank) != ("attention+ff", 16)  # today's
    ),
}
"""The candidate defaults (``docs/paper-choices.md``): ``stage1``, the aesthetic term's thresholds and rollout guidance;
``stage2``, the step-count schedules and the cheaper steps of issue 20; ``lora``, the LoRA targets and ranks for the
real-size presets (today: ``attention+ff`` rank 16)."""


COMMITTED_TUNING = "pocket/arena/tuned"
"""The tuning run's choices as committed (:mod:`.tuned`), relative to this repository's root: what the standard run
and the choices runs take, so that a fresh clone need not repeat the sweeps (hours) before them."""


CONTROL_SUFFIX = "+filter"


def control_name(row: str) -> str:
    return f"{row}{CONTROL_SUFFIX}"


@dataclass(frozen=True)
class ArenaSettings:
    """Sizes of an arena run. The defaults are the whole plan in one folder (every sweep, ablation and LoRA variant);
    :meth:`tuning` is ``make arena-tune``'s run, :meth:`standard` ``make arena``'s, :meth:`smoke` the smoke run."""

    split: str = "test"
    seeds: tuple[int, ...] = TRAINING_SEEDS
    stage1_steps: int = 100
    stage2_steps: int = 100
    budget: int = 1
    """The training budget as a multiple of the standard one (``make arena-curves``: 1, 4, 16): UniFL's stages
    take ``budget ×`` their steps, the peers the matching wall time."""
    num_prompts: int = 52
    """Prompts per replicate; replicate ``r`` takes the split's prompts ``r·n … (r+1)·n − 1``."""
    images_per_prompt: int = 4
    """Images per model and replicate: ``num_prompts × images_per_prompt`` = 208; with five replicates a row has
    1040 images, on which realism is measured pooled (≥ 1024, as the judges' precision needs), and the bootstrap
    resamples seeds and prompts. (The earlier 86 prompts: 344 per seed with three seeds, the same pool.)"""
    num_real: int = 1024
    """Real reference images for realism; the real-vs-real floor uses as many again, per replicate."""
    ablations: bool = True
    peers: tuple[str, ...] = ("lcm_lora", "pcm", "pcm_adv", "alignprop")
    """Peers to run; one whose code is not on the machine is one loud line and a "not run" row in the report."""
    lora_variants: tuple[str, ...] = ("unifl", "own")
    """Each peer with UniFL's LoRA and with its script's own (rank, alpha, targets): two trainings, two rows; or
    ``("best",)``: one training per peer with whichever of the two scored better in the tuning run (``tuning_from``),
    each variant swept as itself there, so every peer gets its best configuration at half the training time."""
    controls: bool = True
    """A "+ best post-filter" control row for every row (:mod:`.controls`)."""
    learning_rates: tuple[float, ...] = (1e-4, 2e-4, 5e-4, 1e-3)
    """The learning-rate grid every tuned training (:data:`TUNING`: UniFL's stages and every peer) starts from on the
    validation split: spaced ×2–×2.5, widened by :data:`WIDEN_FACTOR` while the best value is at an edge."""
    discriminator_rates: tuple[float, ...] = (1e-5, 2.5e-5, 6e-5, 1.5e-4, 3e-4)
    """The discriminator's learning rate, swept the same way for UniFL's stage 2 (its preset: 3e-4) and PCM's
    adversarial variant (its script: 1e-5), after each one's learning rate is chosen: both defaults in one grid
    spaced ×2–×2.5."""
    widen_limit: int = 3
    """How many times a sweep may add a value beyond its edge; the report says when a choice stayed at an edge."""
    bootstrap_draws: int = 1000
    confidence: float = 0.95
    family_alpha: float = 0.05
    """Family-wise error rate of the claims (Holm)."""
    peer_min_steps: int = 0
    """Quick runs: stop a peer after this many steps even inside its budget (0: the budget alone)."""
    tuning_from: str = ""
    """Another arena folder whose sweeps' choices this run takes instead of sweeping (the standard run the committed
    :data:`COMMITTED_TUNING`, the budget curves' ×4 and ×16 the standard run's: sweeping at ×16 would cost more than
    the run). A relative path is read from the working folder, else from this repository's root."""
    sweep_missing: bool = False
    """With ``tuning_from``: sweep each training whose choice the source lacks, instead of refusing (the tuning run
    continued from committed choices: ``unifl arena --tune --tuning-from pocket/arena/tuned``)."""
    unifl_overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` config changes for every UniFL training (both stages, their ablations): the validation runs
    that choose a default (``docs/paper-choices.md``) compare arenas that differ in these alone."""
    stage2_overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` changes for UniFL's stage-2 trainings only (e.g. ``adversarial.schedule=step-counts``)."""
    variants: tuple[Variant, ...] = ()
    """Candidate defaults trained beside today's (:data:`VARIANT_SETS`), each at today's tuned hyperparameters; their
    rows are decided against today's by the choices family."""
    workers: int = 2
    threads: int = 1
    quick: bool = False
    grid_images: int = 8

    @classmethod
    def smoke(cls, split: str = "validation") -> "ArenaSettings":
        """One seed, a few steps and images, validation split: the whole path in minutes, no claims to read."""
        return cls(split=split, seeds=(0,), stage1_steps=2, stage2_steps=2, num_prompts=16, images_per_prompt=1, num_real=32, peer_min_steps=2, quick=True,
                   learning_rates=(2e-4, 1e-3), discriminator_rates=(3e-4,), widen_limit=0, bootstrap_draws=50, lora_variants=("unifl",))

    @classmethod
    def tuning(cls, **changes) -> "ArenaSettings":
        """``make arena-tune``: every sweep (UniFL's stages, each peer with both LoRA variants) on the validation split
        at the first training seed, and that seed's rows on validation; its choices, exported to
        :data:`COMMITTED_TUNING` (:mod:`.tuned`), are what :meth:`standard` adopts. Run once per change of the code or
        the base model (the ablations and controls wait for the standard run)."""
        return cls(split="validation", seeds=TRAINING_SEEDS[:1], ablations=False, controls=False, lora_variants=("unifl", "own"), sweep_missing=True).with_(**changes)

    @classmethod
    def standard(cls, tuning_from: str = COMMITTED_TUNING, **changes) -> "ArenaSettings":
        """``make arena``: five seeds on the test split with every post-filter control, UniFL's stages and each peer
        with the hyperparameters and LoRA variant :meth:`tuning` chose, as committed (``make arena-ablations`` adds
        the ablations)."""
        return cls(split="test", tuning_from=tuning_from, ablations=False, lora_variants=("best",)).with_(**changes)

    @classmethod
    def choices(cls, variant_set: str, tuning_from: str = COMMITTED_TUNING, **changes) -> "ArenaSettings":
        """``make arena-choices``: one set of candidate defaults (:data:`VARIANT_SETS`) beside today's UniFL on the
        validation split, five seeds, today's tuned rates, no peers, ablations or controls: what picks a default."""
        return cls(split="validation", tuning_from=tuning_from, peers=(), ablations=False, controls=False, variants=VARIANT_SETS[variant_set]).with_(**changes)

    @property
    def images(self) -> int:
        return self.num_prompts * self.images_per_prompt

    @property
    def steps(self) -> tuple[int, int]:
        """UniFL's stage-1 and stage-2 steps at this budget."""
        return self.stage1_steps * self.budget, self.stage2_steps * self.budget

    def with_(self, **changes) -> "ArenaSettings":
        return replace(self, **changes)


BUDGETS = (1, 4, 16)
"""The budget curve's levels (``make arena-curves``)."""
WIDEN_FACTOR = 2.5


PEER_TRAININGS = {
    "lcm_lora": dict(method="lcm_lora", budget_of=("stage1", "stage2")),
    "pcm": dict(method="pcm", budget_of=("stage1", "stage2")),
    "pcm_adv": dict(method="pcm_adv", budget_of=("stage1", "stage2")),
    "alignprop_steps": dict(method="alignprop", steps_of="stage1"),
    "alignprop_time": dict(method="alignprop", budget_of=("stage1",)),
}
"""The distillation peers get stage 1 + stage 2's time (UniFL's 4-step LoRA trained through both); AlignProp, a
reward fine-tune like stage 1, stage 1's steps and stage 1's time."""


def own_lora(name: str) -> str:
    return f"{name}_own"


def trainings(settings: ArenaSettings) -> dict[str, Training]:
    steps1, steps2 = settings.steps
    s1 = (f"optim.max_steps={steps1}", *settings.unifl_overrides)
    s2 = (f"optim.max_steps={steps2}", *settings.unifl_overrides, *settings.stage2_overrides)
    plan = {
        "stage1": Training("stage1", "unifl", ("stage=1", *s1)),
        "stage2": Training("stage2", "unifl", ("stage=2", *s2), after=("stage1",), init_from="stage1"),
        "stage2_from_base": Training("stage2_from_base", "unifl", ("stage=2", *s2)),
    }
    if settings.ablations:
        plan |= {
            "stage1_no_pefl": Training("stage1_no_pefl", "unifl", ("stage=1", *s1, "perception=[]"), group="ablation"),
            "stage1_global_reward": Training("stage1_global_reward", "unifl", ("stage=1", *s1, 'rewards=[{aspect = "global", kind = "pocket-reward", path = "global"}]'), group="ablation"),
            "stage2_no_adversarial": Training("stage2_no_adversarial", "unifl", ("stage=2", *s2, "adversarial.weight=0"), after=("stage1",), init_from="stage1", group="ablation"),
        }
    for variant in settings.variants:
        stage1 = "stage1"
        if variant.scope == "both":
            stage1 = VARIANT_PREFIX["stage1"] + variant.name
            plan[stage1] = Training(stage1, "unifl", ("stage=1", *s1, *variant.overrides), group="variant")
        name = VARIANT_PREFIX["stage2"] + variant.name
        plan[name] = Training(name, "unifl", ("stage=2", *s2, *variant.overrides), after=(stage1,), init_from=stage1, group="variant")
    for name, spec in PEER_TRAININGS.items():
        if spec["method"] not in settings.peers:
            continue
        depends = tuple(spec.get("budget_of", ())) or (spec["steps_of"],)
        for variant in settings.lora_variants:
            full = own_lora(name) if variant == "own" else name
            plan[full] = Training(full, after=depends, group="peer", lora=variant, **spec)
    return plan


@dataclass(frozen=True)
class Tuning:
    """How a training is tuned on the validation split: the row its candidates are sampled as, the judge number
    that picks one, and the hyperparameters swept in turn (each at the values chosen before it)."""

    row: str
    metric: str
    axes: tuple[str, ...] = ("learning_rate",)


TUNING = {
    "stage1": Tuning("stage1_20", "prompt_accuracy"),
    "stage2": Tuning("stage2_4", "fd", ("learning_rate", "discriminator_rate")),
    "stage2_from_base": Tuning("stage2_from_base_4", "fd"),
    "lcm_lora": Tuning("lcm_lora_lcm_4", "fd"),
    "pcm": Tuning("pcm_4", "fd"),
    "pcm_adv": Tuning("pcm_adv_4", "fd", ("learning_rate", "discriminator_rate")),
    "alignprop_time": Tuning("alignprop_time_20", "prompt_accuracy"),
}
"""Each tuned training, UniFL's and the peers' alike (a peer's own-LoRA variant is tuned as itself, on its own row):
the row its candidates are sampled as on the validation split (first training seed, its first replicate's prompts
and noise), the judge number that picks one, and the axes swept. Few-step trainings (stage 2 and the distillation
peers) are picked on realism (FD, lower is better), which acceleration is for; stage 1 and AlignProp on prompt
accuracy (higher). The chosen candidate's run *is* that seed's training in the test run (same seed, data and
budget), so tuning costs only the other candidates. Stage 2's candidates continue the chosen stage 1; the peers'
budgets are the chosen stages' measured times."""
TUNED_WITH = {"alignprop_steps": "alignprop_time", "stage1_no_pefl": "stage1", "stage1_global_reward": "stage1", "stage2_no_adversarial": "stage2"}
"""Trainings that take another training's chosen hyperparameters (an ablation its stage's; AlignProp at equal
steps the ones chosen at equal time)."""


def tuning_of(training: str) -> str:
    """The tuned training whose chosen hyperparameters ``training`` uses."""
    for stage, prefix in VARIANT_PREFIX.items():
        if training.startswith(prefix):
            return stage  # a candidate default is judged at today's tuned rates
    own = training.endswith("_own")
    base = training[: -len("_own")] if own else training
    tuned = TUNED_WITH.get(base, base)
    return own_lora(tuned) if own else tuned


def tuning_spec(training: str) -> Tuning | None:
    """The :class:`Tuning` of a tuned training (an own-LoRA variant: its peer's, on its own row)."""
    if training.endswith("_own"):
        spec = TUNING.get(training[: -len("_own")])
        return spec and replace(spec, row=spec.row.replace(training[: -len("_own")], training, 1))
    return TUNING.get(training)


BASE_CFG = 3.0
"""The pocket model's usual guidance (stage 1's contract); few-step rows without CFG use 1."""


def rows(settings: ArenaSettings) -> dict[str, Row]:
    ddim = lambda steps, cfg, spacing: Sampler("ddim", steps, cfg, spacing)  # noqa: E731
    lcm_rows = [Row(f"lcm_lora_{kind}_{n}", "lcm_lora", Sampler(kind, n, 1.0), "peer", "LCM-LoRA", own_lora=f"lcm_lora_own_{kind}_{n}" if n == 4 else "")
                for kind in ("lcm", "tcd") for n in (4, 2, 1)]
    peer_rows = [
        *lcm_rows,
        Row("pcm_4", "pcm", ddim(4, 1.0, "trailing"), "peer", "PCM", own_lora="pcm_own_4"),
        Row("pcm_adv_4", "pcm_adv", ddim(4, 1.0, "trailing"), "peer", "PCM (adversarial)", own_lora="pcm_adv_own_4"),
        Row("alignprop_steps_20", "alignprop_steps", ddim(20, BASE_CFG, "leading"), "peer", "AlignProp, stage 1's steps", own_lora="alignprop_steps_own_20"),
        Row("alignprop_time_20", "alignprop_time", ddim(20, BASE_CFG, "leading"), "peer", "AlignProp, stage 1's time", own_lora="alignprop_time_own_20"),
    ]
    own_rows = [Row(row.own_lora, own_lora(row.training), row.sampler, "peer", f"{row.label}, its script's own LoRA") for row in peer_rows if row.own_lora]
    plan = [
        Row("base_20", None, ddim(20, BASE_CFG, "leading"), "unifl", "base"),
        Row("base_4", None, ddim(4, BASE_CFG, "trailing"), "unifl", "base"),
        Row("base_4_cfg1", None, ddim(4, 1.0, "trailing"), "unifl", "base"),
        Row("stage1_20", "stage1", ddim(20, BASE_CFG, "leading"), "unifl", "UniFL stage 1"),
        Row("stage2_8", "stage2", ddim(8, 1.0, "trailing"), "unifl", "UniFL stage 2 (from stage 1)"),
        Row("stage2_4", "stage2", ddim(4, 1.0, "trailing"), "unifl", "UniFL stage 2 (from stage 1)"),
        Row("stage2_2", "stage2", ddim(2, 1.0, "trailing"), "unifl", "UniFL stage 2 (from stage 1)"),
        Row("stage2_1", "stage2", ddim(1, 1.0, "trailing"), "unifl", "UniFL stage 2 (from stage 1)"),
        Row("stage2_from_base_4", "stage2_from_base", ddim(4, 1.0, "trailing"), "unifl", "UniFL stage 2 from the base model"),
        Row("stage1_no_pefl_20", "stage1_no_pefl", ddim(20, BASE_CFG, "leading"), "ablation", "stage 1 without PeFL"),
        Row("stage1_global_reward_20", "stage1_global_reward", ddim(20, BASE_CFG, "leading"), "ablation", "stage 1, one global reward"),
        Row("stage2_no_adversarial_4", "stage2_no_adversarial", ddim(4, 1.0, "trailing"), "ablation", "stage 2 without adversarial"),
        *peer_rows,
        *own_rows,
    ]
    for variant in settings.variants:
        if variant.scope == "both":
            plan.append(Row(f"{VARIANT_PREFIX['stage1']}{variant.name}_20", VARIANT_PREFIX["stage1"] + variant.name, ddim(20, BASE_CFG, "leading"), "variant",
                            f"stage 1, variant {variant.name}"))
        plan += [Row(f"{VARIANT_PREFIX['stage2']}{variant.name}_{n}", VARIANT_PREFIX["stage2"] + variant.name, ddim(n, 1.0, "trailing"), "variant",
                     f"stage 2, variant {variant.name}") for n in (8, 4, 2, 1)]
    planned = trainings(settings)
    present = {row.name: row for row in plan if row.training is None or row.training in planned}
    present = {name: replace(row, own_lora=row.own_lora if row.own_lora in present else "") for name, row in present.items()}
    if settings.controls:
        present |= {control_name(row.name): replace(row, name=control_name(row.name), label=f"{row.label} + best post-filter", control_of=row.name, own_lora="")
                    for row in list(present.values())}
    return present


def sampled_rows(settings: ArenaSettings) -> dict[str, Row]:
    """The rows that are sampled (a control row filters its row's images instead)."""
    return {name: row for name, row in rows(settings).items() if not row.control_of}
