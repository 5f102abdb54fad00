"""Values and gradients of UniFL's feedback losses against hand computations and naive references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from unifl.core.feedback.losses import (
    base_model_kl,
    decoupled_aesthetic_loss,
    denoising_loss,
    discriminator_loss,
    generator_loss,
    gram_matrix,
    instance_segmentation_loss,
    semantic_segmentation_loss,
    style_loss,
)

# -- references written the slow, obvious way ------------------------------------------------------


def reference_focal_sum(class_logits, class_targets, alpha=0.25, gamma=2.0):
    total = 0.0
    for x, t in zip(class_logits.flatten().tolist(), class_targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        if t == 1:
            total += -alpha * (1 - p) ** gamma * math.log(p)
        else:
            total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total


def reference_dice(prob_mask, gt_mask):
    p, g = prob_mask.flatten().tolist(), gt_mask.flatten().tolist()
    intersection = sum(a * b for a, b in zip(p, g))
    return 1 - 2 * intersection / (sum(a * a for a in p) + 0.001 + sum(b * b for b in g) + 0.001)


def reference_instance_loss(class_logits, mask_logits, targets, assignments, alpha=0.25, gamma=2.0, wf=1.0, wd=3.0):
    class_targets = torch.zeros_like(class_logits)
    dice_terms = []
    num_gt = 0
    for image, (target, (pred_idx, gt_idx)) in enumerate(zip(targets, assignments)):
        num_gt += len(target["labels"])
        for q, g in zip(pred_idx.tolist(), gt_idx.tolist()):
            class_targets[image, q, target["labels"][g]] = 1
            gt = target["masks"][g].float()
            up = F.interpolate(mask_logits[image, q][None, None], size=gt.shape, mode="bilinear", align_corners=False)
            dice_terms.append(reference_dice(up[0, 0].sigmoid(), gt))
    focal = reference_focal_sum(class_logits, class_targets, alpha, gamma) / max(1, num_gt)
    dice = sum(dice_terms) / len(dice_terms) if dice_terms else 0.0
    return wf * focal + wd * dice


def box_mask(size, top, left, height, width):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top : top + height, left : left + width] = True
    return mask


# -- style ---------------------------------------------------------------------------------------


def test_gram_matrix_matches_hand_computation():
    # channel 0 = [1, 2, 3, 4], channel 1 = [0, 1, 0, -1]; C·H·W = 2·2·2 = 8
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, -1.0]]]])
    expected = torch.tensor([[[30.0, -2.0], [-2.0, 2.0]]]) / 8
    torch.testing.assert_close(gram_matrix(features), expected)


def test_gram_matrix_scale_does_not_depend_on_resolution():
    features = torch.randn(2, 3, 4, 4)
    tiled = features.repeat(1, 1, 2, 2)  # same statistics, four times the pixels
    torch.testing.assert_close(gram_matrix(tiled), gram_matrix(features))


def test_gram_matrix_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        gram_matrix(torch.zeros(2, 3, 4))


def test_style_loss_zero_for_identical_features_and_hand_value_otherwise():
    torch.manual_seed(0)
    pred = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    target = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 2, 2)]
    assert style_loss(pred, [p.clone() for p in pred]).item() == 0.0

    def gram(f):
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w)
        return torch.einsum("bik,bjk->bij", flat, flat) / (c * h * w)

    weights = [0.5, 2.0]
    expected = sum(w * ((gram(p) - gram(t)) ** 2).mean() for w, p, t in zip(weights, pred, target))
    value = style_loss(pred, target, weights)
    assert value.item() > 0
    torch.testing.assert_close(value, expected)


def test_style_loss_single_target_is_broadcast_over_the_batch():
    pred = [torch.randn(3, 2, 4, 4)]
    target = [torch.randn(1, 2, 4, 4)]
    torch.testing.assert_close(style_loss(pred, target), style_loss(pred, [target[0].expand(3, -1, -1, -1)]))


def test_style_loss_validates_its_inputs():
    with pytest.raises(ValueError, match="same layers"):
        style_loss([torch.zeros(1, 2, 2, 2)], [])
    with pytest.raises(ValueError, match="layer_weights"):
        style_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 2, 2, 2)], [1.0, 2.0])
    with pytest.raises(ValueError, match="channels"):
        style_loss([torch.zeros(1, 2, 2, 2)], [torch.zeros(1, 3, 2, 2)])


# -- structure (instance segmentation) ---------------------------------------------------------------


def matched_setup():
    """4 slots, 3 classes, 2 GT instances on 8×8; slot 2 is a perfect GT 0, slot 0 a perfect GT 1."""
    gt_masks = torch.stack([box_mask(8, 1, 1, 3, 3), box_mask(8, 4, 3, 4, 5)])
    targets = [{"masks": gt_masks, "labels": torch.tensor([1, 2])}]
    class_logits = torch.full((1, 4, 3), -4.0)
    class_logits[0, 2, 1] = 4.0
    class_logits[0, 0, 2] = 4.0
    mask_logits = torch.full((1, 4, 8, 8), -6.0)
    mask_logits[0, 2][gt_masks[0]] = 6.0
    mask_logits[0, 0][gt_masks[1]] = 6.0
    mask_logits[0, 1][:, :4] = 6.0  # plausible-looking decoys
    mask_logits[0, 3][4:] = 6.0
    return class_logits, mask_logits, targets


def test_instance_loss_matches_reference_with_given_assignment():
    torch.manual_seed(0)
    class_logits = torch.randn(2, 5, 3)
    mask_logits = torch.randn(2, 5, 4, 4)
    targets = [
        {"masks": torch.stack([box_mask(8, 0, 0, 4, 4), box_mask(8, 2, 3, 5, 4)]), "labels": torch.tensor([0, 2])},
        {"masks": box_mask(8, 1, 1, 6, 6)[None].float(), "labels": torch.tensor([1])},
    ]
    # SOLO-style: several slots may answer for one instance
    assignments = [(torch.tensor([3, 1]), torch.tensor([0, 1])), (torch.tensor([0, 4]), torch.tensor([0, 0]))]
    value = instance_segmentation_loss(class_logits, mask_logits, targets, assignments=assignments)
    expected = reference_instance_loss(class_logits, mask_logits, targets, assignments)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_instance_loss_weights_and_focal_parameters_are_used():
    torch.manual_seed(1)
    class_logits, mask_logits = torch.randn(1, 3, 2), torch.randn(1, 3, 8, 8)
    targets = [{"masks": box_mask(8, 2, 2, 4, 4)[None], "labels": torch.tensor([1])}]
    assignments = [(torch.tensor([1]), torch.tensor([0]))]
    kwargs = dict(focal_alpha=0.6, focal_gamma=1.0, focal_weight=2.0, dice_weight=0.5)
    value = instance_segmentation_loss(class_logits, mask_logits, targets, assignments=assignments, **kwargs)
    expected = reference_instance_loss(class_logits, mask_logits, targets, assignments, 0.6, 1.0, 2.0, 0.5)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_hungarian_matching_picks_the_perfect_slots():
    class_logits, mask_logits, targets = matched_setup()
    value = instance_segmentation_loss(class_logits, mask_logits, targets)
    right = reference_instance_loss(class_logits, mask_logits, targets, [(torch.tensor([2, 0]), torch.tensor([0, 1]))])
    wrong = reference_instance_loss(class_logits, mask_logits, targets, [(torch.tensor([1, 3]), torch.tensor([0, 1]))])
    assert value.item() == pytest.approx(right, abs=1e-6)  # near-perfect: float32 rounding is all that's left
    assert wrong > 1.0


def test_hungarian_matching_uses_masks_when_classes_tie():
    class_logits, mask_logits, targets = matched_setup()
    class_logits = torch.zeros_like(class_logits)  # only the masks can tell the slots apart
    value = instance_segmentation_loss(class_logits, mask_logits, targets)
    right = reference_instance_loss(class_logits, mask_logits, targets, [(torch.tensor([2, 0]), torch.tensor([0, 1]))])
    swapped = reference_instance_loss(class_logits, mask_logits, targets, [(torch.tensor([0, 2]), torch.arange(2))])
    assert value.item() == pytest.approx(right, rel=1e-5)
    assert swapped > right + 1.0


def test_instance_loss_gradients_reach_both_heads_at_full_resolution():
    torch.manual_seed(2)
    class_logits = torch.randn(2, 4, 3, requires_grad=True)
    mask_logits = torch.randn(2, 4, 4, 4, requires_grad=True)  # upsampled ×4 to the 16×16 GT
    targets = [
        {"masks": box_mask(16, 3, 3, 8, 6)[None], "labels": torch.tensor([2])},
        {"masks": torch.zeros(0, 16, 16), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    instance_segmentation_loss(class_logits, mask_logits, targets).backward()
    for grad in (class_logits.grad, mask_logits.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # the empty image contributes only through "no object" classification
    assert mask_logits.grad[1].abs().sum() == 0
    assert class_logits.grad[1].abs().sum() > 0


def test_image_without_instances_gives_only_the_no_object_focal_term():
    torch.manual_seed(3)
    class_logits, mask_logits = torch.randn(1, 6, 4), torch.randn(1, 6, 4, 4)
    targets = [{"masks": [], "labels": torch.zeros(0, dtype=torch.int64)}]
    value = instance_segmentation_loss(class_logits, mask_logits, targets)
    assert value.item() == pytest.approx(reference_focal_sum(class_logits, torch.zeros_like(class_logits)), rel=1e-5)


def test_instance_loss_decreases_towards_a_perfect_prediction():
    class_logits, mask_logits, targets = matched_setup()
    perfect_class, perfect_mask = class_logits.sign(), mask_logits.sign()
    values = [
        instance_segmentation_loss(perfect_class * s, perfect_mask * s, targets).item() for s in (0.25, 1.0, 3.0, 10.0)
    ]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 1e-2


def test_instance_loss_gradient_step_lowers_the_loss():
    torch.manual_seed(4)
    class_logits = torch.randn(1, 4, 3, requires_grad=True)
    mask_logits = torch.randn(1, 4, 4, 4, requires_grad=True)
    masks = torch.stack([box_mask(8, 0, 0, 4, 8), box_mask(8, 4, 0, 4, 4)])
    targets = [{"masks": masks, "labels": torch.tensor([0, 1])}]
    before = instance_segmentation_loss(class_logits, mask_logits, targets)
    before.backward()
    with torch.no_grad():
        class_logits -= 0.5 * class_logits.grad
        mask_logits -= 0.5 * mask_logits.grad
    assert instance_segmentation_loss(class_logits, mask_logits, targets).item() < before.item()


def test_instance_loss_validates_targets():
    class_logits, mask_logits = torch.zeros(1, 4, 3), torch.zeros(1, 4, 4, 4)
    one_mask = box_mask(8, 0, 0, 2, 2)[None]

    def loss(targets, **kwargs):
        return instance_segmentation_loss(class_logits, mask_logits, targets, **kwargs)

    with pytest.raises(ValueError, match="share one size"):
        loss([{"masks": [box_mask(8, 0, 0, 2, 2), box_mask(6, 0, 0, 2, 2)], "labels": torch.tensor([0, 1])}])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        loss([{"masks": one_mask, "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="one label per mask"):
        loss([{"masks": one_mask, "labels": torch.tensor([0, 1])}])
    with pytest.raises(ValueError, match="LongTensor"):
        loss([{"masks": one_mask, "labels": torch.tensor([0.0])}])
    with pytest.raises(ValueError, match="'masks' and 'labels'"):
        loss([{"masks": one_mask}])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        loss([{"masks": [], "labels": torch.zeros(0, dtype=torch.int64)}] * 2)
    with pytest.raises(ValueError, match="pred_idx must lie"):
        loss([{"masks": one_mask, "labels": torch.tensor([0])}], assignments=[(torch.tensor([4]), torch.tensor([0]))])
    with pytest.raises(ValueError, match=r"\[B, Q\]"):
        instance_segmentation_loss(class_logits, torch.zeros(1, 5, 4, 4), [])


# -- layout (semantic segmentation) ----------------------------------------------------------------


def test_semantic_loss_equals_torch_cross_entropy_at_same_resolution():
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, 0, :3] = 255
    expected = F.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(semantic_segmentation_loss(logits, target), expected)


def test_semantic_loss_upsamples_logits_bilinearly_and_passes_gradient():
    torch.manual_seed(6)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 8, 8))
    value = semantic_segmentation_loss(logits, target)
    up = F.interpolate(logits.detach(), size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(value.detach(), F.cross_entropy(up, target))
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_semantic_loss_all_ignored_is_zero_and_bad_labels_raise():
    logits = torch.randn(1, 3, 4, 4)
    assert semantic_segmentation_loss(logits, torch.full((1, 4, 4), 255)).item() == 0.0
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        semantic_segmentation_loss(logits, torch.full((1, 4, 4), 3))
    with pytest.raises(ValueError, match="LongTensor"):
        semantic_segmentation_loss(logits, torch.zeros(1, 4, 4))


# -- decoupled aesthetic feedback ----------------------------------------------------------------


def test_aesthetic_hinge_is_zero_above_threshold_and_linear_below():
    above = {"color": torch.tensor([2.0, 3.5])}
    total, parts = decoupled_aesthetic_loss(above, {"color": 1.5})
    assert total.item() == 0.0 and parts["color"].item() == 0.0
    for gap in (0.5, 1.0, 2.0):
        total, _ = decoupled_aesthetic_loss({"color": torch.tensor([1.5 - gap, 1.5 - gap])}, {"color": 1.5})
        assert total.item() == pytest.approx(gap)


def test_aesthetic_loss_weights_aspects_and_reports_unweighted_hinges():
    rewards = {"color": torch.tensor([0.0, 2.0]), "detail": torch.tensor([1.0, -1.0], requires_grad=True)}
    thresholds = {"color": 1.0, "detail": 0.5, "lighting": 0.3}  # extra aspects are ignored
    total, parts = decoupled_aesthetic_loss(rewards, thresholds, {"detail": 4.0})
    # color: mean(relu([1, -1])) = 0.5, weight 1; detail: mean(relu([-0.5, 1.5])) = 0.75, weight 4
    assert parts["color"].item() == pytest.approx(0.5)
    assert parts["detail"].item() == pytest.approx(0.75)
    assert total.item() == pytest.approx(0.5 + 4 * 0.75)
    total.backward()
    torch.testing.assert_close(rewards["detail"].grad, torch.tensor([0.0, -2.0]))  # 4 · (−1/2) below threshold only
    assert not parts["detail"].requires_grad


def test_aesthetic_loss_names_an_aspect_without_threshold():
    with pytest.raises(ValueError, match="'layout'"):
        decoupled_aesthetic_loss({"layout": torch.zeros(2)}, {"color": 1.0})


# -- adversarial feedback --------------------------------------------------------------------------


def test_generator_loss_is_negative_mean_reward():
    scores = torch.tensor([1.0, -3.0, 0.5], requires_grad=True)
    value = generator_loss(scores)
    assert value.item() == pytest.approx(0.5)
    value.backward()
    torch.testing.assert_close(scores.grad, torch.full((3,), -1 / 3))


def test_discriminator_loss_matches_naive_logistic_form_and_stays_finite():
    real, fake = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([-0.7, 1.5, 0.0])
    naive = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean())
    torch.testing.assert_close(discriminator_loss(real, fake), naive)

    confident = discriminator_loss(torch.tensor([200.0]), torch.tensor([-200.0]))
    wrong = discriminator_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert confident.item() == pytest.approx(0.0, abs=1e-6)
    assert wrong.item() == pytest.approx(400.0)
    real_big = torch.tensor([-200.0], requires_grad=True)
    discriminator_loss(real_big, torch.tensor([200.0])).backward()
    assert torch.isfinite(real_big.grad).all()


# -- regularisers ----------------------------------------------------------------------------------


def test_denoising_loss_is_mean_squared_error():
    output, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert denoising_loss(output, target).item() == pytest.approx((4 + 9) / 4)
    with pytest.raises(ValueError, match="one shape"):
        denoising_loss(output, target[0])


def test_base_model_kl_is_mse_and_does_not_train_the_base():
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    base = torch.tensor([0.0, 4.0], requires_grad=True)
    value = base_model_kl(pred, base)
    assert value.item() == pytest.approx((1 + 4) / 2)
    value.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([1.0, -2.0]))
    assert base.grad is None
