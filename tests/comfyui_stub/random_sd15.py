"""A random-weight Stable Diffusion 1.5 checkpoint in the original single-file layout, for the real-ComfyUI tests.

ComfyUI decides the model type from key names and a few shapes only: SD15 matches ``context_dim=768``
and ``model_channels=320`` (``comfy/supported_models.py``); depth (channel levels, blocks per level)
is read from the keys. So ``size="small"`` (2 levels of 320/640 channels, one block each: ~10x fewer
UNet FLOPs) is detected and run as SD15 exactly like the real thing, while ``size="full"`` is the real
v1-5 shape (860M-parameter UNet). The VAE and CLIP ViT-L text encoder are always full size (ComfyUI
builds those from fixed configs). Built with diffusers/transformers from the configs shipped in
``core/diffusion/model_configs/sd15`` and converted with ``tests/ldm_keys.py``; weights are seeded, fp16.

``build_sdxl`` makes the SDXL-family counterpart: ComfyUI tells SDXL models apart by their transformer
depths, and the smallest SDXL shape it knows is Segmind-Vega's (``Segmind_Vega``, UNet ~745M parameters
with SDXL's conditioning: two text encoders, pooled output and size embeddings). Its CLIP-L and OpenCLIP
bigG text encoders and the VAE are full size (fixed configs in ComfyUI), so the file is ~3.3 GB in fp16.

    python tests/comfyui_stub/random_sd15.py OUT.safetensors [--size small|full|sdxl-vega]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "core" / "diffusion" / "model_configs" / "sd15"
SMALL_UNET = {"block_out_channels": [320, 640], "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1}


def build(out: str | Path, size: str = "small", seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(ROOT / "tests"))
    from ldm_keys import clip_to_ldm, unet_to_ldm, vae_to_ldm

    torch.manual_seed(seed)
    unet_config = json.loads((CONFIGS / "unet" / "config.json").read_text())
    if size == "small":
        unet_config.update(SMALL_UNET)
    elif size != "full":
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae" / "config.json").read_text()))
    text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in json.loads((CONFIGS / "text_encoder" / "config.json").read_text()).items() if not k.startswith("_")}))
    state = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config), **clip_to_ldm(text.state_dict(), "cond_stage_model.transformer.")}
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"unifl.test": f"random SD1.5 ({size}), seed {seed}"})
    tmp.replace(out)
    return out



def build_controlnet(out: str | Path, size: str = "small", seed: int = 1) -> Path:
    """A random SD1.5 ControlNet matching :func:`build`'s UNet, in the original (LDM) key layout.

    ComfyUI detects an LDM-layout ControlNet's shape from its keys (a diffusers-layout one must match a
    known full-size config), so this also works for the small UNet.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT / "tests"))
    from ldm_keys import unet_to_ldm

    torch.manual_seed(seed)
    unet_config = json.loads((CONFIGS / "unet" / "config.json").read_text())
    if size == "small":
        unet_config.update(SMALL_UNET)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_config(unet_config))
    state = controlnet.state_dict()
    special = {k: v for k, v in state.items() if k.startswith(("controlnet_", "controlnet_cond_embedding"))}
    mapped = unet_to_ldm({k: v for k, v in state.items() if k not in special}, controlnet.config)
    out_state = {k.removeprefix("model.diffusion_model."): v for k, v in mapped.items()}
    blocks = sorted({int(k.split(".")[2]) for k in special if k.startswith("controlnet_cond_embedding.blocks.")})
    for key, value in special.items():
        part = key.rsplit(".", 1)[1]
        if key.startswith("controlnet_down_blocks."):
            out_state[f"zero_convs.{key.split('.')[1]}.0.{part}"] = value
        elif key.startswith("controlnet_mid_block."):
            out_state[f"middle_block_out.0.{part}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            out_state[f"input_hint_block.0.{part}"] = value
        elif key.startswith("controlnet_cond_embedding.blocks."):
            out_state[f"input_hint_block.{2 * (int(key.split('.')[2]) + 1)}.{part}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            out_state[f"input_hint_block.{2 * (len(blocks) + 1)}.{part}"] = value
    out_state = {k: v.half().contiguous() for k, v in out_state.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out_state, str(out))
    return out


#: Segmind-Vega's transformer depths (ComfyUI's ``Segmind_Vega``: [0, 0, 1, 1, 2, 2] per input block).
VEGA_UNET = {"transformer_layers_per_block": [1, 1, 2]}


def build_sdxl(out: str | Path, seed: int = 0) -> Path:
    """A random-weight SDXL-family checkpoint (SGM single-file layout) that ComfyUI loads as ``Segmind_Vega``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sys.path.insert(0, str(ROOT / "tests"))
    from ldm_keys import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm

    configs = ROOT / "core" / "diffusion" / "model_configs" / "sdxl"
    text_config = lambda folder: CLIPTextConfig(**{k: v for k, v in json.loads((configs / folder / "config.json").read_text()).items() if not k.startswith("_")})  # noqa: E731
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**json.loads((configs / "unet" / "config.json").read_text()), **VEGA_UNET}).half()
    state = unet_to_ldm(unet.state_dict(), unet.config)
    del unet
    vae = AutoencoderKL.from_config(json.loads((configs / "vae" / "config.json").read_text())).half()
    state.update(vae_to_ldm(vae.state_dict(), vae.config))
    state.update(clip_to_ldm(CLIPTextModel(text_config("text_encoder")).half().state_dict(), "conditioner.embedders.0.transformer."))
    state.update(open_clip_to_ldm(CLIPTextModelWithProjection(text_config("text_encoder_2")).half().state_dict()))
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"unifl.test": f"random SDXL-family (Segmind-Vega shape), seed {seed}"})
    tmp.replace(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--size", default="small", choices=["small", "full", "sdxl-vega"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_sdxl(args.out, args.seed) if args.size == "sdxl-vega" else build(args.out, args.size, args.seed))
