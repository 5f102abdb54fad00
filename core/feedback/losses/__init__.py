"""UniFL's feedback losses and regularisers, as pure functions of model outputs."""

from .adversarial import discriminator_fake_loss, discriminator_loss, discriminator_real_loss, generator_loss
from .aesthetic import decoupled_aesthetic_loss
from .pefl import gram_matrix, instance_segmentation_loss, semantic_segmentation_loss, style_loss
from .regularizers import base_model_kl, denoising_loss

__all__ = [
    "base_model_kl",
    "decoupled_aesthetic_loss",
    "denoising_loss",
    "discriminator_fake_loss",
    "discriminator_loss",
    "discriminator_real_loss",
    "generator_loss",
    "gram_matrix",
    "instance_segmentation_loss",
    "semantic_segmentation_loss",
    "style_loss",
]
