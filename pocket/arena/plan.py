"""What the arena runs: its seeds and splits, its trainings and its rows (a model and a sampler each).

Seeds, all disjoint from every stream a model was built from (LDM 0, perception and rewards 1/2,
held-out evaluators 101/102, the demo's 103/202, the prompt judge 301/302):

* **Training seeds** :data:`TRAINING_SEEDS` = 0, 1, 2 (``optim.seed`` of UniFL, ``--seed`` of each peer):
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

TRAINING_SEEDS = (0, 1, 2)
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
    budget_of: str = ""
    """Peers: the UniFL training whose measured wall time (same seed) is this run's budget."""
    steps_of: str = ""
    """Peers: the UniFL training whose step count this run takes instead of a time budget."""
    group: str = "unifl"  # "unifl" | "ablation" | "peer"


@dataclass(frozen=True)
class Row:
    name: str
    training: str | None  # None: the base model
    sampler: Sampler
    group: str  # "unifl" | "ablation" | "peer"
    label: str = ""


@dataclass(frozen=True)
class ArenaSettings:
    """Sizes of an arena run. The default is the full run (``make arena``); :meth:`quick` the smoke run."""

    split: str = "test"
    seeds: tuple[int, ...] = TRAINING_SEEDS
    stage1_steps: int = 100
    stage2_steps: int = 100
    num_prompts: int = 86
    """Prompts per replicate; replicate ``r`` takes the split's prompts ``r·n … (r+1)·n − 1``."""
    images_per_prompt: int = 4
    """Images per model and replicate: ``num_prompts × images_per_prompt`` = 344; with three replicates a row
    has 1032 images, on which the report measures realism pooled (≥ 1024, as the judges' precision needs), and
    the spreads come from the replicates. (1024 per replicate would take 175 min of 2 cores: sampling costs
    13 ms per UNet call and image, and six rows run 20 steps with CFG.)"""
    num_real: int = 1024
    """Real reference images for realism; the real-vs-real floor uses as many again, per replicate."""
    ablations: bool = True
    peers: tuple[str, ...] = ("lcm_lora", "pcm", "pcm_adv", "alignprop")
    """Peers to run; those whose code is not on the machine are skipped (and the report says so)."""
    learning_rates: tuple[float, ...] = (2e-4, 1e-3)
    """The learning rates each tuned training (:data:`TUNING`: UniFL's stages and the peers) is tried with on the
    validation split before the test run: the pocket preset's and 5× it, as these runs are short (about 100
    steps) where the peers' scripts were set for thousands of steps."""
    peer_min_steps: int = 0
    """Quick runs: stop a peer after this many steps even inside its budget (0: the budget alone)."""
    workers: int = 2
    threads: int = 1
    quick: bool = False
    grid_images: int = 8

    @classmethod
    def smoke(cls, split: str = "validation") -> "ArenaSettings":
        """One seed, a few steps and images, validation split: the whole path in minutes, no claims to read."""
        return cls(split=split, seeds=(0,), stage1_steps=2, stage2_steps=2, num_prompts=16, images_per_prompt=1, num_real=32, peer_min_steps=2, quick=True)

    @property
    def images(self) -> int:
        return self.num_prompts * self.images_per_prompt

    def with_(self, **changes) -> "ArenaSettings":
        return replace(self, **changes)


def trainings(settings: ArenaSettings) -> dict[str, Training]:
    s1, s2 = f"optim.max_steps={settings.stage1_steps}", f"optim.max_steps={settings.stage2_steps}"
    plan = {
        "stage1": Training("stage1", "unifl", ("stage=1", s1)),
        "stage2": Training("stage2", "unifl", ("stage=2", s2), after=("stage1",)),
    }
    if settings.ablations:
        plan |= {
            "stage1_no_pefl": Training("stage1_no_pefl", "unifl", ("stage=1", s1, "perception=[]"), group="ablation"),
            "stage1_global_reward": Training("stage1_global_reward", "unifl", ("stage=1", s1, 'rewards=[{aspect = "global", kind = "pocket-reward", path = "global"}]'), group="ablation"),
            "stage2_no_adversarial": Training("stage2_no_adversarial", "unifl", ("stage=2", s2, "adversarial.weight=0"), after=("stage1",), group="ablation"),
        }
    peers = {
        "lcm_lora": Training("lcm_lora", "lcm_lora", after=("stage2",), budget_of="stage2", group="peer"),
        "pcm": Training("pcm", "pcm", after=("stage2",), budget_of="stage2", group="peer"),
        "pcm_adv": Training("pcm_adv", "pcm_adv", after=("stage2",), budget_of="stage2", group="peer"),
        "alignprop_steps": Training("alignprop_steps", "alignprop", after=("stage1",), steps_of="stage1", group="peer"),
        "alignprop_time": Training("alignprop_time", "alignprop", after=("stage1",), budget_of="stage1", group="peer"),
    }
    plan |= {name: t for name, t in peers.items() if t.method in settings.peers}
    return plan


TUNING = {
    "stage1": ("stage1_20", "prompt_accuracy"),
    "stage2": ("stage2_4", "fd"),
    "lcm_lora": ("lcm_lora_lcm_4", "fd"),
    "pcm": ("pcm_4", "fd"),
    "pcm_adv": ("pcm_adv_4", "fd"),
    "alignprop_time": ("alignprop_time_20", "prompt_accuracy"),
}
"""Each tuned training, UniFL's two stages and the peers alike: the row its learning-rate candidates are sampled
as on the validation split (first training seed, its first replicate's prompts and noise) and the judge number
that picks one. Few-step trainings (stage 2 and the distillation peers) are picked on realism (FD, lower is
better), which acceleration is for; stage 1 and AlignProp on prompt accuracy (higher), which they are compared
on. The candidate run of the chosen rate *is* that seed's training in the test run (same seed, data and budget),
so tuning costs only the other candidates. Stage 2's candidates continue the chosen stage 1; the peers' budgets
are the chosen stages' measured times."""
TUNED_WITH = {"alignprop_steps": "alignprop_time", "stage1_no_pefl": "stage1", "stage1_global_reward": "stage1", "stage2_no_adversarial": "stage2"}
"""Trainings that take another training's chosen learning rate (an ablation its stage's; AlignProp at equal
steps the one chosen at equal time)."""


def tuning_of(training: str) -> str:
    """The tuned training whose chosen learning rate ``training`` uses."""
    return TUNED_WITH.get(training, training)


BASE_CFG = 3.0
"""The pocket model's usual guidance (stage 1's contract); few-step rows without CFG use 1."""


def rows(settings: ArenaSettings) -> dict[str, Row]:
    ddim = lambda steps, cfg, spacing: Sampler("ddim", steps, cfg, spacing)  # noqa: E731
    plan = [
        Row("base_20", None, ddim(20, BASE_CFG, "leading"), "unifl", "base"),
        Row("base_4", None, ddim(4, BASE_CFG, "trailing"), "unifl", "base"),
        Row("base_4_cfg1", None, ddim(4, 1.0, "trailing"), "unifl", "base"),
        Row("stage1_20", "stage1", ddim(20, BASE_CFG, "leading"), "unifl", "UniFL stage 1"),
        Row("stage2_4", "stage2", ddim(4, 1.0, "trailing"), "unifl", "UniFL stage 2"),
        Row("stage2_2", "stage2", ddim(2, 1.0, "trailing"), "unifl", "UniFL stage 2"),
        Row("stage2_1", "stage2", ddim(1, 1.0, "trailing"), "unifl", "UniFL stage 2"),
        Row("stage1_no_pefl_20", "stage1_no_pefl", ddim(20, BASE_CFG, "leading"), "ablation", "stage 1 without PeFL"),
        Row("stage1_global_reward_20", "stage1_global_reward", ddim(20, BASE_CFG, "leading"), "ablation", "stage 1, one global reward"),
        Row("stage2_no_adversarial_4", "stage2_no_adversarial", ddim(4, 1.0, "trailing"), "ablation", "stage 2 without adversarial"),
        *[Row(f"lcm_lora_{kind}_{n}", "lcm_lora", Sampler(kind, n, 1.0), "peer", "LCM-LoRA") for kind in ("lcm", "tcd") for n in (4, 2, 1)],
        Row("pcm_4", "pcm", ddim(4, 1.0, "trailing"), "peer", "PCM"),
        Row("pcm_adv_4", "pcm_adv", ddim(4, 1.0, "trailing"), "peer", "PCM (adversarial)"),
        Row("alignprop_steps_20", "alignprop_steps", ddim(20, BASE_CFG, "leading"), "peer", "AlignProp, stage 1's steps"),
        Row("alignprop_time_20", "alignprop_time", ddim(20, BASE_CFG, "leading"), "peer", "AlignProp, stage 1's time"),
    ]
    planned = trainings(settings)
    return {row.name: row for row in plan if row.training is None or row.training in planned}
