"""Structure PeFL on torchvision's Mask R-CNN (random weights, real architecture, loaded from a file).

torchvision is not a dependency (its wheels are built for one torch each): these tests need a Python
where it imports, e.g. `make test-torchvision` (torch 2.14.1 + torchvision 0.29.1). Elsewhere they
skip with that reason, except the ones that need no torchvision (the boxes, and the message a user gets
where torchvision is missing).
"""

from __future__ import annotations

import sys

import pytest
import torch
from unifl.core.feedback.loading import load_perception_model
from unifl.core.feedback.perception import InstanceSegmenterWithLoss, pefl_structure_loss
from unifl.core.feedback.perception.maskrcnn import TorchvisionUnavailable, import_torchvision, instance_boxes

try:
    import_torchvision()
    TORCHVISION = None
except TorchvisionUnavailable:
    TORCHVISION = "torchvision does not import in this Python; `make test-torchvision` runs these tests (torch 2.14.1 + torchvision 0.29.1)"
needs_torchvision = pytest.mark.skipif(TORCHVISION is not None, reason=TORCHVISION or "")

NUM_CLASSES = 5  # a fine-tuned head: 4 classes + background (the COCO file has 91)
SIZE = 96


def test_instance_boxes_are_the_tight_pixel_edge_boxes_of_the_masks():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 6, 9] = True  # one pixel: still a 1×1 box, never a degenerate one
    assert instance_boxes(masks).tolist() == [[3, 2, 7, 5], [9, 6, 10, 7]]


def test_without_torchvision_loading_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # what `import torchvision` meets where it is missing
    (tmp_path / "maskrcnn.pth").write_bytes(b"never read")
    with pytest.raises(TorchvisionUnavailable, match=r"need torchvision.*ComfyUI and A1111/Forge ship it.*another \[\[perception\]\] kind"):
        load_perception_model("maskrcnn-resnet50-fpn", str(tmp_path / "maskrcnn.pth"))


# -- with torchvision ---------------------------------------------------------------------------------


def _random_state(version: str, seed: int) -> dict[str, torch.Tensor]:
    """A state dict shaped like the published file, with random weights and batch-norm statistics."""
    from unifl.core.feedback.perception.maskrcnn import build_detector

    torch.manual_seed(seed)
    state = build_detector(version, NUM_CLASSES).state_dict()
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias")):
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
    return state


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("maskrcnn")
    files = {}
    for version, name in (("v1", "maskrcnn_resnet50_fpn.pth"), ("v2", "maskrcnn_resnet50_fpn_v2.safetensors")):
        state = _random_state(version, seed=1)
        if name.endswith(".pth"):
            torch.save(state, folder / name)
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
        files[version] = (folder / name, state)
    return files


def _scene(seed: int = 0) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Two images with two and one rectangular instances, labels in 1…NUM_CLASSES-1."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, SIZE, SIZE, generator=generator) * 0.2
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    masks[0, 10:50, 12:40] = masks[1, 55:90, 50:85] = masks[2, 20:70, 30:80] = True
    for image, mask, value in ((0, masks[0], 0.9), (0, masks[1], 0.6), (1, masks[2], 0.8)):
        images[image, :, mask] = value
    targets = [{"masks": masks[:2], "labels": torch.tensor([1, 3])}, {"masks": masks[2:], "labels": torch.tensor([4])}]
    return images.requires_grad_(True), targets


def _path(file) -> str:
    return f"weights={file};min_size={SIZE};max_size={SIZE}"


@needs_torchvision
@pytest.mark.parametrize("version, kind", [("v1", "maskrcnn-resnet50-fpn"), ("v2", "maskrcnn-resnet50-fpn-v2")])
def test_loads_the_file_frozen_and_in_fp32(weight_files, version, kind):
    file, state = weight_files[version]
    model = load_perception_model(kind, _path(file), dtype="bf16")
    assert isinstance(model, InstanceSegmenterWithLoss) and model.num_classes == NUM_CLASSES
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}, "box geometry needs fp32, whatever dtype says"
    own = model.detector.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    detections = model(torch.rand(1, 3, SIZE, SIZE))
    assert set(detections[0]) == {"boxes", "labels", "scores", "masks"}


@needs_torchvision
@pytest.mark.parametrize("version, kind", [("v1", "maskrcnn-resnet50-fpn"), ("v2", "maskrcnn-resnet50-fpn-v2")])
def test_structure_loss_is_mask_rcnns_own_training_loss(weight_files, version, kind):
    """The PeFL term equals torchvision's training-mode losses with batch norm frozen, and its gradient reaches the images."""
    from unifl.core.feedback.perception.maskrcnn import build_detector

    file, state = weight_files[version]
    model = load_perception_model(kind, _path(file))
    bn_before = {k: v.clone() for k, v in model.detector.state_dict().items() if "running" in k}

    images, targets = _scene()
    torch.manual_seed(7)  # the RPN and RoI samplers draw from the global generator
    loss = pefl_structure_loss(model, images, targets)
    loss.backward()

    reference = build_detector(version, NUM_CLASSES, SIZE, SIZE)
    reference.load_state_dict(state)
    reference.train()
    for module in reference.modules():  # the usual fine-tuning set-up: batch norm on running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    torch.manual_seed(7)
    boxes = [instance_boxes(t["masks"]) for t in targets]
    expected = reference(list(images.detach()), [{"boxes": b, "labels": t["labels"], "masks": t["masks"].to(torch.uint8)} for b, t in zip(boxes, targets)])
    torch.testing.assert_close(loss.detach(), sum(expected.values()).detach())

    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and not model.detector.rpn.training and not model.detector.roi_heads.training
    for key, value in model.detector.state_dict().items():
        if key in bn_before:
            assert torch.equal(value, bn_before[key]), f"{key} changed: batch norm must stay on its statistics"


@needs_torchvision
def test_a_step_against_the_gradient_lowers_the_loss(weight_files):
    model = load_perception_model("maskrcnn-resnet50-fpn", _path(weight_files["v1"][0]))
    images, targets = _scene(seed=3)

    def loss_at(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(11)  # the same sampled anchors and proposals both times
        return pefl_structure_loss(model, x, targets)

    before = loss_at(images)
    before.backward()
    with torch.no_grad():
        after = loss_at(images - 1e-3 * images.grad / images.grad.abs().max())
    assert after < before


@needs_torchvision
def test_labels_outside_the_models_classes_and_wrong_masks_are_refused(weight_files):
    model = load_perception_model("maskrcnn-resnet50-fpn", _path(weight_files["v1"][0]))
    images, targets = _scene()
    with pytest.raises(ValueError, match=r"labels \[0, 3\] outside 1…4.*COCO category_id"):
        pefl_structure_loss(model, images, [{**targets[0], "labels": torch.tensor([0, 3])}, targets[1]])
    with pytest.raises(ValueError, match=r"masks must be \[N, 96, 96\]"):
        pefl_structure_loss(model, images, [{"masks": targets[0]["masks"][:, :50], "labels": targets[0]["labels"]}, targets[1]])
    with pytest.raises(ValueError, match="min_size must be a whole number"):
        load_perception_model("maskrcnn-resnet50-fpn", f"weights={weight_files['v1'][0]};min_size=big")


@needs_torchvision
def test_a_file_of_another_model_names_the_expected_one(tmp_path, weight_files):
    _, state = weight_files["v2"]
    torch.save(state, tmp_path / "v2.pth")
    with pytest.raises(ValueError, match=r"v2\.pth: does not hold torchvision's maskrcnn_resnet50_fpn state dict \(e\.g\. maskrcnn_resnet50_fpn_coco-bf2d0c1e\.pth\)"):
        load_perception_model("maskrcnn-resnet50-fpn", str(tmp_path / "v2.pth"))
