"""Perceptual feedback (PeFL): a frozen perception model's own task loss on the predicted ``x0``.

UniFL noises a real image, lets the diffusion model predict ``x0`` in one step, decodes it, and asks
an expert model whether the result is right by that model's own training objective:

* style: Gram matrices of feature maps (VGG16 in the paper), compared with those of the real image;
* structure: an instance-segmentation loss against the real image's instances (SOLO in the paper:
  sigmoid focal classification, weight 1, plus dice mask loss, weight 3);
* layout: semantic-segmentation cross-entropy against the real image's label map (DeepLabV3).

The functions here take model *outputs*, so they are pure and testable on tiny tensors; running a
perception model and keeping it frozen is :mod:`unifl.core.feedback.perception`'s job. Losses are computed in
float32 whatever the autocast dtype, because their sums and logs are where half precision breaks.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

# SOLO's dice smoothing (mmdet's SOLO head): added to each of the two squared sums in the denominator.
_DICE_EPS = 1e-3


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel co-activation (Gram) matrices of a batch of feature maps, ``[B, C, H, W] → [B, C, C]``.

    Normalised by ``C · H · W`` so that the scale does not depend on the resolution or the channel
    count of a layer: layers of different depth can share one weight, and a style target taken at a
    different resolution than the prediction is still comparable. Computed in float32 (a sum over
    ``H · W`` products overflows half precision), also inside the training autocast, which would
    otherwise run the product in half precision again.
    """
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects feature maps of shape [B, C, H, W], got {tuple(features.shape)}")
    batch, channels, height, width = features.shape
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().reshape(batch, channels, height * width)
        return flat @ flat.transpose(1, 2) / (channels * height * width)


def style_loss(
    pred_features: Sequence[torch.Tensor],
    target_features: Sequence[torch.Tensor],
    layer_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Gram-matrix style loss ``Σ_l w_l · MSE(Gram(pred_l), Gram(target_l))``, averaged over the batch.

    ``target_features`` may have batch size 1 (one style reference for every prediction) or the same
    batch size as ``pred_features``; spatial sizes may differ, channel counts must not. The target is
    not detached here: the caller decides (PeFL computes it under ``no_grad``).
    """
    if len(pred_features) != len(target_features):
        raise ValueError(
            f"style_loss: got {len(pred_features)} predicted feature maps but {len(target_features)} target "
            "feature maps; both must come from the same layers of the same network"
        )
    if not pred_features:
        raise ValueError("style_loss: no feature maps given; the feature network must return at least one layer")
    if layer_weights is None:
        layer_weights = [1.0] * len(pred_features)
    elif len(layer_weights) != len(pred_features):
        raise ValueError(
            f"style_loss: layer_weights has {len(layer_weights)} entries but there are {len(pred_features)} layers"
        )
    total = pred_features[0].new_zeros((), dtype=torch.float32)
    for layer, (pred, target, weight) in enumerate(zip(pred_features, target_features, layer_weights)):
        pred_gram, target_gram = gram_matrix(pred), gram_matrix(target)
        if pred_gram.shape[1:] != target_gram.shape[1:]:
            raise ValueError(
                f"style_loss: layer {layer} has {pred_gram.shape[1]} channels in the prediction but "
                f"{target_gram.shape[1]} in the target"
            )
        if target_gram.shape[0] not in (1, pred_gram.shape[0]):
            raise ValueError(
                f"style_loss: layer {layer} has batch size {pred_gram.shape[0]} in the prediction but "
                f"{target_gram.shape[0]} in the target; use the same batch size or a single style target"
            )
        total = total + weight * F.mse_loss(pred_gram, target_gram.expand_as(pred_gram))
    return total


def _focal_loss_elements(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al. 2017), the form torchvision and mmdet use."""
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def _dice_loss(mask_probs: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """SOLO's dice loss per pair, ``1 − 2Σpg / (Σp² + Σg² + 2ε)``, for ``[M, H, W]`` inputs → ``[M]``."""
    probs, gts = mask_probs.flatten(1), gt_masks.flatten(1)
    numerator = 2 * (probs * gts).sum(1)
    denominator = (probs * probs).sum(1) + (gts * gts).sum(1) + 2 * _DICE_EPS
    return 1 - numerator / denominator


def _gt_masks(target: Mapping, image: int) -> torch.Tensor:
    """An image's GT masks as one float ``[N, H, W]`` tensor (a sequence of ``[H, W]`` masks is stacked)."""
    if "masks" not in target or "labels" not in target:
        raise ValueError(f"instance targets[{image}] needs the keys 'masks' and 'labels', got {sorted(target)}")
    masks = target["masks"]
    if not isinstance(masks, torch.Tensor):
        masks = list(masks)
        sizes = {tuple(m.shape) for m in masks}
        if len(sizes) > 1:
            raise ValueError(
                f"instance targets[{image}]['masks']: masks of one image must share one size, got {sorted(sizes)}; "
                "resize them to the image size"
            )
        masks = torch.stack(masks) if masks else torch.zeros(0, 0, 0)
    if masks.ndim != 3:
        raise ValueError(f"instance targets[{image}]['masks'] must have shape [N, H, W], got {tuple(masks.shape)}")
    return masks.float()


def _gt_labels(target: Mapping, image: int, num_instances: int, num_classes: int) -> torch.Tensor:
    labels = target["labels"]
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        raise ValueError(f"instance targets[{image}]['labels'] must be a 1-D LongTensor (int64)")
    if labels.shape[0] != num_instances:
        raise ValueError(
            f"instance targets[{image}]: {num_instances} masks but {labels.shape[0]} labels; give one label per mask"
        )
    if num_instances and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"instance targets[{image}]['labels'] must lie in [0, {num_classes}) (the segmenter's classes, no "
            f"background class), got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


@torch.no_grad()
def _hungarian_match(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    gt_masks: torch.Tensor,
    gt_labels: torch.Tensor,
    alpha: float,
    gamma: float,
    class_weight: float,
    dice_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-cost one-to-one slot↔instance matching for one image (``[Q, C]``, ``[Q, h, w]``, ``[N, H, W]``).

    The class cost is the focal loss's change when a slot's target for the GT class flips from 0 to
    1, so matching and loss agree. The dice cost is taken at the slots' own resolution (the GT masks
    are area-resized to it): computing all ``Q`` masks at full image resolution would cost ``Q · H · W``
    memory only to rank them.
    """
    logits = class_logits.float()[:, gt_labels]
    probs = logits.sigmoid()
    cost_positive = alpha * (1 - probs) ** gamma * F.softplus(-logits)
    cost_negative = (1 - alpha) * probs**gamma * F.softplus(logits)
    class_cost = cost_positive - cost_negative

    pred = mask_logits.float().sigmoid().flatten(1)
    gts = F.interpolate(gt_masks[None], size=mask_logits.shape[-2:], mode="area")[0].flatten(1)
    dice_cost = 1 - 2 * pred @ gts.T / ((pred * pred).sum(1, keepdim=True) + (gts * gts).sum(1) + 2 * _DICE_EPS)

    cost = class_weight * class_cost + dice_weight * dice_cost
    pred_idx, gt_idx = linear_sum_assignment(cost.cpu().numpy())
    def as_index(indices) -> torch.Tensor:
        return torch.as_tensor(indices, dtype=torch.int64, device=class_logits.device)

    return as_index(pred_idx), as_index(gt_idx)


def _checked_assignment(
    assignment, image: int, num_slots: int, num_instances: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    pred_idx, gt_idx = (torch.as_tensor(i, dtype=torch.int64, device=device).reshape(-1) for i in assignment)
    if pred_idx.shape != gt_idx.shape:
        raise ValueError(
            f"assignments[{image}]: pred_idx and gt_idx have different lengths ({pred_idx.numel()} vs {gt_idx.numel()})"
        )
    if pred_idx.numel() and (int(pred_idx.min()) < 0 or int(pred_idx.max()) >= num_slots):
        raise ValueError(f"assignments[{image}]: pred_idx must lie in [0, {num_slots}) (the instance slots)")
    if gt_idx.numel() and (int(gt_idx.min()) < 0 or int(gt_idx.max()) >= num_instances):
        raise ValueError(f"assignments[{image}]: gt_idx must lie in [0, {num_instances}) (the image's GT instances)")
    return pred_idx, gt_idx


def instance_segmentation_loss(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    targets: Sequence[Mapping],
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    focal_weight: float = 1.0,
    dice_weight: float = 3.0,
    assignments: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """SOLO-style instance-segmentation loss: sigmoid focal classification plus dice on matched masks.

    ``class_logits`` ``[B, Q, C]`` and ``mask_logits`` ``[B, Q, h, w]`` describe ``Q`` instance slots per
    image (SOLO's S×S grid cells or DETR-style queries) with sigmoid class scores and no background
    class. ``targets[b]`` is ``{"masks": [N, H, W] bool/float, "labels": LongTensor[N]}``.

    Which slot answers for which instance comes from ``assignments`` (per image ``(pred_idx, gt_idx)``,
    e.g. SOLO's centre cells, where several slots may share one instance) or, when it is ``None``, from
    Hungarian matching on ``focal_weight · focal cost + dice_weight · dice cost`` without gradient.
    A matched slot's target is its instance's class, every other slot/class is 0 ("no object"). The
    focal sum is divided by ``max(1, number of GT instances in the batch)`` as DETR/SOLO do; the dice
    loss is averaged over matched pairs, with each matched mask upsampled bilinearly to its GT size so
    that the gradient reaches every pixel of the image. An image without instances adds only the
    "no object" focal term. With more instances than slots, Hungarian matching leaves the surplus
    instances unmatched (they still count in the normaliser).
    """
    if class_logits.ndim != 3 or mask_logits.ndim != 4:
        raise ValueError(
            "instance_segmentation_loss expects class_logits [B, Q, C] and mask_logits [B, Q, h, w], got "
            f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}"
        )
    batch, num_slots, num_classes = class_logits.shape
    if mask_logits.shape[:2] != (batch, num_slots):
        raise ValueError(
            f"class_logits {tuple(class_logits.shape)} and mask_logits {tuple(mask_logits.shape)} must agree on "
            "[B, Q] (one mask per instance slot)"
        )
    if len(targets) != batch:
        raise ValueError(f"instance_segmentation_loss: {len(targets)} targets for a batch of {batch} images")
    if assignments is not None and len(assignments) != batch:
        raise ValueError(f"instance_segmentation_loss: {len(assignments)} assignments for a batch of {batch} images")
    if not 0.0 <= focal_alpha <= 1.0 or focal_gamma < 0:
        raise ValueError(f"focal_alpha must lie in [0, 1] and focal_gamma be >= 0, got {focal_alpha}, {focal_gamma}")

    class_targets = torch.zeros(batch, num_slots, num_classes, device=class_logits.device)
    dice_terms = []
    num_instances_total = 0
    for image, target in enumerate(targets):
        gt_masks = _gt_masks(target, image).to(mask_logits.device)
        num_instances = gt_masks.shape[0]
        gt_labels = _gt_labels(target, image, num_instances, num_classes).to(class_logits.device)
        num_instances_total += num_instances
        if num_instances == 0:
            continue
        if assignments is None:
            pred_idx, gt_idx = _hungarian_match(
                class_logits[image], mask_logits[image], gt_masks, gt_labels,
                focal_alpha, focal_gamma, focal_weight, dice_weight,
            )
        else:
            pred_idx, gt_idx = _checked_assignment(
                assignments[image], image, num_slots, num_instances, class_logits.device
            )
        if pred_idx.numel() == 0:
            continue
        class_targets[image, pred_idx, gt_labels[gt_idx]] = 1.0
        matched = F.interpolate(
            mask_logits[image, pred_idx].float()[None], size=gt_masks.shape[-2:], mode="bilinear", align_corners=False
        )[0]
        dice_terms.append(_dice_loss(matched.sigmoid(), gt_masks[gt_idx]))

    focal = _focal_loss_elements(class_logits.float(), class_targets, focal_alpha, focal_gamma).sum()
    loss = focal_weight * focal / max(1, num_instances_total)
    if dice_terms:
        loss = loss + dice_weight * torch.cat(dice_terms).mean()
    return loss


def semantic_segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy of ``logits`` ``[B, C, h, w]`` against a label map ``target`` ``[B, H, W]``.

    The logits are upsampled bilinearly to the label map's size first, as DeepLabV3 does, so the
    gradient reaches every image pixel. Pixels labelled ``ignore_index`` do not count; a batch in which
    every pixel is ignored gives 0 rather than torch's NaN, so one unlabelled crop cannot poison a run.
    """
    if logits.ndim != 4:
        raise ValueError(f"semantic_segmentation_loss expects logits [B, C, h, w], got {tuple(logits.shape)}")
    if target.ndim != 3 or target.dtype != torch.int64:
        raise ValueError(
            "semantic_segmentation_loss expects a LongTensor label map [B, H, W], "
            f"got {target.dtype} {tuple(target.shape)}"
        )
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"semantic_segmentation_loss: {logits.shape[0]} logit maps but {target.shape[0]} label maps")
    num_classes = logits.shape[1]
    target = target.to(logits.device)
    valid = target != ignore_index
    if bool(((target < 0) | (target >= num_classes))[valid].any()):
        raise ValueError(
            f"semantic_segmentation_loss: labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}"
        )
    logits = logits.float()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    summed = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return summed / valid.sum().clamp_min(1)
