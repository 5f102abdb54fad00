"""How long an arena takes: the plan's work, priced with per-step costs measured on this machine.

``bench/arena_costs.py`` measures the costs (one thread, the machine as it is); :data:`MEASURED_COSTS` are its
last numbers, which ``unifl arena`` prints its prediction with before it starts. The arithmetic, so it can be
checked by hand:

* a UniFL training costs ``load + steps × step cost`` of its stage (steps at the run's budget multiple); a peer
  trains for the summed wall time of the UniFL stages it is matched with (its budget) plus its own loading;
  AlignProp at equal steps costs ``stage-1 steps × AlignProp step cost``;
* a sampling job costs ``images × UNet calls per image × cost per UNet call and image`` (decoding and text
  encoding amortised into that cost, as measured);
* measuring a row's images with the judges costs ``images × measure cost per image``, for every row (controls
  included) and for the three references (ceiling and floors) of a seed;
* each tuned training (:data:`~.plan.TUNING`) trains every candidate of every swept axis on the first seed, one
  of which (the chosen) is that seed's training, and samples and measures each on the validation split; a
  grid widened at its edge adds candidates the estimate cannot foresee (the report counts them);
* a control row samples its row once more on the validation split and prices the filter choice as
  :data:`FILTER_CANDIDATES` measurements of those images;
* the jobs run on ``workers`` processes, so the wall time is the sum divided by the workers (assumes the pool
  keeps both busy; the chains stage 1 → stage 2 → peers leave a little idle time at the end).
"""

from __future__ import annotations

from .plan import ArenaSettings, rows, trainings, tuning_spec

LOAD_SECONDS = {"unifl": 20.0, "lcm_lora": 25.0, "pcm": 25.0, "pcm_adv": 30.0, "alignprop": 40.0}
"""Start-up of a training (imports, model and feedback models loaded, data ready), measured in smoke runs."""
MEASURED_COSTS = {"stage1_step": 1.50, "stage2_step": 2.54, "alignprop_step": 3.67, "unet_image": 0.0133, "measure_image": 0.023}
"""Seconds, from ``python bench/arena_costs.py`` on a 2-core Intel Xeon at load average 1.9, one thread a process
(docs/pocket-world.md, "How long `make arena` takes")."""
FILTER_CANDIDATES = 12
"""The post-filter choice's cost in measurements of a row's validation images (filters × strengths: an assumption
the report's wall time checks)."""


def estimate(settings: ArenaSettings, costs: dict[str, float], present: set[str] | None = None, rows_run: set[str] | None = None) -> dict[str, float]:
    """Seconds of work per kind and the wall estimate. ``costs``: ``stage1_step``, ``stage2_step``, ``alignprop_step``,
    ``unet_image`` (seconds per UNet call per image when sampling), ``measure_image``. ``present``/``rows_run``:
    the trainings and rows that will run (default: the whole plan, every peer and control)."""
    work = {"trainings": 0.0, "tuning": 0.0, "sampling": 0.0, "controls": 0.0}
    planned = {name: t for name, t in trainings(settings).items() if present is None or name in present}
    row_plan = {name: r for name, r in rows(settings).items() if rows_run is None or name in rows_run}
    steps1, steps2 = settings.steps
    stage_time = {"stage1": LOAD_SECONDS["unifl"] + steps1 * costs["stage1_step"], "stage2": LOAD_SECONDS["unifl"] + steps2 * costs["stage2_step"]}
    seeds, images = len(settings.seeds), settings.images
    all_rows = rows(settings)

    def sampled(row) -> float:
        return images * (row.sampler.unet_calls_per_image() * costs["unet_image"] + costs["measure_image"])

    for t in planned.values():
        if t.method == "unifl":
            seconds = stage_time["stage2" if "stage=2" in t.overrides else "stage1"]
        elif t.steps_of:
            seconds = LOAD_SECONDS[t.method] + steps1 * costs["alignprop_step"]
        else:
            seconds = LOAD_SECONDS[t.method] + sum(stage_time[b] for b in t.budget_of)
        work["trainings"] += seconds * seeds
        spec = tuning_spec(t.name)
        if spec is not None and not settings.tuning_from:
            candidates = sum(len(settings.learning_rates if axis == "learning_rate" else settings.discriminator_rates) for axis in spec.axes)
            work["tuning"] += seconds * (candidates - 1) + candidates * sampled(all_rows[spec.row])
    for row in row_plan.values():
        if row.control_of:
            source = all_rows[row.control_of]
            work["controls"] += images * source.sampler.unet_calls_per_image() * costs["unet_image"] + FILTER_CANDIDATES * images * costs["measure_image"]
        else:
            work["sampling"] += images * row.sampler.unet_calls_per_image() * costs["unet_image"] * seeds
    measuring = costs["measure_image"] * images * seeds * (len(row_plan) + 3)
    wall = (sum(work.values()) + measuring) / settings.workers
    return {**work, "measuring": measuring, "wall": wall}
