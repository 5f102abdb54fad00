"""The kohya LoRA file (unifl.core.lora.kohya): loads in diffusers, keeps the true alpha, metadata, safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers.utils import USE_PEFT_BACKEND
from torch import nn
from unifl.core.diffusion import schedule as sched
from unifl.core.diffusion.tiny import build_tiny_pipeline
from unifl.core.lora.kohya import (
    LoRAFileError,
    SamplerContract,
    load_kohya_lora,
    read_lora_metadata,
    save_kohya_lora,
)
from unifl.core.lora.peft import LoRASettings, add_lora, lora_layers, lora_state_dict

SETTINGS = LoRASettings(rank=4, alpha=2.0, targets="all")  # alpha != rank on purpose: scale 0.5

# diffusers' own LoRA loader (used here as an independent reader of our files) runs only on its peft
# backend, which diffusers switches off below transformers 4.34: so not on A1111 1.10's 4.30.2.
needs_diffusers_lora_loader = pytest.mark.skipif(
    not USE_PEFT_BACKEND,
    reason="diffusers' load_lora_weights needs its peft backend (transformers >= 4.34)",
)


def unet_inputs(unet: nn.Module, seed: int = 1) -> dict:
    """A fixed batch of UNet inputs (random latents and text embeddings) for output comparisons."""
    g = torch.Generator().manual_seed(seed)
    kwargs = {
        "sample": torch.randn(2, 4, 8, 8, generator=g),
        "timestep": torch.tensor([500, 900]),
        "encoder_hidden_states": torch.randn(2, 8, unet.config.cross_attention_dim, generator=g),
    }
    if unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
        }
    return kwargs


def unet_output(unet: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0].float()


def trained_unet(architecture: str, settings: LoRASettings = SETTINGS) -> nn.Module:
    """A tiny UNet with a LoRA whose weights are random, standing in for a trained one."""
    unet = build_tiny_pipeline(architecture, seed=0).unet
    add_lora(unet, settings)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for param in (p for n, p in unet.named_parameters() if ".lora_" in n):
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return unet


def assert_fp16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to the rounding of the LoRA weights to fp16 in the file."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=5e-3 * expected.abs().max().item())


@pytest.fixture(scope="module")
def sd15_trained():
    return trained_unet("sd15")


@pytest.fixture(scope="module")
def sd15_file(sd15_trained, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora") / "unifl-sd15.safetensors"
    return save_kohya_lora(path, sd15_trained, SETTINGS, architecture="sd15", sampler=SamplerContract(), metadata={"unifl.stage": "2"})


@needs_diffusers_lora_loader
@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
def test_diffusers_load_lora_weights_reproduces_the_trained_unet(architecture, tmp_path):
    trained = trained_unet(architecture)
    path = save_kohya_lora(tmp_path / f"{architecture}.safetensors", trained, SETTINGS, architecture=architecture)

    tensors = safetensors.torch.load_file(str(path))
    ours = lora_layers(trained)
    assert len(tensors) == 3 * len(ours)
    assert all(t.dtype == torch.float16 for k, t in tensors.items() if k.endswith(".weight"))
    alphas = [t for k, t in tensors.items() if k.endswith(".alpha")]
    assert all(t.ndim == 0 and t.item() == 2.0 for t in alphas)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv}.lora_down.weight"].shape == (4, 32, 3, 3)
    assert tensors[f"{conv}.lora_up.weight"].shape == (32, 4, 1, 1)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors

    pipe = build_tiny_pipeline(architecture, seed=0)
    inputs = unet_inputs(pipe.unet)
    base = unet_output(pipe.unet, inputs)
    # Folder + weight_name: diffusers < 0.32 (Forge pins 0.31) refuses a bare file path under HF_HUB_OFFLINE.
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)

    # Every module in the file became a LoRA layer of the same name, holding the file's weights.
    loaded = {n: m for n, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and m.lora_A}
    assert set(loaded) == set(ours)
    for name, layer in loaded.items():
        adapter = next(iter(layer.lora_A))
        key = "lora_unet_" + name.replace(".", "_")
        torch.testing.assert_close(layer.lora_A[adapter].weight, tensors[f"{key}.lora_down.weight"].float())
        torch.testing.assert_close(layer.lora_B[adapter].weight, tensors[f"{key}.lora_up.weight"].float())
        assert layer.scaling[adapter] == 0.5

    expected = unet_output(trained, inputs)
    assert (expected - base).abs().max() > 0.05  # the LoRA matters, so the comparison below means something
    assert_fp16_close(unet_output(pipe.unet, inputs), expected)


@needs_diffusers_lora_loader
def test_alpha_equal_to_rank_as_diffusers_converter_writes_gives_a_different_model(sd15_trained, tmp_path):
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    peft_state = {f"unet.{k}": v.half() for k, v in lora_state_dict(sd15_trained).items()}
    converted = convert_state_dict_to_kohya(peft_state)
    assert {t.item() for k, t in converted.items() if k.endswith(".alpha")} == {4}  # alpha := rank
    path = tmp_path / "diffusers-converter.safetensors"
    safetensors.torch.save_file(converted, str(path))

    pipe = build_tiny_pipeline("sd15", seed=0)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name)
    inputs = unet_inputs(pipe.unet)
    expected = unet_output(sd15_trained, inputs)
    wrong = unet_output(pipe.unet, inputs)
    assert (wrong - expected).abs().max() > 20 * 5e-3 * expected.abs().max()


def test_metadata_round_trip(sd15_file):
    meta = read_lora_metadata(sd15_file)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], float(meta["ss_network_alpha"])) == ("4", 2.0)
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_output_name"] == "unifl-sd15"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["unifl.architecture"] == "sd15"
    assert meta["unifl.stage"] == "2"
    assert meta["unifl.version"]
    assert "4 steps" in meta["ss_training_comment"]
    assert SamplerContract.from_metadata(meta) == SamplerContract(step_counts=(4,))  # a stage-2 file: trained for its one count


def test_sdxl_metadata_marks_the_file_for_sdxl(tmp_path):
    unet = trained_unet("sdxl", LoRASettings(rank=2, alpha=1.0))
    meta = read_lora_metadata(save_kohya_lora(tmp_path / "xl.safetensors", unet, LoRASettings(rank=2, alpha=1.0), architecture="sdxl"))
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert SamplerContract.from_metadata(meta) is None  # no contract given, none invented


def test_caller_metadata_cannot_contradict_the_file(sd15_trained, tmp_path):
    with pytest.raises(ValueError, match="ss_network_alpha"):
        save_kohya_lora(tmp_path / "a.safetensors", sd15_trained, SETTINGS, architecture="sd15", metadata={"ss_network_alpha": "4"})
    with pytest.raises(TypeError, match="str"):
        save_kohya_lora(tmp_path / "b.safetensors", sd15_trained, SETTINGS, architecture="sd15", metadata={"unifl.stage": 2})
    with pytest.raises(ValueError, match="rank 8"):
        save_kohya_lora(tmp_path / "c.safetensors", sd15_trained, LoRASettings(rank=8, alpha=2.0, targets="all"), architecture="sd15")
    with pytest.raises(ValueError, match=".safetensors"):
        save_kohya_lora(tmp_path / "d.ckpt", sd15_trained, SETTINGS, architecture="sd15")
    assert list(tmp_path.iterdir()) == []


def test_sampler_contract_round_trip_and_host_settings():
    contract = SamplerContract(steps=8, scheduler="euler", timestep_spacing="leading", cfg=1.5)
    assert SamplerContract.from_metadata(contract.to_metadata()) == contract
    assert all(isinstance(v, str) for v in contract.to_metadata().values())
    assert SamplerContract.from_metadata({}) is None
    with pytest.raises(ValueError, match="incomplete"):
        SamplerContract.from_metadata({"unifl.sampler.steps": "4"})
    with pytest.raises(ValueError, match="spacing"):
        SamplerContract(timestep_spacing="karras")

    import diffusers

    default = SamplerContract()
    kw = default.diffusers_kwargs()
    assert kw["call"] == {"num_inference_steps": 4, "guidance_scale": 1.0}
    pipe_scheduler = build_tiny_pipeline("sd15", seed=0).scheduler
    scheduler = getattr(diffusers, kw["scheduler_class"]).from_config(pipe_scheduler.config, **kw["scheduler_config"])
    scheduler.set_timesteps(kw["call"]["num_inference_steps"])
    trailing = sched.sampling_timesteps(1000, 4, "trailing")
    assert scheduler.timesteps.tolist() == trailing.tolist() == [999, 749, 499, 249]

    settings = default.comfyui_settings()
    assert settings == {"sampler_name": "ddim", "scheduler": "simple", "steps": 4, "cfg": 1.0}
    # ComfyUI's `simple` scheduler (comfy/samplers.py) indexes its 1000-entry sigma table like this:
    simple = [999 - int(x * 1000 / 4) for x in range(4)]
    assert simple == trailing.tolist()


def test_never_overwrites_without_permission(sd15_trained, tmp_path):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_kohya_lora(path, sd15_trained, SETTINGS, architecture="sd15")
    assert path.read_bytes() == b"a user's file"
    save_kohya_lora(path, sd15_trained, SETTINGS, architecture="sd15", overwrite=True)
    assert read_lora_metadata(path)["ss_network_dim"] == "4"


def test_atomic_write_leaves_no_temporary_files(sd15_trained, tmp_path, monkeypatch):
    save_kohya_lora(tmp_path / "ok.safetensors", sd15_trained, SETTINGS, architecture="sd15")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.safetensors"]

    def crash_mid_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_kohya_lora(tmp_path / "crash.safetensors", sd15_trained, SETTINGS, architecture="sd15")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.safetensors"]


def test_load_kohya_lora_round_trip_into_a_fresh_unet(sd15_trained, sd15_file):
    unet = build_tiny_pipeline("sd15", seed=0).unet
    settings = load_kohya_lora(sd15_file, unet, architecture="sd15")
    assert settings == SETTINGS
    inputs = unet_inputs(unet)
    assert_fp16_close(unet_output(unet, inputs), unet_output(sd15_trained, inputs))
    assert all(p.requires_grad and p.dtype == torch.float32 for n, p in unet.named_parameters() if ".lora_" in n)


def test_load_kohya_lora_into_an_existing_lora_resets_layers_the_file_lacks(sd15_trained, tmp_path):
    narrow = LoRASettings(rank=4, alpha=2.0, targets="attention")
    small = trained_unet("sd15", narrow)
    path = save_kohya_lora(tmp_path / "attention.safetensors", small, narrow, architecture="sd15")

    wide = trained_unet("sd15", SETTINGS)  # a LoRA on more layers, all non-zero
    assert load_kohya_lora(path, wide) == SETTINGS
    inputs = unet_inputs(wide)
    assert_fp16_close(unet_output(wide, inputs), unet_output(small, inputs))

    with pytest.raises(LoRAFileError, match="rank 4, alpha 2 but the module's LoRA is rank 8"):
        load_kohya_lora(path, trained_unet("sd15", LoRASettings(rank=8, alpha=2.0)))
    all_path = save_kohya_lora(tmp_path / "all.safetensors", sd15_trained, SETTINGS, architecture="sd15")
    with pytest.raises(LoRAFileError, match="use targets='all'"):
        load_kohya_lora(all_path, build_tiny_pipeline("sd15", seed=0).unet, settings=narrow)


def test_wrong_architecture_raises_one_clear_error_naming_the_file(tmp_path):
    xl_settings = LoRASettings(rank=2, alpha=1.0)
    path = save_kohya_lora(tmp_path / "for-sdxl.safetensors", trained_unet("sdxl", xl_settings), xl_settings, architecture="sdxl")
    unet = build_tiny_pipeline("sd15", seed=0).unet

    with pytest.raises(LoRAFileError, match=r"for-sdxl\.safetensors.*'sdxl'.*'sd15'"):
        load_kohya_lora(path, unet, architecture="sd15")
    # Without metadata to go on, the keys and shapes still give it away.
    stripped = tmp_path / "no-metadata.safetensors"
    safetensors.torch.save_file(safetensors.torch.load_file(str(path)), str(stripped))
    with pytest.raises(LoRAFileError, match=r"no-metadata\.safetensors.*another model architecture"):
        load_kohya_lora(stripped, unet, architecture="sd15")
    assert not lora_layers(unet)  # nothing was injected by the failed loads


def test_ldm_named_host_exports_the_same_keys_through_name_map(sd15_trained, sd15_file, tmp_path):
    """A ComfyUI-like host: the UNet under a ``diffusion_model.`` prefix, mapped back by name_map."""
    host = nn.Module()
    host.diffusion_model = sd15_trained

    def name_map(path: str) -> str:
        if not path.startswith("diffusion_model."):
            raise KeyError(path)
        return path.removeprefix("diffusion_model.")

    path = save_kohya_lora(tmp_path / "ldm.safetensors", host, SETTINGS, naming="ldm", name_map=name_map, architecture="sd15")
    ours, reference = safetensors.torch.load_file(str(path)), safetensors.torch.load_file(str(sd15_file))
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    with pytest.raises(ValueError, match="name_map"):
        save_kohya_lora(tmp_path / "x.safetensors", host, SETTINGS, naming="ldm", architecture="sd15")

    fresh_host = nn.Module()
    fresh_host.diffusion_model = build_tiny_pipeline("sd15", seed=0).unet
    load_kohya_lora(path, fresh_host, name_map=name_map)
    inputs = unet_inputs(sd15_trained)
    assert_fp16_close(unet_output(fresh_host.diffusion_model, inputs), unet_output(sd15_trained, inputs))
    assert os.listdir(tmp_path) == ["ldm.safetensors"]


def test_the_contract_names_every_step_count_a_lora_was_trained_for():
    general = SamplerContract(steps=4, step_counts=(8, 1, 2))
    assert general.step_counts == (1, 2, 4, 8)  # the default count is always one of them
    assert SamplerContract.from_metadata(general.to_metadata()) == general
    assert general.to_metadata()["unifl.sampler.step_counts"] == "1,2,4,8"
    assert general.steps_for(None) == (4, None)
    assert general.steps_for(2) == (2, None)
    steps, warning = general.steps_for(6)
    assert steps == 4 and "trained to sample at 1, 2, 4, 8 steps, not 6" in warning
    assert general.steps_for(30)[0] == 8
    # a stage-2 file written before step counts were recorded was trained for its one count
    older = {k: v for k, v in SamplerContract(steps=4, step_counts=(4,)).to_metadata().items() if k != "unifl.sampler.step_counts"}
    assert SamplerContract.from_metadata(older | {"unifl.stage": "2"}).step_counts == (4,)
    assert SamplerContract.from_metadata(older | {"unifl.stage": "2"}).steps_for(8)[0] == 4
    # a stage-1 (quality) LoRA was trained for no particular count: a user's count is followed as it is
    quality = SamplerContract(steps=20, timestep_spacing="leading", cfg=7.5)
    assert quality.step_counts == () and "unifl.sampler.step_counts" not in quality.to_metadata()
    assert SamplerContract.from_metadata(quality.to_metadata() | {"unifl.stage": "1"}).steps_for(30) == (30, None)
    with pytest.raises(ValueError, match="step counts"):
        SamplerContract(step_counts=(0,))
