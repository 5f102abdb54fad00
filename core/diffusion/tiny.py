"""Tiny, randomly initialised SD1.5- and SDXL-architecture pipelines built from configs, offline.

No Stable Diffusion weights exist on the machines this project is tested on, so tests, the benchmark
and the fallback demo use the real diffusers/transformers classes at toy sizes (the pattern diffusers'
own tests use). Nothing is downloaded: the CLIP tokenizer is a byte-level BPE tokenizer built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .clip_bpe import bytes_to_unicode

SD15_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's byte-pair encoding of one word: join every occurrence of the lowest-ranked adjacent pair, repeat."""
    while len(pieces) > 1:
        pair = min(zip(pieces, pieces[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        joined, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
                joined.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                joined.append(pieces[i])
                i += 1
        pieces = joined
    return pieces


def write_clip_tokenizer(folder: str | Path, words: list[str] = (), model_max_length: int = 77):
    """Write a CLIP BPE tokenizer (``vocab.json`` + ``merges.txt``) whose whole words are single tokens.

    The base vocabulary is CLIP's 512 byte symbols, so any text tokenizes; each word in ``words`` gets
    merges that make it one token, which keeps prompts short and the embedding table small. Returns the
    loaded ``CLIPTokenizer``.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words if w.isascii() and w.isalpha() and len(w) > 1):
        # Tokenize the word with the merges so far, then join its pieces left to right with new, lower-priority
        # merges. Merging only the raw letters would fail whenever an earlier word's merge (the "r i" of "right")
        # fires first inside this one ("t ri a n g l e"); appended merges never change how earlier words split.
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            ranks.setdefault((pieces[0], pieces[1]), len(ranks))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    merges = [f"{a} {b}" for a, b in ranks]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")  # no blank line: the loader rejects it
    config = {"model_max_length": model_max_length, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder))


def build_tiny_pipeline(architecture: str = "sd15", seed: int = 0, tokenizer_dir: str | Path | None = None):
    """A randomly initialised ``StableDiffusionPipeline`` (``"sd15"``) or ``StableDiffusionXLPipeline`` (``"sdxl"``).

    32-channel blocks, one cross-attention level, a 2-layer CLIP text encoder: a forward pass at
    64×64 px takes milliseconds on a CPU, yet every code path (attention LoRA targets, SDXL time ids
    and pooled embeddings, VAE scaling) is the real one.
    """
    import tempfile

    from .loading import prefer_torchvision_free_processors

    prefer_torchvision_free_processors()
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if architecture not in ("sd15", "sdxl"):
        raise ValueError(f"architecture must be 'sd15' or 'sdxl', got {architecture!r}")
    torch.manual_seed(seed)
    tokenizer_dir = Path(tokenizer_dir or tempfile.mkdtemp(prefix="unifl-tok-"))
    tokenizer = write_clip_tokenizer(tokenizer_dir, words=["a", "photo", "of", "cat", "dog", "red", "blue"])
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77, layer_norm_eps=1e-5, hidden_act="gelu", projection_dim=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        sample_size=64,
    )
    unet_common = dict(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4, norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
    )
    scheduler = DDIMScheduler(**{k: v for k, v in SD15_SCHEDULER.items() if not k.startswith("_")})
    if architecture == "sd15":
        unet = UNet2DConditionModel(cross_attention_dim=32, **unet_common)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        return StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    unet = UNet2DConditionModel(
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, use_linear_projection=True, transformer_layers_per_block=(1, 2),
        **unet_common,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
