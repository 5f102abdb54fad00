"""Aggregating replicates into mean and spread, and checking every claim against the spreads.

A row's spread on a metric is the interval ``[min, max]`` over its replicates (three training seeds,
each sampled with its own noise seeds). "A beats B" holds only when the intervals do not overlap and A's
lies on the better side; "A is no worse than B" holds unless B beats A that way. With one replicate (a
smoke run) the intervals are points: the checks still run, but they mean nothing, and the report says so.
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
    "fd": (("realism", "fd"), False, "FD ↓"),
    "kid": (("realism", "kid"), False, "KID ↓"),
    "aspect_shortfall": (("aspect_shortfall", "mean"), False, "aspect shortfall ↓"),
    **{f"shortfall_{a}": (("aspect_shortfall", a), False, f"{a} shortfall ↓") for a in ("color", "layout", "detail", "lighting")},
}


def value(measurement: dict, metric: str) -> float:
    node = measurement
    for key in METRICS[metric][0]:
        node = node[key]
    return float(node)


def aggregate(replicates: list[dict]) -> dict[str, dict[str, float]]:
    """Per metric: mean, min, max and the number of replicates."""
    out = {}
    for metric in METRICS:
        values = [value(m, metric) for m in replicates]
        finite = [v for v in values if v == v]
        out[metric] = {"mean": float(np.mean(finite)) if finite else float("nan"), "min": min(finite, default=float("nan")),
                       "max": max(finite, default=float("nan")), "n": len(values)}
    return out


def beats(a: dict, b: dict, metric: str) -> bool:
    """A's interval lies strictly on the better side of B's."""
    higher_better = METRICS[metric][1]
    x, y = a[metric], b[metric]
    return x["min"] > y["max"] if higher_better else x["max"] < y["min"]


@dataclass(frozen=True)
class Claim:
    text: str
    kind: str  # "beats" | "no_worse"
    a: str
    b: str
    metrics: tuple[str, ...]
    group: str  # "paper" | "ablation" | "peer"


def planned_claims(rows: set[str]) -> list[Claim]:
    """Every claim whose rows are present: the paper's, the ablations' and the peers'."""
    realism = ("fd", "kid")
    claims = [
        Claim("Stage 1 follows prompts better than the base at 20 steps", "beats", "stage1_20", "base_20", ("prompt_accuracy",), "paper"),
        Claim("Stage 1 is closer to real renders' aspect scores than the base at 20 steps", "beats", "stage1_20", "base_20", ("aspect_shortfall",), "paper"),
        Claim("Stage 1 loses no realism against the base at 20 steps", "no_worse", "stage1_20", "base_20", realism, "paper"),
        Claim("Stage 2 at 4 steps is more realistic than the base at 4 steps, CFG 3", "beats", "stage2_4", "base_4", realism, "paper"),
        Claim("Stage 2 at 4 steps is more realistic than the base at 4 steps, CFG 1 (the same sampler)", "beats", "stage2_4", "base_4_cfg1", realism, "paper"),
        Claim("Stage 2 at 4 steps follows prompts better than the base at 4 steps, CFG 1", "beats", "stage2_4", "base_4_cfg1", ("prompt_accuracy",), "paper"),
        Claim("Stage 2 at 4 steps is as realistic as the base at 20 steps", "no_worse", "stage2_4", "base_20", realism, "paper"),
        Claim("Stage 2 at 2 steps is more realistic than the base at 4 steps, CFG 1", "beats", "stage2_2", "base_4_cfg1", realism, "paper"),
        Claim("PeFL helps: full stage 1 follows prompts better than stage 1 without PeFL", "beats", "stage1_20", "stage1_no_pefl_20", ("prompt_accuracy",), "ablation"),
        Claim("Decoupled rewards help: full stage 1 is closer to real aspect scores than with one global reward", "beats", "stage1_20", "stage1_global_reward_20", ("aspect_shortfall",), "ablation"),
        Claim("The adversarial term helps: full stage 2 is more realistic than stage 2 without it", "beats", "stage2_4", "stage2_no_adversarial_4", realism, "ablation"),
    ]
    for steps in (4, 2, 1):
        for kind, name in (("lcm", "LCMScheduler"), ("tcd", "TCDScheduler")):
            peer = f"lcm_lora_{kind}_{steps}"
            claims += [
                Claim(f"Stage 2 at {steps} steps is more realistic than LCM-LoRA ({name}, {steps} steps)", "beats", f"stage2_{steps}", peer, realism, "peer"),
                Claim(f"Stage 2 at {steps} steps follows prompts better than LCM-LoRA ({name}, {steps} steps)", "beats", f"stage2_{steps}", peer, ("prompt_accuracy",), "peer"),
            ]
    for peer, name in (("pcm_4", "PCM"), ("pcm_adv_4", "PCM with its adversarial loss")):
        claims += [
            Claim(f"Stage 2 at 4 steps is more realistic than {name} at 4 steps", "beats", "stage2_4", peer, realism, "peer"),
            Claim(f"Stage 2 at 4 steps follows prompts better than {name} at 4 steps", "beats", "stage2_4", peer, ("prompt_accuracy",), "peer"),
        ]
    for peer, budget in (("alignprop_steps_20", "equal steps"), ("alignprop_time_20", "equal wall-clock")):
        claims += [
            Claim(f"Stage 1 follows prompts better than AlignProp ({budget})", "beats", "stage1_20", peer, ("prompt_accuracy",), "peer"),
            Claim(f"Stage 1 loses no realism against AlignProp ({budget})", "no_worse", "stage1_20", peer, realism, "peer"),
        ]
    return [c for c in claims if c.a in rows and c.b in rows]


def check(claim: Claim, summary: dict[str, dict]) -> dict:
    """Whether ``claim`` holds on every one of its metrics, with the numbers behind it."""
    a, b = summary[claim.a], summary[claim.b]
    verdicts = {m: beats(a, b, m) if claim.kind == "beats" else not beats(b, a, m) for m in claim.metrics}
    numbers = "; ".join(f"{METRICS[m][2]}: {claim.a} {_span(a[m])} vs {claim.b} {_span(b[m])}" for m in claim.metrics)
    return {"claim": claim.text, "group": claim.group, "kind": claim.kind, "a": claim.a, "b": claim.b, "metrics": list(claim.metrics),
            "per_metric": verdicts, "holds": all(verdicts.values()), "numbers": numbers}


def _span(stats: dict) -> str:
    if stats["n"] <= 1:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['min']:.3f}, {stats['max']:.3f}]"
