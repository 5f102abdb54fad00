"""Structure feedback from a real instance segmenter: torchvision's Mask R-CNN, scored by its own training loss.

PeFL's structure term is "the instance segmenter's own task loss on the one-step ``x0``, against the real
image's instances" (paper §4.1, where the segmenter is SOLO). For Mask R-CNN that loss is the one it
was trained with, given the ground-truth boxes, masks and labels: RPN objectness + RPN box regression
+ box classification + box regression + mask BCE, summed with unit weights as torchvision's reference
training does. The boxes are the tight boxes of the GT masks.

* ``maskrcnn-resnet50-fpn``: torchvision's ``maskrcnn_resnet50_fpn`` state dict, e.g. the COCO weights
  ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` (ResNet-50 with frozen batch norm, whose epsilon is 0 in
  those weights, as torchvision sets it for them).
* ``maskrcnn-resnet50-fpn-v2``: ``maskrcnn_resnet50_fpn_v2``'s, e.g. ``maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth``.

``path`` is the ``.pth``/``.safetensors`` file, or ``"weights=FILE;min_size=800;max_size=1333"`` to
change the size torchvision resizes the images to (the short side; default 800 as the COCO weights
were trained, which a 512 px SD1.5 image is upscaled to: ``min_size=512`` saves ~60 % of the
segmenter's activation memory, with less accurate masks for small objects). The number of classes is
read from the file.

Labels are the model's own class ids: for the COCO weights, COCO's ``category_id`` (1–90, with gaps;
0 is the background and is not a label). ``docs/data-format.md`` says how to write them.

The network itself comes from torchvision, imported only when such a model is loaded: ComfyUI and
A1111/Forge ship torchvision; where it does not import, loading says so instead of failing later.
The segmenter stays in fp32 (``keeps_fp32``): its anchors and boxes take the features' dtype, and
bf16 would round box corners at 800 px to 4 px steps.
"""

from __future__ import annotations

import contextlib
from typing import Mapping, Sequence

import torch
from torch import nn

from ...weight_files import load_exactly, parse_parts, read_state_dict, shape_of
from ..registry import register_perception_model

VERSIONS = {
    "v1": ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
    "v2": ("maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
}
DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE = 800, 1333


class TorchvisionUnavailable(ImportError):
    """torchvision does not import in this Python, so the Mask R-CNN kinds cannot be built."""


def import_torchvision():
    """torchvision, or an error saying which hosts have it and how to get a matching build."""
    try:
        import torchvision
        from torchvision.ops import boxes as _ops  # noqa: F401  (the compiled ops: fails when torch and torchvision do not match)
    except (ImportError, RuntimeError, OSError) as err:
        raise TorchvisionUnavailable(
            f"the Mask R-CNN perception models need torchvision, which does not import in this Python ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}). ComfyUI and A1111/Forge ship it; elsewhere "
            f"install the torchvision release built for torch {torch.__version__.split('+')[0]} (pip install torchvision==<its version>, "
            "see the table on pytorch.org), or use another [[perception]] kind for structure."
        ) from None
    return torchvision


def instance_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``(x1, y1, x2, y2)`` boxes of boolean masks ``[N, H, W]``, pixel edges (a one-pixel mask is 1×1)."""
    boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32, device=masks.device)
    for index, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes[index] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return boxes


class MaskRCNNStructure(nn.Module):
    """A frozen torchvision ``MaskRCNN`` as PeFL's structure expert (:class:`~.InstanceSegmenterWithLoss`).

    Called on images it returns torchvision's detections (eval mode); :meth:`training_loss` is what PeFL
    back-propagates.
    """

    keeps_fp32 = True

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def num_classes(self) -> int:
        return int(self.detector.roi_heads.box_predictor.cls_score.out_features)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``[B, 3, H, W]`` images in ``[0, 1]`` → torchvision's detections (boxes, labels, scores, masks) per image."""
        with torch.autocast(images.device.type, enabled=False):
            return self.detector(list(images.float()))

    def training_loss(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """Mask R-CNN's training loss of ``images`` (``[B, 3, H, W]`` in ``[0, 1]``) against their GT instances.

        ``targets[b]`` is ``{"masks": [N, H, W] (bool or 0/1), "labels": LongTensor[N]}`` at the images'
        resolution. Differentiable in ``images``; the weights stay frozen and batch norm in eval mode.
        """
        detector_targets = [self._detector_target(target, images.shape[-2:], index) for index, target in enumerate(targets)]
        with torch.autocast(images.device.type, enabled=False), _loss_mode(self.detector):
            losses = self.detector(list(images.float()), detector_targets)
        return sum(losses.values())

    def _detector_target(self, target: Mapping[str, torch.Tensor], size: torch.Size, index: int) -> dict[str, torch.Tensor]:
        masks, labels = target["masks"].bool(), target["labels"].long()
        if masks.ndim != 3 or tuple(masks.shape[-2:]) != tuple(size) or masks.shape[0] != labels.shape[0]:
            raise ValueError(f"structure target {index}: masks must be [N, {size[0]}, {size[1]}] with one label each, got masks {tuple(masks.shape)} and {labels.shape[0]} labels")
        if labels.numel() and (labels.min() < 1 or labels.max() >= self.num_classes):
            raise ValueError(
                f"structure target {index}: labels {labels.tolist()} outside 1…{self.num_classes - 1}, this Mask R-CNN's classes "
                "(0 is its background). For torchvision's COCO weights the labels are COCO category_id values (docs/data-format.md)."
            )
        visible = masks.flatten(1).any(dim=1)
        masks, labels = masks[visible], labels[visible]
        return {"boxes": instance_boxes(masks), "labels": labels, "masks": masks.to(torch.uint8)}


@contextlib.contextmanager
def _loss_mode(detector: nn.Module):
    """The detector computes its training losses while every layer stays in eval mode.

    torchvision chooses the loss path by the ``training`` flag of four modules (the model, its resize
    transform, the RPN and the RoI heads); setting only theirs, not their children's, keeps batch norm
    (v2) on its running statistics and never updates them.
    """
    switches = [detector, detector.transform, detector.rpn, detector.roi_heads]
    before = [module.training for module in switches]
    try:
        for module in switches:
            module.training = True
        yield
    finally:
        for module, flag in zip(switches, before):
            module.training = flag


def build_detector(version: str, num_classes: int, min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE) -> nn.Module:
    """torchvision's Mask R-CNN ``version`` ("v1" or "v2") with random weights, shaped as its published file."""
    import_torchvision()
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    size = {"min_size": min_size, "max_size": max_size}
    if version == "v2":
        return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **size)
    # v1 as its COCO weights were made: frozen batch norm in the ResNet (the builder uses plain batch norm
    # when it loads no weights itself), with torchvision's epsilon of 0 for those weights.
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5)
    detector = MaskRCNN(backbone, num_classes=num_classes, **size)
    for module in detector.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = 0.0
    return detector


def load_maskrcnn(path: str, version: str) -> MaskRCNNStructure:
    builder, example = VERSIONS[version]
    expected = f"torchvision's {builder} state dict (e.g. {example})"
    parts = parse_parts(path, ("weights", "min_size", "max_size")) or {"weights": path}
    weights = parts.get("weights", "")
    sizes = {}
    for name, default in (("min_size", DEFAULT_MIN_SIZE), ("max_size", DEFAULT_MAX_SIZE)):
        text = parts.get(name, str(default))
        if not text.isdigit() or int(text) < 32:
            raise ValueError(f"{path!r}: {name} must be a whole number of pixels (at least 32), got {text!r}")
        sizes[name] = int(text)
    import_torchvision()  # before reading a 170 MB file that could not be used
    state = read_state_dict(weights, expected)
    if version == "v1":  # frozen batch norm has no counter; a file saved from plain batch norm does
        state = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    num_classes = shape_of(state, "roi_heads.box_predictor.cls_score.weight", weights, expected)[0]
    model = MaskRCNNStructure(build_detector(version, num_classes, **sizes))
    load_exactly(model.detector, state, weights, expected)
    return model.eval()


register_perception_model("maskrcnn-resnet50-fpn")(lambda path: load_maskrcnn(path, "v1"))
register_perception_model("maskrcnn-resnet50-fpn-v2")(lambda path: load_maskrcnn(path, "v2"))
