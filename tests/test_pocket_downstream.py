"""UniFL LoRAs beside ControlNet and AnimateDiff on the pocket model, in plain diffusers: the shipped pocket
ControlNet and motion adapter load offline, match the pocket LDM they were trained beside and do their jobs,
a kohya LoRA loads into both pipelines with every layer applied at its true scale, and the builds run end to end."""

from __future__ import annotations

import copy
import re

import pytest
import safetensors.torch
import torch
from unifl.core.lora.kohya import SamplerContract, kohya_name, save_kohya_lora
from unifl.core.lora.peft import LoRASettings, add_lora
from unifl.pocket.demo import downstream
from unifl.pocket.models import controlnet, motion
from unifl.pocket.models.addons import frozen_pocket_pipeline, trailing_ddim, unet_fingerprint
from unifl.pocket.models.ldm import HOLDOUT_SEED, pocket_model_dir

PROMPT = "a large red striped circle left of a small blue square on a dark grey tiled background lit from the west"


@pytest.fixture(scope="module")
def pipe():
    return frozen_pocket_pipeline()


@pytest.fixture(scope="module")
def shipped_controlnet():
    return controlnet.load_pocket_controlnet()


@pytest.fixture(scope="module")
def shipped_adapter():
    return motion.load_pocket_motion_adapter()


@pytest.fixture(scope="module", params=["attention+ff", "all"])
def lora_file(request, pipe, tmp_path_factory):
    """A kohya LoRA of the pocket UNet with random non-zero weights, exported by core/export.py (alpha ≠ rank on purpose)."""
    settings = LoRASettings(rank=4, alpha=2.0, targets=request.param)
    unet = copy.deepcopy(pipe.unet)
    add_lora(unet, settings)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    path = tmp_path_factory.mktemp("lora") / f"pocket-{request.param.replace('+', '-')}.safetensors"
    return save_kohya_lora(path, unet, settings, architecture="pocket", sampler=SamplerContract())


@pytest.mark.parametrize("folder, build_module", [(controlnet.pocket_controlnet_dir(), "controlnet"), (motion.pocket_motion_adapter_dir(), "motion")])
def test_shipped_folders_load_offline_and_were_trained_beside_the_shipped_ldm(folder, build_module, monkeypatch):
    from diffusers import ControlNetModel, MotionAdapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is not built; run `python -m unifl.pocket.{build_module} --out {folder}`")
    model = (ControlNetModel if build_module == "controlnet" else MotionAdapter).from_pretrained(str(folder))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    report = (folder / "BUILD.md").read_text()
    assert "--quick" not in report and (folder / "samples.png").is_file()
    fingerprint = re.search(r"UNet fingerprint `([0-9a-f]+)`", report).group(1)
    assert fingerprint == unet_fingerprint(pocket_model_dir()), f"{folder} was trained beside another pocket LDM; rebuild it"


def test_shipped_sizes_stay_small():
    files = [*controlnet.pocket_controlnet_dir().glob("*.safetensors"), *motion.pocket_motion_adapter_dir().glob("*.safetensors")]
    assert len(files) == 2 and sum(f.stat().st_size for f in files) < 15e6


def test_motion_adapter_becomes_the_motion_modules_of_a_unet_motion_model(pipe, shipped_adapter):
    from diffusers import UNetMotionModel

    animated = motion.animatediff_pipeline(pipe, shipped_adapter)
    assert isinstance(animated.unet, UNetMotionModel)
    ours, theirs = shipped_adapter.state_dict(), animated.unet.state_dict()
    for key, value in ours.items():  # down_blocks.i.motion_modules… in both
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)
    spatial = {k: v for k, v in pipe.unet.state_dict().items() if "attentions" in k}
    assert spatial and all(torch.equal(theirs[k], v) for k, v in spatial.items())


def test_kohya_lora_loads_into_both_pipelines_with_every_layer_at_its_true_scale(pipe, shipped_controlnet, shipped_adapter, lora_file):
    scheduler = trailing_ddim(pipe)
    file = safetensors.torch.load_file(str(lora_file))
    expected = {k.removesuffix(".lora_down.weight") for k in file if k.endswith(".lora_down.weight")}
    # A fresh pocket pipeline for each: LoRAs load into the UNet, which the shared fixture must keep LoRA-free.
    for target in (controlnet.controlnet_pipeline(frozen_pocket_pipeline(), shipped_controlnet, scheduler),
                   motion.animatediff_pipeline(frozen_pocket_pipeline(), shipped_adapter, scheduler)):
        before = _sample(target)
        downstream.load_lora_checked(target, lora_file)
        layers = {kohya_name(name): layer for name, layer in target.unet.named_modules() if getattr(layer, "lora_A", None)}
        assert set(layers) == expected
        for name, layer in layers.items():
            (adapter,) = layer.lora_A.keys()
            applied = layer.scaling[adapter] * layer.lora_B[adapter].weight.flatten(1) @ layer.lora_A[adapter].weight.flatten(1)
            written = file[f"{name}.alpha"] / file[f"{name}.lora_down.weight"].shape[0] * file[f"{name}.lora_up.weight"].float().flatten(1) @ file[f"{name}.lora_down.weight"].float().flatten(1)
            torch.testing.assert_close(applied, written, rtol=1e-4, atol=1e-6)
        after = _sample(target)
        assert after.shape == before.shape and (after - before).abs().mean() > 1e-3


def _sample(target) -> torch.Tensor:
    """A 4-step, CFG-1 sample: ``[1, 3, 64, 64]`` from the ControlNet pipeline, ``[1, 8, 3, 64, 64]`` frames from AnimateDiff."""
    from diffusers import AnimateDiffPipeline

    generator = torch.Generator().manual_seed(0)
    if isinstance(target, AnimateDiffPipeline):
        frames = target(prompt=PROMPT, num_frames=motion.FRAMES, num_inference_steps=4, guidance_scale=1.0, generator=generator, output_type="pt").frames
        assert frames.shape == (1, motion.FRAMES, 3, 64, 64)
        return frames
    _, masks, _ = controlnet.render_scenes(1, HOLDOUT_SEED, "scene")
    images = target(prompt=PROMPT, image=controlnet.control_images(masks), num_inference_steps=4, guidance_scale=1.0, generator=generator, output_type="pt").images
    assert images.shape == (1, 3, 64, 64)
    return images


def test_controlnet_makes_images_follow_their_control(pipe, shipped_controlnet):
    _, masks, captions = controlnet.render_scenes(8, HOLDOUT_SEED, "held-out scenes")
    seeds = list(range(8))
    scheduler = trailing_ddim(pipe)
    without = controlnet.control_iou(controlnet.generate_images(controlnet.plain_pipeline(pipe, scheduler), captions, seeds, steps=4, cfg=1.0), masks)
    with_ = controlnet.control_iou(controlnet.generate_images(controlnet.controlnet_pipeline(pipe, shipped_controlnet, scheduler), captions, seeds, steps=4, cfg=1.0,
                                                       controls=controlnet.control_images(masks)), masks)
    assert with_["foreground_iou"] > without["foreground_iou"] + 0.2
    assert with_["class_iou"] > without["class_iou"]


def test_motion_adapter_makes_clips_steadier(pipe, shipped_adapter):
    _, _, captions = controlnet.render_scenes(4, HOLDOUT_SEED, "held-out captions")
    scheduler = trailing_ddim(pipe)
    seeds = list(range(len(captions)))
    clips = {name: motion.generate_clips(motion.animatediff_pipeline(pipe, adapter, scheduler), captions, seeds, steps=4, cfg=1.0)
             for name, adapter in (("without", motion.new_motion_adapter()), ("with", shipped_adapter))}
    # The objects stay where they were from frame to frame (the held-out structure evaluator's masks; real clips
    # 0.82, independent frames ~0.1), and the frames change less. The pixel change also counts the grain and
    # patterns the decoder draws afresh in every frame, so it falls by less than the objects' IoU rises.
    iou = {name: motion.consecutive_object_iou(frames) for name, frames in clips.items()}
    change = {name: motion.consecutive_difference(frames) for name, frames in clips.items()}
    assert iou["with"] > iou["without"] + 0.25, iou
    assert change["with"] < 0.75 * change["without"], change


@pytest.mark.slow
def test_downstream_grids_with_a_trained_unifl_lora(tmp_path):
    """A LoRA from a real (2-step) UniFL stage-2 run on the pocket preset, then the demo's function end to end."""
    from PIL import Image
    from unifl.core.config import load_config
    from unifl.core.training.trainer import UniFLTrainer

    config = load_config(None, [f"logging.output_dir={tmp_path / 'run'}", "logging.output_name=unifl-pocket", "logging.tensorboard=false", "stage=2",
                                "optim.max_steps=2", "data.source_images=16", "logging.checkpoint_every=100"], preset="pocket")
    lora = UniFLTrainer(config).train(overwrite=True).lora_path
    result = downstream.downstream_grids(lora, tmp_path / "grids", steps=4, seed=0)
    assert set(result.grids) == {"controlnet", "animatediff"}
    assert Image.open(result.grids["controlnet"]).size == (4 * 128, 3 * 128)  # 4 prompts × (control, without, with), 128 px tiles
    assert Image.open(result.grids["animatediff"]).size == (motion.FRAMES * 128, 4 * 128)  # 2 clips × (without, with)
    assert all(0 <= v <= 1 for v in result.metrics.values()) and len(result.metrics) == 8
    assert result.metrics["control_foreground_iou_with_lora"] > 0.2
    assert result.seconds < 60


@pytest.mark.slow
@pytest.mark.parametrize("build", [controlnet.main, motion.main])
def test_quick_build_runs_end_to_end(build, tmp_path):
    out = build(["--out", str(tmp_path / "addon"), "--quick"])
    assert {"config.json", "diffusion_pytorch_model.safetensors", "BUILD.md", "samples.png"} <= {p.name for p in out.iterdir()}
    assert "--quick" in (out / "BUILD.md").read_text()
    assert not list(tmp_path.glob(".addon*"))  # no temporary or replaced folder left behind


def test_a_motion_adapter_fits_a_rebuilt_base_of_other_widths():
    """The adapter is made for the UNet it is trained beside, not for v1's widths: a rebuilt base may differ."""
    from diffusers import UNet2DConditionModel, UNetMotionModel

    from unifl.pocket.models import ldm

    unet = UNet2DConditionModel(**ldm.unet_config((64, 128), latent_factor=2))
    adapter = motion.new_motion_adapter(unet_config=unet.config)
    assert tuple(adapter.config.block_out_channels) == (64, 128)
    model = UNetMotionModel.from_unet2d(unet, adapter)
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in unet.parameters())
