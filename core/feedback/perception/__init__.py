"""The contract a perception model satisfies to give perceptual feedback (PeFL), and the helpers that use it.

PeFL is "a frozen expert model's own task loss on the decoded one-step ``x0``". Any model can be that
expert if it is a callable of one of three shapes below (or, for structure, computes its own training
loss: :class:`InstanceSegmenterWithLoss`); wrapping VGG16, SOLO or DeepLabV3 (or a
smaller stand-in) is then a few lines in a loader, and the trainer never learns which model it is.

Shared rules for every kind:

* Input: images ``[B, 3, H, W]``, RGB in ``[0, 1]``. The model does its own normalisation and resizing
  *in torch*, so that the gradient flows from its output back to the images.
* Frozen: parameters with ``requires_grad=False`` and, for an ``nn.Module``, eval mode (batch norm must
  not learn statistics of generated images). :func:`freeze` does both; the helpers refuse a module that
  is not frozen rather than silently accumulating gradients in it.

The ``Protocol`` classes are ``runtime_checkable``, but at run time Python can only see that an object
is callable (and, for :class:`AssigningInstanceSegmenter`, has ``assign``); the helpers check the
*outputs*, which is where a wrong model shows.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from ..losses.pefl import instance_segmentation_loss, semantic_segmentation_loss, style_loss


class InstancePrediction(NamedTuple):
    """An instance segmenter's output: ``Q`` instance slots per image.

    ``class_logits`` ``[B, Q, C]``: sigmoid (not softmax) class scores, no background class.
    ``mask_logits`` ``[B, Q, h, w]``: one mask per slot, at any resolution (upsampled in the loss).
    Slots are SOLO's S×S grid cells or DETR-style queries.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor


@runtime_checkable
class FeatureNet(Protocol):
    """Style feedback: ``images → [feature map [B, C_i, H_i, W_i] for each style layer]``."""

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class InstanceSegmenter(Protocol):
    """Structure feedback: ``images → InstancePrediction`` (a 2-tuple ``(class_logits, mask_logits)``)."""

    def __call__(self, images: torch.Tensor) -> InstancePrediction: ...


@runtime_checkable
class AssigningInstanceSegmenter(InstanceSegmenter, Protocol):
    """An instance segmenter that assigns its own slots to GT instances (SOLO: the cells at each centre).

    ``assign(targets)`` returns, per image, ``(pred_idx, gt_idx)`` LongTensors; without it PeFL falls
    back to Hungarian matching.
    """

    def assign(self, targets: Sequence[Mapping]) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


@runtime_checkable
class InstanceSegmenterWithLoss(Protocol):
    """Structure feedback from a segmenter's own training loss (Mask R-CNN, see :mod:`.maskrcnn`).

    ``training_loss(images, targets)`` returns the scalar loss the model was trained with, given the
    real image's instances (``targets`` as in :func:`pefl_structure_loss`), differentiable in
    ``images``. PeFL then uses it as it is, instead of matching ``InstancePrediction`` slots.
    """

    def training_loss(self, images: torch.Tensor, targets: Sequence[Mapping]) -> torch.Tensor: ...


@runtime_checkable
class SemanticSegmenter(Protocol):
    """Layout feedback: ``images → logits [B, C, h, w]`` (softmax over ``C`` classes)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def freeze(model: nn.Module) -> nn.Module:
    """Make a perception module a fixed judge: eval mode, no parameter gradients. Returns the module."""
    model.requires_grad_(False)
    return model.eval()


def _check_frozen(model: object, role: str) -> None:
    if not isinstance(model, nn.Module):
        return
    if model.training or any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"the {role} must be frozen (eval mode, requires_grad=False) so PeFL trains only the diffusion "
            "model; call unifl.core.feedback.perception.freeze(model) once after loading it"
        )


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be RGB images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")


def _feature_maps(output: object, role: str) -> list[torch.Tensor]:
    if not isinstance(output, (list, tuple)) or not all(isinstance(f, torch.Tensor) and f.ndim == 4 for f in output):
        raise TypeError(f"the {role} must return a list of [B, C, H, W] feature maps")
    return list(output)


def pefl_style_loss(
    net: FeatureNet,
    pred_images: torch.Tensor,
    real_images: torch.Tensor,
    layer_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Gram style loss between the features of predicted and real images (real ones under ``no_grad``)."""
    _check_frozen(net, "style feature network")
    _check_images(pred_images, "pred_images")
    _check_images(real_images, "real_images")
    pred_features = _feature_maps(net(pred_images), "style feature network")
    with torch.no_grad():
        real_features = _feature_maps(net(real_images), "style feature network")
    return style_loss(pred_features, real_features, layer_weights)


def pefl_structure_loss(
    segmenter: InstanceSegmenter,
    pred_images: torch.Tensor,
    targets: Sequence[Mapping],
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    focal_weight: float = 1.0,
    dice_weight: float = 3.0,
) -> torch.Tensor:
    """Instance-segmentation loss of the predicted images against the real image's instances.

    ``targets[b]`` is ``{"masks": [N, H, W], "labels": LongTensor[N]}``. A segmenter with its own
    ``training_loss`` (:class:`InstanceSegmenterWithLoss`) gives that loss, and the focal/dice settings
    do not apply. Otherwise slots are assigned by the segmenter's own ``assign`` if it has one, else by
    Hungarian matching.
    """
    _check_frozen(segmenter, "instance segmenter")
    _check_images(pred_images, "pred_images")
    if isinstance(segmenter, InstanceSegmenterWithLoss):
        loss = segmenter.training_loss(pred_images, targets)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError("the instance segmenter's training_loss must return a scalar tensor")
        return loss
    output = segmenter(pred_images)
    if not isinstance(output, tuple) or len(output) != 2:
        raise TypeError("the instance segmenter must return InstancePrediction(class_logits, mask_logits)")
    prediction = InstancePrediction(*output)
    assignments = segmenter.assign(targets) if isinstance(segmenter, AssigningInstanceSegmenter) else None
    return instance_segmentation_loss(
        prediction.class_logits,
        prediction.mask_logits,
        targets,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        focal_weight=focal_weight,
        dice_weight=dice_weight,
        assignments=assignments,
    )


def pefl_layout_loss(
    segmenter: SemanticSegmenter,
    pred_images: torch.Tensor,
    semantic_masks: torch.Tensor,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Semantic-segmentation cross-entropy of the predicted images against the real label map ``[B, H, W]``."""
    _check_frozen(segmenter, "semantic segmenter")
    _check_images(pred_images, "pred_images")
    logits = segmenter(pred_images)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise TypeError("the semantic segmenter must return logits [B, C, h, w]")
    return semantic_segmentation_loss(logits, semantic_masks, ignore_index)
