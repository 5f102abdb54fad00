"""Write a diffusers pipeline's weights in the original LDM/SGM single-file layout (test helper).

This inverts diffusers' single-file conversion (``diffusers.loaders.single_file_utils``:
``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``) so tests can build tiny checkpoints laid out like the files ComfyUI
and A1111 keep in ``models/checkpoints``, without any real Stable Diffusion weights.
"""

from __future__ import annotations

import torch

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
_OPEN_CLIP_LAYER = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))


def _rename(key: str, pairs) -> str:
    for new, old in pairs:
        key = key.replace(new, old)
    return key


def unet_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Diffusers ``UNet2DConditionModel`` keys → ``model.diffusion_model.*`` (``input_blocks``/``output_blocks``)."""
    per_down, per_up = config.layers_per_block + 1, config.layers_per_block + 1
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.rsplit(".", 1)[0] in _UNET_TOP:
            new = f"{_UNET_TOP[key.rsplit('.', 1)[0]]}.{parts[-1]}"
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{(block + 1) * per_down}.0.op.{rest.removeprefix('conv.')}"
            else:
                slot = 0 if kind == "resnets" else 1
                new = f"input_blocks.{1 + block * per_down + index}.{slot}.{_rename(rest, _UNET_RESNET) if slot == 0 else rest}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * index}.{_rename(rest, _UNET_RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            last = block * per_up + config.layers_per_block
            if kind == "upsamplers":
                has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in state)
                new = f"output_blocks.{last}.{2 if has_attention else 1}.{rest}"
            else:
                slot = 0 if kind == "resnets" else 1
                new = f"output_blocks.{block * per_up + index}.{slot}.{_rename(rest, _UNET_RESNET) if slot == 0 else rest}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKL`` keys → ``first_stage_model.*``; attention projections become 1×1 convs."""
    levels = len(config.block_out_channels)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        coder = parts[0]
        if parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2]) if parts[1] == "down_blocks" else levels - 1 - int(parts[2])
            kind, rest = parts[3], ".".join(parts[4:])
            if kind in ("downsamplers", "upsamplers"):
                new = f"{coder}.{'down' if kind == 'downsamplers' else 'up'}.{level}.{kind[:-2]}.{rest.removeprefix('0.')}"
            else:
                new = f"{coder}.{'down' if parts[1] == 'down_blocks' else 'up'}.{level}.block.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        elif parts[1] == "mid_block":
            rest = ".".join(parts[4:])
            if parts[2] == "resnets":
                new = f"{coder}.mid.block_{int(parts[3]) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                new = f"{coder}.mid.attn_1.{_rename(rest, _VAE_ATTENTION)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            new = key.replace("conv_norm_out", "norm_out")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModel`` keys → ``<prefix>text_model.*`` (SD1.x ``cond_stage_model.transformer.``, SDXL embedder 0).

    Includes ``position_ids``, which real checkpoints carry and loaders must ignore.
    """
    out = {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}
    positions = out[prefix + "text_model.embeddings.position_embedding.weight"].shape[0]
    out[prefix + "text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return out


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str = "conditioner.embedders.1.model.") -> dict[str, torch.Tensor]:
    """HF ``CLIPTextModelWithProjection`` keys → OpenCLIP names (SDXL's CLIP-G: fused ``in_proj``, transposed projection)."""
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    state.pop("embeddings.position_ids", None)  # a saved buffer in transformers < 4.31 (A1111 pins 4.30.2); OpenCLIP has none
    out = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
        prefix + "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([state.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"])
        for key in [k for k in state if k.startswith(src)]:
            out[dst + _rename(key.removeprefix(src), _OPEN_CLIP_LAYER)] = state.pop(key)
    if state:
        raise KeyError(f"no OpenCLIP names for {sorted(state)}")
    out[prefix + "logit_scale"] = torch.tensor(4.6052)
    return out


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """A whole SD1.x (``cond_stage_model``) or SDXL (``conditioner.embedders``) single-file state dict.

    Like real LDM checkpoints it also carries the training schedule buffers, which loaders must skip.
    """
    state = {**unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config), **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)}
    state["alphas_cumprod"] = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)
    state["model_ema.decay"] = torch.tensor(0.9999)
    if getattr(pipe, "text_encoder_2", None) is None:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    else:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict()))
    return {k: v.detach().clone().contiguous() for k, v in state.items()}
