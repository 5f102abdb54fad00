"""Offline model loading: diffusers folders, LDM/SGM single files, the shipped configs, and bad input.

Everything runs on tiny random models. A socket guard fails any test that tries to reach a model hub,
so "works with HF_HUB_OFFLINE=1" is checked, not assumed.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers read it

import json
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ldm_keys import pipeline_to_ldm
from safetensors.torch import save_file
from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser, alphas_cumprod_from_config
from unifl.core.diffusion.loading import (
    MODEL_CONFIGS_DIR,
    ModelLoadError,
    detect_architecture,
    load_clip_tokenizer,
    load_denoiser,
    load_pipeline,
    shipped_config_dir,
)
from unifl.core.diffusion.tiny import build_tiny_pipeline

PROMPTS = ["a photo of a cat", ""]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt (a hub download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("model loading tried to open a network connection")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tiny_sdxl_with_distinct_encoders(seed: int = 0):
    """Tiny SDXL whose CLIP-L and CLIP-G differ in width, as in the real model.

    diffusers tells SDXL's two text encoders in a single file apart by width, so the test model cannot
    use :func:`build_tiny_pipeline`'s two equally wide encoders.
    """
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    base = build_tiny_pipeline("sdxl", seed=seed)
    text = base.text_encoder.config
    wide = CLIPTextConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
        vocab_size=text.vocab_size, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
        hidden_size=48, intermediate_size=40, num_attention_heads=4, num_hidden_layers=2, projection_dim=24,
    )
    unet = UNet2DConditionModel.from_config({**base.unet.config, "cross_attention_dim": 32 + 48, "projection_class_embeddings_input_dim": 6 * 8 + 24})
    return StableDiffusionXLPipeline(
        vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=CLIPTextModelWithProjection(wide),
        tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2, unet=unet, scheduler=base.scheduler,
    )


def configs_only(pipe, folder: Path) -> Path:
    """``folder`` as a diffusers folder of ``pipe``'s configs and tokenizers, without weights."""
    pipe.save_pretrained(folder)
    for weights in folder.rglob("*.safetensors"):
        weights.unlink()
    return folder


def assert_same_weights(original, loaded, components):
    for name in components:
        expected, actual = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == actual.keys(), name
        different = [k for k in expected if not torch.equal(expected[k], actual[k])]
        assert not different, f"{name}: {different[:3]}"


def unet_output(denoiser: DiffusersDenoiser, cond) -> torch.Tensor:
    torch.manual_seed(0)
    x_t = torch.randn(2, 4, 8, 8)
    return denoiser.predict_model_output(x_t, torch.tensor([10, 500]), cond)


@pytest.fixture(scope="module")
def sd15():
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def sd15_single_file(sd15, tmp_path_factory):
    """``(checkpoint.safetensors, config folder)`` of the tiny SD1.5 in the original LDM layout."""
    folder = tmp_path_factory.mktemp("sd15-single")
    save_file(pipeline_to_ldm(sd15), folder / "model.safetensors")
    return folder / "model.safetensors", configs_only(sd15, folder / "configs")


# -- diffusers folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
def test_diffusers_folder_round_trip_gives_identical_outputs(architecture, sd15, tmp_path):
    original = sd15 if architecture == "sd15" else build_tiny_pipeline("sdxl")
    original.save_pretrained(tmp_path)

    assert detect_architecture(tmp_path) == type(original).__name__
    denoiser = load_denoiser(tmp_path)
    reference = DiffusersDenoiser.from_pipeline(original)

    assert denoiser.architecture == architecture
    cond = reference.encode_prompts(PROMPTS)
    for key, value in denoiser.encode_prompts(PROMPTS).tensors.items():
        assert torch.equal(value, cond.tensors[key]), key
    assert torch.equal(unet_output(denoiser, cond), unet_output(reference, cond))
    assert torch.equal(denoiser.alphas_cumprod, reference.alphas_cumprod)


def test_folder_load_applies_dtype_and_skips_safety_checker(sd15, tmp_path):
    sd15.save_pretrained(tmp_path)
    pipe = load_pipeline(tmp_path, dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.safety_checker is None


# -- single-file checkpoints ----------------------------------------------------------------------


def test_single_file_sd15_safetensors_loads_the_same_weights(sd15, sd15_single_file):
    checkpoint, configs = sd15_single_file
    assert detect_architecture(checkpoint) == "sd15"

    pipe = load_pipeline(checkpoint, config_dir=configs)

    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None
    assert_same_weights(sd15, pipe, ["unet", "vae", "text_encoder"])
    assert pipe.tokenizer("a photo of a cat").input_ids == sd15.tokenizer("a photo of a cat").input_ids
    assert pipe.vae.config.scaling_factor == sd15.vae.config.scaling_factor


def test_single_file_ckpt_is_read_with_weights_only(sd15, sd15_single_file, tmp_path):
    """A ``.ckpt`` wrapping its tensors in ``{"state_dict": ...}`` as LDM training scripts save them."""
    _, configs = sd15_single_file
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": pipeline_to_ldm(sd15), "global_step": 470000}, checkpoint)

    assert detect_architecture(checkpoint) == "sd15"
    denoiser = load_denoiser(checkpoint, config_dir=configs, architecture="sd15")

    assert denoiser.architecture == "sd15"
    loaded = SimpleNamespace(unet=denoiser.unet, vae=denoiser.vae, text_encoder=denoiser.text_encoders[0])
    assert_same_weights(sd15, loaded, ["unet", "vae", "text_encoder"])


def test_single_file_sdxl_loads_both_text_encoders(tmp_path):
    original = tiny_sdxl_with_distinct_encoders()
    save_file(pipeline_to_ldm(original), tmp_path / "xl.safetensors")
    configs = configs_only(original, tmp_path / "configs")
    assert detect_architecture(tmp_path / "xl.safetensors") == "sdxl"

    pipe = load_pipeline(tmp_path / "xl.safetensors", config_dir=configs)

    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert_same_weights(original, pipe, ["unet", "vae", "text_encoder", "text_encoder_2"])
    reference, loaded = DiffusersDenoiser.from_pipeline(original), DiffusersDenoiser.from_pipeline(pipe)
    cond = reference.encode_prompts(PROMPTS)
    assert torch.equal(loaded.encode_prompts(PROMPTS).tensors["pooled_prompt_embeds"], cond.tensors["pooled_prompt_embeds"])
    assert torch.equal(unet_output(loaded, cond), unet_output(reference, cond))
    with pytest.raises(ModelLoadError, match=r"model_configs.sdxl"):  # the full-size shipped configs do not fit
        load_pipeline(tmp_path / "xl.safetensors")


def test_single_file_uses_the_shipped_configs_by_default(sd15_single_file):
    """Without ``config_dir`` the full-size SD1.5 configs apply, so the tiny weights do not fit them."""
    checkpoint, _ = sd15_single_file
    with pytest.raises(ModelLoadError) as caught:
        load_pipeline(checkpoint)
    message = str(caught.value)
    assert str(checkpoint) in message and str(shipped_config_dir("sd15")) in message
    assert "768" in message and "config_dir" in message


# -- the shipped configs are the published models -------------------------------------------------


@pytest.mark.parametrize(
    "architecture, unet_params, text_params",
    [("sd15", 859_520_964, [123_060_480]), ("sdxl", 2_567_463_684, [123_060_480, 694_659_840])],
)
def test_shipped_configs_build_the_published_models(architecture, unet_params, text_params):
    """Parameter counts of runwayml SD1.5 and SDXL base 1.0, built on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = shipped_config_dir(architecture)
    index = json.loads((folder / "model_index.json").read_text())
    encoders = ["text_encoder", "text_encoder_2"][: len(text_params)]
    assert index["_class_name"] == {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[architecture]
    unet_config = UNet2DConditionModel.load_config(folder / "unet")
    vae_config = AutoencoderKL.load_config(folder / "vae")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        texts = [
            (CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel)(CLIPTextConfig.from_pretrained(folder / name))
            for name in encoders
        ]

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(unet) == unet_params
    assert count(vae) == 83_653_863
    assert [count(t) for t in texts] == text_params
    assert unet.config.cross_attention_dim == sum(t.config.hidden_size for t in texts)
    assert vae.config.scaling_factor == {"sd15": 0.18215, "sdxl": 0.13025}[architecture]
    if architecture == "sdxl":
        assert unet.config.addition_embed_type == "text_time"
        assert unet.config.projection_class_embeddings_input_dim == 6 * 256 + 1280
        assert list(unet.config.transformer_layers_per_block) == [1, 2, 10]

    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_schedule"], scheduler["beta_start"], scheduler["beta_end"], scheduler["steps_offset"]) == ("scaled_linear", 0.00085, 0.012, 1)
    assert alphas_cumprod_from_config(scheduler)[-1].item() == pytest.approx(0.0046600, abs=1e-6)


@pytest.mark.parametrize("architecture, subfolder, pad", [("sd15", "tokenizer", "<|endoftext|>"), ("sdxl", "tokenizer", "<|endoftext|>"), ("sdxl", "tokenizer_2", "!")])
def test_shipped_tokenizers_give_clip_ids(architecture, subfolder, pad):
    tokenizer = load_clip_tokenizer(shipped_config_dir(architecture) / subfolder)

    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("A Photo of a CAT").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.pad_token == pad
    padded = tokenizer("a cat", padding="max_length", max_length=6).input_ids
    assert padded == [49406, 320, 2368, 49407] + [tokenizer.convert_tokens_to_ids(pad)] * 2


def test_model_configs_hold_only_small_text_files():
    """What ships in the wheel: JSON configs, the CLIP vocabulary, the script and its README."""
    files = [p for p in MODEL_CONFIGS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert {p.suffix for p in files} <= {".json", ".txt", ".py", ".md"}


# -- bad input ------------------------------------------------------------------------------------


def expect_error(path, *phrases, **kwargs):
    with pytest.raises(ModelLoadError) as caught:
        load_pipeline(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "no such file", ".safetensors")


def test_directory_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "unet").mkdir()
    expect_error(tmp_path, "model_index.json")
    with pytest.raises(ModelLoadError, match="model_index.json"):
        detect_architecture(tmp_path)


def test_folder_of_an_unsupported_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    expect_error(tmp_path, "FluxPipeline", "StableDiffusionXLPipeline")


def test_folder_with_missing_weights(sd15, tmp_path):
    configs_only(sd15, tmp_path)
    expect_error(tmp_path, "could not be loaded", "weights")


def test_truncated_safetensors(sd15_single_file, tmp_path):
    data = sd15_single_file[0].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "cut.safetensors", "truncated or corrupt", "again")


def test_garbage_safetensors_header(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!")
    expect_error(tmp_path / "junk.safetensors", "not a readable safetensors file")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        detect_architecture(tmp_path / "junk.safetensors")


def test_checkpoint_of_no_supported_architecture(tmp_path):
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}
    save_file(lora, tmp_path / "lora.safetensors")
    expect_error(tmp_path / "lora.safetensors", "match no supported model", "lora_unet_down_blocks", "full checkpoint")


def test_sd2_and_refiner_are_recognised_but_refused(tmp_path):
    for name, key, phrase in [
        ("sd21.safetensors", "cond_stage_model.model.token_embedding.weight", "convert_original_stable_diffusion_to_diffusers"),
        ("refiner.safetensors", "conditioner.embedders.0.model.text_projection", "SDXL base"),
    ]:
        save_file({key: torch.zeros(2, 2)}, tmp_path / name)
        assert detect_architecture(tmp_path / name) == name.split(".")[0].replace("sd21", "sd2").replace("refiner", "sdxl-refiner")
        expect_error(tmp_path / name, phrase)


def test_inpainting_unet_is_refused(tmp_path):
    state = {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(77, 8),
             "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 9, 3, 3)}
    save_file(state, tmp_path / "inpaint.safetensors")
    expect_error(tmp_path / "inpaint.safetensors", "9 input channels")


def test_checkpoint_missing_weights(sd15, sd15_single_file, tmp_path):
    _, configs = sd15_single_file
    state = pipeline_to_ldm(sd15)
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, tmp_path / "partial.safetensors")
    expect_error(tmp_path / "partial.safetensors", "some parameters have no weights in the file", config_dir=configs)


def test_pickle_with_python_objects_is_not_unpickled(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}, "callbacks": {"checkpoint": socket.AddressFamily.AF_INET}}, tmp_path / "old.ckpt")
    expect_error(tmp_path / "old.ckpt", "will not unpickle", ".safetensors")


def test_corrupt_ckpt_and_wrong_suffix(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"\x00garbage" * 8)
    expect_error(tmp_path / "bad.ckpt", "not a readable PyTorch file")
    (tmp_path / "notes.txt").write_text("hello")
    expect_error(tmp_path / "notes.txt", ".safetensors")


def test_unknown_architecture_argument(sd15_single_file):
    expect_error(sd15_single_file[0], "sd15", architecture="sd3")


def test_config_dir_that_is_not_a_diffusers_folder(sd15_single_file, tmp_path):
    message = expect_error(sd15_single_file[0], "model_index.json", config_dir=tmp_path)
    assert str(tmp_path) in message
