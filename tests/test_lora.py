"""LoRA injection (unifl.core.lora.peft) on the tiny SD1.5/SDXL UNets."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from unifl.core.diffusion.denoiser import Conditioning
from unifl.core.diffusion.diffusers_denoiser import DiffusersDenoiser
from unifl.core.diffusion.tiny import build_tiny_pipeline
from unifl.core.lora.peft import LoRASettings, add_lora, load_lora_state_dict, lora_layers, lora_state_dict


def unet_inputs(unet: nn.Module, seed: int = 1) -> dict:
    """A fixed batch of UNet inputs (random latents and text embeddings) for output comparisons."""
    g = torch.Generator().manual_seed(seed)
    dtype = unet.dtype
    kwargs = {
        "sample": torch.randn(2, 4, 8, 8, generator=g).to(dtype),
        "timestep": torch.tensor([500, 900]),
        "encoder_hidden_states": torch.randn(2, 8, unet.config.cross_attention_dim, generator=g).to(dtype),
    }
    if unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, 32, generator=g).to(dtype),
            "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=dtype),
        }
    return kwargs


def unet_output(unet: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0].float()


def perturb(module: nn.Module, seed: int = 2, std: float = 0.2) -> None:
    """Random LoRA weights, standing in for training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (p for n, p in module.named_parameters() if ".lora_" in n):
            param.copy_(torch.randn(param.shape, generator=g) * std)


@pytest.fixture(scope="module")
def sd15():
    return build_tiny_pipeline("sd15", seed=0)


def test_fresh_lora_is_a_no_op_and_only_lora_is_trainable():
    unet = build_tiny_pipeline("sd15", seed=0).unet
    inputs = unet_inputs(unet)
    before = unet_output(unet, inputs)
    params = add_lora(unet, LoRASettings(rank=4, alpha=4.0))
    torch.testing.assert_close(unet_output(unet, inputs), before, rtol=0, atol=0)

    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    assert len(params) == 2 * len(lora_layers(unet)) > 0
    assert all(p.dtype == torch.float32 for p in params)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lora_parameters_stay_float32_on_a_half_precision_unet(dtype):
    unet = build_tiny_pipeline("sd15", seed=0).unet.to(dtype)
    params = add_lora(unet, LoRASettings(rank=4, alpha=2.0, targets="all"))
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    base = [p for n, p in unet.named_parameters() if ".lora_" not in n]
    assert all(p.dtype == dtype and not p.requires_grad for p in base)

    perturb(unet)
    out = unet(**unet_inputs(unet), return_dict=False)[0]
    assert out.dtype == dtype
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)


def expected_layer_count(unet: nn.Module, targets: str) -> int:
    """Count the target layers from diffusers' block classes, independently of the regexes."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    count = 4 * sum(isinstance(m, Attention) for m in unet.modules())
    if targets in ("attention+ff", "all"):
        count += 2 * sum(isinstance(m, BasicTransformerBlock) for m in unet.modules())
    if targets == "all":
        count += 2 * sum(isinstance(m, Transformer2DModel) for m in unet.modules())
        count += sum(3 + (m.conv_shortcut is not None) for m in unet.modules() if isinstance(m, ResnetBlock2D))
    return count


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
@pytest.mark.parametrize("targets", ["attention", "attention+ff", "all"])
def test_target_presets_hit_the_expected_layers(architecture, targets):
    unet = build_tiny_pipeline(architecture, seed=0).unet
    add_lora(unet, LoRASettings(rank=2, alpha=2.0, targets=targets))
    layers = lora_layers(unet)
    assert len(layers) == expected_layer_count(unet, targets)
    if targets == "attention":
        assert {name.rsplit(".", 1)[-1] for name in layers} == {"to_q", "to_k", "to_v", "0"}


def ldm_style_host() -> nn.Module:
    """A ComfyUI/A1111-style module tree: same attention leaves, LDM resnet names, Identity skip."""
    host = nn.Module()
    host.diffusion_model = nn.ModuleDict({
        "input_blocks": nn.ModuleList([
            nn.ModuleDict({
                "in_layers": nn.Sequential(nn.GroupNorm(1, 4), nn.SiLU(), nn.Conv2d(4, 4, 3, padding=1)),
                "skip_connection": nn.Identity(),
                "attn1": nn.ModuleDict({"to_q": nn.Linear(4, 4), "to_out": nn.ModuleList([nn.Linear(4, 4)])}),
                "norm": nn.Linear(4, 4),
            })
        ])
    })
    return host


def test_suffix_regex_hits_ldm_named_modules_and_skips_identity_layers():
    attention = ldm_style_host()
    add_lora(attention, LoRASettings(rank=2, alpha=2.0, targets="attention"))
    assert sorted(lora_layers(attention)) == [
        "diffusion_model.input_blocks.0.attn1.to_out.0",
        "diffusion_model.input_blocks.0.attn1.to_q",
    ]
    everything = ldm_style_host()
    add_lora(everything, LoRASettings(rank=2, alpha=2.0, targets="all"))
    assert sorted(lora_layers(everything)) == [
        "diffusion_model.input_blocks.0.attn1.to_out.0",
        "diffusion_model.input_blocks.0.attn1.to_q",
        "diffusion_model.input_blocks.0.in_layers.2",  # conv1 under its LDM name; the Identity skip is left alone
    ]


def test_adapters_disabled_gives_the_base_model_and_restores_the_lora():
    denoiser = DiffusersDenoiser.from_pipeline(build_tiny_pipeline("sd15", seed=0))
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([300, 700])
    cond = Conditioning({"prompt_embeds": torch.randn(2, 8, 32, generator=g)})
    with torch.no_grad():
        base = denoiser.predict_model_output(x_t, t, cond)
        add_lora(denoiser.lora_target, LoRASettings(rank=4, alpha=2.0))
        perturb(denoiser.lora_target)
        with_lora = denoiser.predict_model_output(x_t, t, cond)
        with denoiser.adapters_disabled():
            disabled = denoiser.predict_model_output(x_t, t, cond)
        after = denoiser.predict_model_output(x_t, t, cond)
    assert (with_lora - base).abs().max() > 1e-2
    torch.testing.assert_close(disabled, base)
    torch.testing.assert_close(after, with_lora)


def test_state_dict_round_trip_into_a_fresh_lora(sd15):
    settings = LoRASettings(rank=4, alpha=2.0, targets="attention+ff")
    trained = build_tiny_pipeline("sd15", seed=0).unet
    add_lora(trained, settings)
    perturb(trained)
    state = lora_state_dict(trained)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in state)

    fresh = build_tiny_pipeline("sd15", seed=0).unet
    add_lora(fresh, settings)
    load_lora_state_dict(fresh, state)
    inputs = unet_inputs(trained)
    torch.testing.assert_close(unet_output(fresh, inputs), unet_output(trained, inputs))

    perturb(trained, seed=9)  # the snapshot is a copy, not a view of the live weights
    torch.testing.assert_close(state[next(iter(state))], lora_state_dict(fresh)[next(iter(state))])


def test_load_state_dict_is_strict():
    settings = LoRASettings(rank=4, alpha=2.0)
    unet = build_tiny_pipeline("sd15", seed=0).unet
    add_lora(unet, settings)
    state = lora_state_dict(unet)

    missing = dict(list(state.items())[1:])
    with pytest.raises(ValueError, match="1 missing keys"):
        load_lora_state_dict(unet, missing)
    with pytest.raises(ValueError, match="1 unexpected keys"):
        load_lora_state_dict(unet, {**state, "conv_in.lora_A.weight": torch.zeros(4, 4)})
    wrong_rank = {k: torch.zeros(8, *v.shape[1:]) if ".lora_A." in k else v for k, v in state.items()}
    with pytest.raises(ValueError, match="wrong shape"):
        load_lora_state_dict(unet, wrong_rank)


def test_bad_settings_and_targets_are_refused(sd15):
    with pytest.raises(ValueError, match="targets"):
        LoRASettings(targets="everything")
    with pytest.raises(ValueError, match="init"):
        LoRASettings(init="pissa")
    with pytest.raises(ValueError, match="rank"):
        LoRASettings(rank=0)
    with pytest.raises(ValueError, match="match no Linear/Conv2d"):
        add_lora(sd15.text_encoder, LoRASettings())  # CLIP names its projections q_proj/k_proj
    unet = build_tiny_pipeline("sd15", seed=0).unet
    add_lora(unet, LoRASettings(rank=2, alpha=2.0))
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        add_lora(unet, LoRASettings(rank=2, alpha=2.0))
