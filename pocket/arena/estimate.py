"""How long an arena takes: the plan's work, priced with per-step costs measured on this machine.

``bench/arena_costs.py`` measures the costs (one thread, the machine as it is) and prints
:func:`estimate` for the full arena. The arithmetic, so it can be checked by hand:

* a UniFL training costs ``load + steps × step cost`` of its stage; each peer trains for the wall time
  of the UniFL stage it is matched with (its budget), plus its own loading; AlignProp at equal steps
  costs ``stage-1 steps × AlignProp step cost``;
* a sampling job costs ``images × UNet calls per image × cost per UNet call and image`` (decoding and
  text encoding amortised into that cost, as measured);
* measuring a row's images with the judges (in the same worker, after sampling) costs ``images ×
  measure cost per image``, for every row and for the three references (ceiling and floors) of a seed;
* each tuned training (:data:`~.plan.TUNING`: UniFL's stages and the peers) trains one more run per extra
  learning-rate candidate on the first seed (the chosen one is that seed's training), and every candidate is
  sampled as its tuning row;
* the jobs run on ``workers`` processes, so the wall time is the sum divided by the workers (assumes
  the pool keeps both busy; the chains stage 1 → stage 2 → peers leave a little idle time at the end).
"""

from __future__ import annotations

from .plan import TUNING, ArenaSettings, rows, trainings

LOAD_SECONDS = {"unifl": 20.0, "lcm_lora": 25.0, "pcm": 25.0, "pcm_adv": 30.0, "alignprop": 40.0}
"""Start-up of a training (imports, model and feedback models loaded, data ready), measured in smoke runs."""


def estimate(settings: ArenaSettings, costs: dict[str, float]) -> dict[str, float]:
    """Seconds of work per kind and the wall estimate. ``costs``: ``stage1_step``, ``stage2_step``,
    ``alignprop_step``, ``unet_image`` (seconds per UNet call per image when sampling), ``measure_image``."""
    work = {"trainings": 0.0, "sampling": 0.0, "tuning": 0.0}
    planned = trainings(settings)
    stage_time = {"stage1": LOAD_SECONDS["unifl"] + settings.stage1_steps * costs["stage1_step"],
                  "stage2": LOAD_SECONDS["unifl"] + settings.stage2_steps * costs["stage2_step"]}
    for t in planned.values():
        if t.method == "unifl":
            seconds = stage_time["stage2" if "stage=2" in t.overrides else "stage1"]
        elif t.steps_of:
            seconds = LOAD_SECONDS[t.method] + settings.stage1_steps * costs["alignprop_step"]
        else:
            seconds = LOAD_SECONDS[t.method] + stage_time[t.budget_of]
        work["trainings"] += seconds * len(settings.seeds)
        if t.name in TUNING:
            sampler = rows(settings)[TUNING[t.name][0]].sampler
            candidates = len(settings.learning_rates)
            work["tuning"] += seconds * (candidates - 1) + candidates * settings.images * (sampler.unet_calls_per_image() * costs["unet_image"] + costs["measure_image"])
    for row in rows(settings).values():
        work["sampling"] += settings.images * row.sampler.unet_calls_per_image() * costs["unet_image"] * len(settings.seeds)
    measuring = costs["measure_image"] * settings.images * len(settings.seeds) * (len(rows(settings)) + 3)
    wall = (work["trainings"] + work["sampling"] + work["tuning"] + measuring) / settings.workers
    return {**work, "measuring": measuring, "wall": wall}
