"""Which losses a config trains with: one rule for the trainer, the pre-run check and the UIs."""

from __future__ import annotations

from ..config import TrainConfig


def feedback_terms(config: TrainConfig) -> list[str]:
    """The feedback losses ``config`` trains with: ``"PeFL"``, ``"aesthetic"``, ``"adversarial"``. Empty: a
    denoising-only run, with no feedback at all."""
    on = {
        "PeFL": config.stage == "1" and config.pefl.weight > 0 and bool(config.perception),
        "aesthetic": config.aesthetic.weight > 0 and bool(config.rewards),
        "adversarial": config.stage == "2" and config.adversarial.weight > 0,
    }
    return [term for term, used in on.items() if used]


def loss_terms(config: TrainConfig) -> list[str]:
    """Every loss of the step: the feedback terms, then the regularisers that are on (``"denoising"``, ``"base-KL"``)."""
    r = config.regularizer
    return feedback_terms(config) + [name for name, on in (("denoising", r.denoising_weight > 0), ("base-KL", r.base_kl_weight > 0)) if on]


def needs_real_images(config: TrainConfig) -> bool:
    """PeFL noises real images, the adversarial stage shows them to its discriminator, the denoising regulariser fits them."""
    terms = loss_terms(config)
    return "PeFL" in terms or "adversarial" in terms or "denoising" in terms
