"""The arena's one family of claims, fixed here before any run, and how each is decided.

Every claim compares row A with row B on one or more metrics. Each (metric, opponent) pair is one test of the
family: a hierarchical paired bootstrap of ``A − B`` (:mod:`.stats`) gives its interval and one-sided p-value,
and Holm's procedure over every test of the family decides which hold at family-wise level
``ArenaSettings.family_alpha``. A claim holds when all its tests do. The opponents of B:

* B itself and, where it ran, **B's post-filter control** on a realism metric: a realism win that a sharpen
  node also buys is no win (:mod:`.controls`);
* for a peer, **the same peer with its script's own LoRA** (and that row's control): UniFL must beat both.

"A is no worse than B" allows a margin of :data:`NO_WORSE_MARGIN` of B's value, declared here in advance.
The per-replicate mean, min and max of each metric (:func:`aggregate`) stay in ``metrics.json`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: metric key → (path into a measurement, higher is better, label)
METRICS: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "prompt_accuracy": (("prompt", "prompt_accuracy"), True, "prompt accuracy ↑"),
    "all_correct": (("prompt", "all_correct"), True, "all checks ↑"),
    "count": (("prompt", "count"), True, "count ↑"),
    "shape": (("prompt", "shape"), True, "shape ↑"),
    "colour": (("prompt", "colour"), True, "colour ↑"),
    "size": (("prompt", "size"), True, "size ↑"),
    "relation": (("prompt", "relation"), True, "relations ↑"),
    "tone": (("prompt", "tone"), True, "tone ↑"),
    "light": (("prompt", "light"), True, "light ↑"),
    "precision": (("prompt", "precision"), True, "precision ↑"),
    "recall": (("prompt", "recall"), True, "recall ↑"),
    "extra_objects": (("prompt", "extra_objects"), False, "extra objects ↓"),
    "missing_objects": (("prompt", "missing_objects"), False, "missing objects ↓"),
    "prompt_accuracy_v1": (("prompt_v1", "prompt_accuracy"), True, "prompt accuracy, judge v1 ↑"),
    "all_correct_v1": (("prompt_v1", "all_correct"), True, "all checks, judge v1 ↑"),
    "fd": (("realism", "fd"), False, "FD ↓"),
    "kid": (("realism", "kid"), False, "KID ↓"),
    "spectrum": (("realism", "spectrum"), False, "spectrum ↓"),
    "aspect_shortfall": (("aspect_shortfall", "mean"), False, "aspect shortfall ↓"),
    **{f"shortfall_{a}": (("aspect_shortfall", a), False, f"{a} shortfall ↓") for a in ("color", "layout", "detail", "lighting")},
}


def measured(measurement: dict, metric: str) -> bool:
    """Whether the judges that made ``measurement`` have ``metric`` (the spectrum comes with realism v2)."""
    node = measurement
    for key in METRICS[metric][0]:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def value(measurement: dict, metric: str) -> float:
    node = measurement
    for key in METRICS[metric][0]:
        node = node[key]
    return float(node)


def aggregate(replicates: list[dict]) -> dict[str, dict[str, float]]:
    """Per metric the judges measured: mean, min, max and the number of replicates."""
    out = {}
    for metric in METRICS:
        if not all(measured(m, metric) for m in replicates):
            continue
        values = [value(m, metric) for m in replicates]
        finite = [v for v in values if v == v]
        out[metric] = {"mean": float(np.mean(finite)) if finite else float("nan"), "min": min(finite, default=float("nan")),
                       "max": max(finite, default=float("nan")), "n": len(values)}
    return out


def _realism() -> tuple[str, ...]:
    import importlib.util

    return ("fd", "kid") + (("spectrum",) if importlib.util.find_spec("..judges.spectrum", __package__) else ())


REALISM = _realism()
"""The realism metrics a realism claim is decided on (each against B and B's post-filter control): FD and KID in
the prompt judge's features, and the spectrum distance (which no blur or sharpen can game) where the judges have it."""
NO_WORSE_MARGIN = 0.05
"""How much worse than B (a fraction of B's value) "no worse" still allows, on every metric."""
FAMILY = "arena-claims-3"
"""The family's name in ``metrics.json``: a changed family is a new name, never an edit after a run."""


@dataclass(frozen=True)
class Claim:
    text: str
    kind: str  # "beats" | "no_worse"
    a: str
    b: str
    metrics: tuple[str, ...]
    group: str  # "paper" | "ablation" | "peer" | "choice"


def family() -> list[Claim]:
    """Every claim of the arena, whatever runs: the paper's, the ablations' and the peers'."""
    claims = [
        Claim("Stage 1 follows prompts better than the base at 20 steps", "beats", "stage1_20", "base_20", ("prompt_accuracy",), "paper"),
        Claim("Stage 1 is closer to real renders' aspect scores than the base at 20 steps", "beats", "stage1_20", "base_20", ("aspect_shortfall",), "paper"),
        Claim("Stage 1 loses no realism against the base at 20 steps", "no_worse", "stage1_20", "base_20", REALISM, "paper"),
        Claim("Stage 2 at 4 steps is more realistic than the base at 4 steps, CFG 3", "beats", "stage2_4", "base_4", REALISM, "paper"),
        Claim("Stage 2 at 4 steps is more realistic than the base at 4 steps, CFG 1 (the same sampler)", "beats", "stage2_4", "base_4_cfg1", REALISM, "paper"),
        Claim("Stage 2 at 4 steps follows prompts better than the base at 4 steps, CFG 1", "beats", "stage2_4", "base_4_cfg1", ("prompt_accuracy",), "paper"),
        Claim("Stage 2 at 4 steps is as realistic as the base at 20 steps", "no_worse", "stage2_4", "base_20", REALISM, "paper"),
        Claim("Stage 2 at 2 steps is more realistic than the base at 4 steps, CFG 1", "beats", "stage2_2", "base_4_cfg1", REALISM, "paper"),
        Claim("Stage 2 from the base model (stage 2's time only) at 4 steps is more realistic than the base at 4 steps, CFG 1", "beats", "stage2_from_base_4", "base_4_cfg1", REALISM, "paper"),
        Claim("Stage 2 at 8 steps is no less realistic than at 4 (one LoRA for the step counts users pick)", "no_worse", "stage2_8", "stage2_4", REALISM, "paper"),
        Claim("Stage 2 at 8 steps follows prompts no worse than at 4", "no_worse", "stage2_8", "stage2_4", ("prompt_accuracy",), "paper"),
        Claim("PeFL helps: full stage 1 follows prompts better than stage 1 without PeFL", "beats", "stage1_20", "stage1_no_pefl_20", ("prompt_accuracy",), "ablation"),
        Claim("Decoupled rewards help: full stage 1 is closer to real aspect scores than with one global reward", "beats", "stage1_20", "stage1_global_reward_20", ("aspect_shortfall",), "ablation"),
        Claim("The adversarial term helps: full stage 2 is more realistic than stage 2 without it", "beats", "stage2_4", "stage2_no_adversarial_4", REALISM, "ablation"),
    ]
    peers = [(f"lcm_lora_{kind}_{steps}", f"LCM-LoRA ({name}, {steps} steps)", steps) for steps in (4, 2, 1) for kind, name in (("lcm", "LCMScheduler"), ("tcd", "TCDScheduler"))]
    peers += [("pcm_4", "PCM at 4 steps", 4), ("pcm_adv_4", "PCM with its adversarial loss at 4 steps", 4)]
    for peer, name, steps in peers:
        claims += [
            Claim(f"Stage 2 at {steps} steps is more realistic than {name}", "beats", f"stage2_{steps}", peer, REALISM, "peer"),
            Claim(f"Stage 2 at {steps} steps follows prompts better than {name}", "beats", f"stage2_{steps}", peer, ("prompt_accuracy",), "peer"),
        ]
        if steps == 4:
            claims.append(Claim(f"Stage 2 from the base model (half the peer's time) at 4 steps is more realistic than {name}", "beats", "stage2_from_base_4", peer, REALISM, "peer"))
    for peer, budget in (("alignprop_steps_20", "equal steps"), ("alignprop_time_20", "equal wall-clock")):
        claims += [
            Claim(f"Stage 1 follows prompts better than AlignProp ({budget})", "beats", "stage1_20", peer, ("prompt_accuracy",), "peer"),
            Claim(f"Stage 1 loses no realism against AlignProp ({budget})", "no_worse", "stage1_20", peer, REALISM, "peer"),
        ]
    return claims


CHOICES_FAMILY = "arena-choices-1"
"""The family a choices run (``make arena-choices``) decides its candidate defaults by, Holm-corrected on its own."""
CHOICE_COUNTS = (1, 2, 4, 8)


def choices_family(variants) -> list[Claim]:
    """Each candidate default against today's UniFL on the same seeds, prompts and noise, at every step count a
    few-step LoRA is used at (and at 20 steps for its stage 1, where it has its own): more realistic, following
    prompts better, no worse on either. ``docs/paper-choices.md`` says which of these picks a default."""
    from .plan import VARIANT_PREFIX

    claims = []
    for variant in variants:
        if variant.scope == "both":
            a = f"{VARIANT_PREFIX['stage1']}{variant.name}_20"
            claims += [
                Claim(f"{variant.name}: stage 1 follows prompts better than today's at 20 steps", "beats", a, "stage1_20", ("prompt_accuracy",), "choice"),
                Claim(f"{variant.name}: stage 1 is no worse than today's at 20 steps", "no_worse", a, "stage1_20", ("prompt_accuracy", *REALISM), "choice"),
            ]
        for n in CHOICE_COUNTS:
            a, b = f"{VARIANT_PREFIX['stage2']}{variant.name}_{n}", f"stage2_{n}"
            claims += [
                Claim(f"{variant.name}: stage 2 at {n} steps is more realistic than today's", "beats", a, b, REALISM, "choice"),
                Claim(f"{variant.name}: stage 2 at {n} steps follows prompts better than today's", "beats", a, b, ("prompt_accuracy",), "choice"),
                Claim(f"{variant.name}: stage 2 at {n} steps is no worse than today's", "no_worse", a, b, ("prompt_accuracy", *REALISM), "choice"),
            ]
    return claims


def planned_claims(rows: set[str]) -> list[Claim]:
    """The family's claims whose two rows are present."""
    return [c for c in family() if c.a in rows and c.b in rows]


def opponents(b: str, metric: str, row_plan: dict) -> list[str]:
    """The rows a claim against ``b`` must win against on ``metric`` (see the module docstring), those present."""
    from .plan import control_name

    names = [b] + ([row_plan[b].own_lora] if row_plan[b].own_lora else [])
    if metric in REALISM:
        names += [control_name(n) for n in names]
    return [n for n in names if n in row_plan]


def decide(claims: list[Claim], boot: dict[str, dict[str, np.ndarray]], row_plan: dict, alpha: float, confidence: float) -> list[dict]:
    """Every test of every claim (``boot``: row → metric → bootstrap draws, shared weights), Holm-corrected over the
    family; a claim holds when all its tests do."""
    from .stats import Comparison, compare, holm

    tests = []
    for index, claim in enumerate(claims):
        for metric in claim.metrics:
            for opponent in opponents(claim.b, metric, row_plan):
                comparison = Comparison(claim.kind, METRICS[metric][1], NO_WORSE_MARGIN if claim.kind == "no_worse" else 0.0)
                tests.append({"claim": index, "metric": metric, "b": opponent, **compare(comparison, boot[claim.a][metric], boot[opponent][metric], confidence)})
    rejected, adjusted = holm([t["p"] for t in tests], alpha) if tests else ([], [])
    for test, held, p in zip(tests, rejected, adjusted):
        test["holm_p"], test["holds"] = p, held
    decided = []
    for index, claim in enumerate(claims):
        mine = [{k: v for k, v in t.items() if k != "claim"} for t in tests if t["claim"] == index]
        decided.append({"claim": claim.text, "group": claim.group, "kind": claim.kind, "a": claim.a, "b": claim.b, "metrics": list(claim.metrics),
                        "tests": mine, "holds": bool(mine) and all(t["holds"] for t in mine)})
    return decided
