"""Model evaluations, counted as images through a model: the arena's measure of compute beside wall time.

Two counts, the same way in UniFL's workers and in the peers' glue (``bench/peers/common.py``):

* ``unet``: images through any ``UNet2DConditionModel.forward`` (student, teacher, target alike);
* ``feedback``: images through a feedback model, once per model: each reward, perception or discriminator
  model an image passes (UniFL's four aspect rewards score a batch of 4 as 16), AlignProp's rewards, PCM's
  adversarial discriminator (a UNet encoder and heads, which ``UNet2DConditionModel.forward`` does not see).
"""

from __future__ import annotations

import threading

_INSIDE = threading.local()


def new_counter() -> dict[str, int]:
    return {"unet": 0, "feedback": 0}


def count_images(owner: type, method: str, counter: dict[str, int], key: str) -> None:
    """Count the images (the first argument's batch) through ``owner.method`` in this process into ``counter[key]``.

    An instrument, not a change: the call goes on as before. A call made inside another counted call of the
    same key is not counted again (a model inside a model). Counting a method again (a worker process runs
    many jobs) replaces the earlier count.
    """
    original = getattr(owner, method)
    original = getattr(original, "_counted_original", original)

    def counted(self, sample, *args, **kwargs):
        outer = getattr(_INSIDE, key, False)
        if not outer:
            counter[key] += int(sample.shape[0])
        setattr(_INSIDE, key, True)
        try:
            return original(self, sample, *args, **kwargs)
        finally:
            setattr(_INSIDE, key, outer)

    counted._counted_original = original
    setattr(owner, method, counted)


def count_unet(counter: dict[str, int]) -> None:
    from diffusers import UNet2DConditionModel

    count_images(UNet2DConditionModel, "forward", counter, "unet")


def count_feedback_models(models, counter: dict[str, int]) -> None:
    """Count images through each of ``models``' classes (their ``forward``)."""
    for cls in {type(model) for model in models if model is not None}:
        count_images(cls, "forward", counter, "feedback")


COMPUTE_KEYS = ("seconds", "unet_evaluations", "feedback_evaluations", "images_seen")
"""What a comparison states for each side: training wall time, UNet and feedback-model evaluations, images seen."""


def lineage(training: str, plan: dict) -> list[str]:
    """``training`` and every training whose LoRA it continues (stage 2: stage 1, then stage 2)."""
    chain = []
    while training:
        chain.insert(0, training)
        training = plan[training].init_from if training in plan else ""
    return chain


def training_compute(training: str | None, plan: dict, results: dict) -> dict[str, float] | None:
    """A row's training compute, mean over its seeds: the sum over its lineage (a LoRA trained from another LoRA
    carries that one's compute), per :data:`COMPUTE_KEYS`. ``results``: training → seed → ``result.json``.
    None for the base model (no training); ``{}`` when a training of the lineage has no result (not run)."""
    if training is None:
        return None
    chain = lineage(training, plan)
    if any(not results.get(name) for name in chain):
        return {}
    seeds = sorted(set.intersection(*(set(results[name]) for name in chain)))
    return {key: sum(float(results[name][seed].get(key) or 0) for name in chain for seed in seeds) / len(seeds) for key in COMPUTE_KEYS} | {"seeds": len(seeds), "lineage": chain}
