"""Tiny conv nets implementing each perception Protocol, run through the PeFL helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from unifl.core.feedback.losses import instance_segmentation_loss, semantic_segmentation_loss, style_loss
from unifl.core.feedback.perception import (
    AssigningInstanceSegmenter,
    FeatureNet,
    InstancePrediction,
    InstanceSegmenter,
    SemanticSegmenter,
    freeze,
    pefl_layout_loss,
    pefl_structure_loss,
    pefl_style_loss,
)

IMAGE = 16
GRID = 4  # SOLO-style S×S slots
CLASSES = 3


class Normalised(nn.Module):
    """Normalises [0, 1] images in torch, as the contract asks, so gradients reach the pixels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def normalise(self, images):
        return (images - self.mean) / self.std


class TinyFeatureNet(Normalised):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, images):
        first = torch.relu(self.conv1(self.normalise(images)))
        return [first, torch.relu(self.conv2(first))]


class TinyInstanceSegmenter(Normalised):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.classes = nn.Conv2d(8, CLASSES, 1)
        self.masks = nn.Conv2d(8, GRID * GRID, 1)

    def forward(self, images):
        features = torch.relu(self.body(self.normalise(images)))
        grid = nn.functional.adaptive_avg_pool2d(self.classes(features), GRID)  # [B, C, S, S]
        class_logits = grid.flatten(2).transpose(1, 2)  # [B, S·S, C]
        mask_logits = self.masks(nn.functional.avg_pool2d(features, 2))  # [B, S·S, H/2, W/2]
        return InstancePrediction(class_logits, mask_logits)


class TinySoloSegmenter(TinyInstanceSegmenter):
    """Assigns each instance to the grid cell holding its mask's centre of mass, as SOLO does."""

    def __init__(self):
        super().__init__()
        self.assign_calls = 0

    def assign(self, targets):
        self.assign_calls += 1
        assignments = []
        for target in targets:
            cells = []
            for mask in target["masks"].float():
                rows, cols = mask.nonzero(as_tuple=True)
                row = int(rows.float().mean() * GRID / mask.shape[0])
                col = int(cols.float().mean() * GRID / mask.shape[1])
                cells.append(row * GRID + col)
            assignments.append((torch.tensor(cells, dtype=torch.int64), torch.arange(len(cells))))
        return assignments


class TinySemanticSegmenter(Normalised):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, CLASSES, 3, stride=2, padding=1)

    def forward(self, images):
        return self.conv(self.normalise(images))


def box_mask(top, left, height, width):
    mask = torch.zeros(IMAGE, IMAGE, dtype=torch.bool)
    mask[top : top + height, left : left + width] = True
    return mask


def instance_targets():
    return [
        {"masks": torch.stack([box_mask(0, 0, 6, 6), box_mask(8, 9, 7, 6)]), "labels": torch.tensor([0, 2])},
        {"masks": box_mask(3, 4, 10, 8)[None], "labels": torch.tensor([1])},
    ]


def predicted_images():
    torch.manual_seed(0)
    return torch.rand(2, 3, IMAGE, IMAGE, requires_grad=True)


def assert_gradient_reaches_images_only(loss, images, model):
    loss.backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert not parameter.requires_grad and parameter.grad is None, name


def test_protocols_recognise_callables_and_the_assigning_segmenter():
    assert isinstance(TinyFeatureNet(), FeatureNet)
    assert isinstance(TinyInstanceSegmenter(), InstanceSegmenter)
    assert isinstance(TinySemanticSegmenter(), SemanticSegmenter)
    assert isinstance(TinySoloSegmenter(), AssigningInstanceSegmenter)
    assert not isinstance(TinyInstanceSegmenter(), AssigningInstanceSegmenter)
    for protocol in (FeatureNet, InstanceSegmenter, SemanticSegmenter):
        assert not isinstance(object(), protocol)


def test_freeze_turns_off_gradients_and_training_mode():
    net = freeze(TinyFeatureNet().train())
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_style_helper_grads_reach_prediction_not_model_or_real_images():
    net = freeze(TinyFeatureNet())
    images = predicted_images()
    real = torch.rand(2, 3, IMAGE, IMAGE, requires_grad=True)
    loss = pefl_style_loss(net, images, real, layer_weights=[1.0, 0.5])
    with torch.no_grad():
        expected = style_loss(net(images), net(real), [1.0, 0.5])
    torch.testing.assert_close(loss.detach(), expected)
    assert loss.item() > 0
    assert_gradient_reaches_images_only(loss, images, net)
    assert real.grad is None
    assert pefl_style_loss(net, real.detach(), real.detach()).item() == 0.0


def test_structure_helper_uses_hungarian_matching_without_assign():
    segmenter = freeze(TinyInstanceSegmenter())
    images = predicted_images()
    loss = pefl_structure_loss(segmenter, images, instance_targets())
    with torch.no_grad():
        class_logits, mask_logits = segmenter(images)
        expected = instance_segmentation_loss(class_logits, mask_logits, instance_targets())
    torch.testing.assert_close(loss.detach(), expected)
    assert_gradient_reaches_images_only(loss, images, segmenter)


def test_structure_helper_uses_the_segmenters_own_assignment():
    segmenter = freeze(TinySoloSegmenter())
    images = predicted_images()
    loss = pefl_structure_loss(segmenter, images, instance_targets(), dice_weight=2.0)
    assert segmenter.assign_calls == 1
    # centre cells: (2.5, 2.5) → cell 0, (11, 11.5) → cell 10; (7.5, 7.5) → cell 5
    assignments = [(torch.tensor([0, 10]), torch.tensor([0, 1])), (torch.tensor([5]), torch.tensor([0]))]
    with torch.no_grad():
        class_logits, mask_logits = segmenter(images)
        expected = instance_segmentation_loss(
            class_logits, mask_logits, instance_targets(), dice_weight=2.0, assignments=assignments
        )
    torch.testing.assert_close(loss.detach(), expected)
    assert_gradient_reaches_images_only(loss, images, segmenter)


def test_layout_helper_grads_reach_prediction_only():
    segmenter = freeze(TinySemanticSegmenter())
    images = predicted_images()
    labels = torch.randint(0, CLASSES, (2, IMAGE, IMAGE))
    labels[1, :4] = 255
    loss = pefl_layout_loss(segmenter, images, labels)
    with torch.no_grad():
        expected = semantic_segmentation_loss(segmenter(images), labels)
    torch.testing.assert_close(loss.detach(), expected)
    assert_gradient_reaches_images_only(loss, images, segmenter)


def test_helpers_refuse_models_that_are_not_frozen():
    images = predicted_images()
    with pytest.raises(ValueError, match="freeze"):
        pefl_style_loss(TinyFeatureNet().eval(), images, images.detach())
    trainable_mode = freeze(TinySemanticSegmenter()).train()
    with pytest.raises(ValueError, match="freeze"):
        pefl_layout_loss(trainable_mode, images, torch.zeros(2, IMAGE, IMAGE, dtype=torch.int64))


def test_helpers_accept_plain_callables_and_check_their_outputs():
    features = freeze(TinyFeatureNet())
    images = predicted_images()
    labels = torch.zeros(2, IMAGE, IMAGE, dtype=torch.int64)
    as_function = lambda x: features(x)  # noqa: E731 - a non-Module callable satisfies FeatureNet too
    assert pefl_style_loss(as_function, images, images.detach()).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TypeError, match="feature maps"):
        pefl_style_loss(lambda x: x, images, images.detach())
    with pytest.raises(TypeError, match="InstancePrediction"):
        pefl_structure_loss(lambda x: x, images, instance_targets())
    with pytest.raises(TypeError, match=r"logits \[B, C, h, w\]"):
        pefl_layout_loss(lambda x: [x], images, labels)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        pefl_layout_loss(freeze(TinySemanticSegmenter()), images[:, :1], labels)
