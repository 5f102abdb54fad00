"""ImageReward (Xu et al., NeurIPS 2023) on transformers' BLIP classes: the published ``ImageReward.pt`` as it is.

ImageReward is BLIP's image-text encoder plus an MLP: a ViT-L/16 (``blip.visual_encoder``) encodes the
image; BLIP's ``med`` BERT (``blip.text_encoder``) reads the prompt with cross-attention to the image
tokens; the ``[CLS]`` state goes through ``mlp`` (the improved-aesthetic-predictor layout, see
:class:`.laion.AestheticMLP`); the result is standardised with the published mean and std.

transformers ports both halves of BLIP: ``BlipTextModel`` *is* ``med``'s BertModel (identical key
names; ``embeddings.position_ids``, a buffer in BLIP's file, is dropped) and ``BlipVisionModel`` is
BLIP's ViT under other names (:func:`blip_vit_to_transformers`; ``attn.qkv`` stays fused in both,
and the layer norm epsilon is BLIP's 1e-6). ``blip.vision_proj`` / ``blip.text_proj`` belong to
BLIP's retrieval score, not ImageReward's, and are ignored. The architecture is read from the tensor
shapes (64-wide heads, as BERT-base and ViT-L have).

Scoring follows ``ImageReward.score``: BERT tokens padded to 35, CLIP preprocessing (short side to 224
bicubic, centre crop, CLIP mean/std), ``(mlp(cls) - 0.16717) / 1.03334``.

``path`` (kind ``imagereward``) is ``"checkpoint=ImageReward.pt;tokenizer=FOLDER"`` with ``FOLDER`` the
``bert-base-uncased`` tokenizer (``vocab.txt``), or a folder holding one checkpoint file and the
tokenizer files (in the folder itself, in ``tokenizer/`` or in ``bert-base-uncased/``).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from ...weight_files import WEIGHT_SUFFIXES, WeightFileError, count_indexed, existing_path, load_exactly, parse_parts, read_weights, shape_of, with_prefix
from ..registry import register_reward_model
from .clip_preprocess import clip_preprocess
from .laion import AestheticMLP

CHECKPOINT = "an ImageReward checkpoint (ImageReward.pt: blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)"
TOKENIZER = "the bert-base-uncased tokenizer (vocab.txt or tokenizer.json)"
TOKENIZER_SUBFOLDERS = ("tokenizer", "bert-base-uncased")
LAYOUT = "'checkpoint=FILE;tokenizer=FOLDER', or a folder holding one checkpoint file and the tokenizer files"
SCORE_MEAN = 0.16717362830052426
SCORE_STD = 1.0333394966054072
PROMPT_TOKENS = 35
VIT_RENAMES = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("blocks.", "encoder.layers."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
    (".attn.qkv.", ".self_attn.qkv."),
    (".attn.proj.", ".self_attn.projection."),
)


def blip_vit_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BLIP's ``VisionTransformer`` keys (without the ``blip.visual_encoder.`` prefix) → ``BlipVisionModel``'s."""
    return {_vit_key(key): value for key, value in state.items()}


def _vit_key(key: str) -> str:
    if key.startswith("norm."):  # the final norm; the blocks' norm1/norm2 are renamed below
        return "post_layernorm." + key[len("norm."):]
    for old, new in VIT_RENAMES:
        key = key.replace(old, new)
    return key


class ImageReward(nn.Module):
    """``images, prompts → ImageReward score [B]`` (about -2…2; 0 is the average of its training images)."""

    def __init__(self, vision: nn.Module, text: nn.Module, head: nn.Module, tokenizer):
        super().__init__()
        self.vision = vision
        self.text = text
        self.head = head
        self.tokenizer = tokenizer
        self.image_size = vision.config.image_size

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"ImageReward needs one prompt per image: got {len(prompts)} prompt(s) for {images.shape[0]} image(s)")
        weight = self.vision.embeddings.patch_embedding.weight
        pixels = clip_preprocess(images, self.image_size).to(weight.dtype)
        image_tokens = self.vision(pixel_values=pixels).last_hidden_state
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=PROMPT_TOKENS, return_tensors="pt").to(weight.device)
        image_mask = torch.ones(image_tokens.shape[:-1], dtype=torch.long, device=weight.device)
        text_states = self.text(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], encoder_hidden_states=image_tokens, encoder_attention_mask=image_mask
        ).last_hidden_state
        return ((self.head(text_states[:, 0].float()) - SCORE_MEAN) / SCORE_STD).squeeze(-1)


@register_reward_model("imagereward")
def load_imagereward(path: str) -> ImageReward:
    checkpoint, tokenizer_folder = _locate(path)
    state, metadata = read_weights(checkpoint, CHECKPOINT)
    tokenizer = _load_bert_tokenizer(tokenizer_folder)
    vision = _build_vision(state, checkpoint)
    text = _build_text(state, checkpoint, tokenizer)
    head = AestheticMLP.from_state_dict(with_prefix(state, "mlp."), checkpoint, CHECKPOINT)
    if text.config.encoder_hidden_size != vision.config.hidden_size:
        raise WeightFileError(f"{checkpoint}: its text encoder attends to {text.config.encoder_hidden_size}-d image tokens but its ViT makes {vision.config.hidden_size}-d ones; expected {CHECKPOINT}.")
    model = ImageReward(vision.eval(), text.eval(), head.eval(), tokenizer)
    if "unifl.alpha" in metadata:
        model.alpha = float(metadata["unifl.alpha"])
    return model


def _build_vision(state: Mapping[str, torch.Tensor], path: Path):
    from transformers import BlipVisionConfig, BlipVisionModel

    shape = partial(shape_of, state, path=path, expected=CHECKPOINT)
    width = shape("blip.visual_encoder.cls_token")[-1]
    patch = shape("blip.visual_encoder.patch_embed.proj.weight")[-1]
    config = BlipVisionConfig(
        hidden_size=width,
        intermediate_size=shape("blip.visual_encoder.blocks.0.mlp.fc1.weight")[0],
        num_hidden_layers=count_indexed(state, "blip.visual_encoder.blocks."),
        num_attention_heads=max(1, width // 64),
        image_size=patch * math.isqrt(shape("blip.visual_encoder.pos_embed")[1] - 1),
        patch_size=patch,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    model = BlipVisionModel(config)
    load_exactly(model, blip_vit_to_transformers(with_prefix(state, "blip.visual_encoder.")), path, CHECKPOINT)
    return model


def _build_text(state: Mapping[str, torch.Tensor], path: Path, tokenizer):
    from transformers import BlipTextConfig, BlipTextModel

    shape = partial(shape_of, state, path=path, expected=CHECKPOINT)
    vocab_size, width = shape("blip.text_encoder.embeddings.word_embeddings.weight")
    if len(tokenizer) > vocab_size:
        raise WeightFileError(f"{path}: its text encoder knows {vocab_size} tokens but the tokenizer has {len(tokenizer)}; pass {TOKENIZER}.")
    config = BlipTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        encoder_hidden_size=shape("blip.text_encoder.encoder.layer.0.crossattention.self.key.weight")[1],
        intermediate_size=shape("blip.text_encoder.encoder.layer.0.intermediate.dense.weight")[0],
        num_hidden_layers=count_indexed(state, "blip.text_encoder.encoder.layer."),
        num_attention_heads=max(1, width // 64),
        max_position_embeddings=shape("blip.text_encoder.embeddings.position_embeddings.weight")[0],
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        is_decoder=True,  # builds the cross-attention layers; forward runs them bidirectionally (is_decoder=False)
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        sep_token_id=tokenizer.sep_token_id,
    )
    model = BlipTextModel(config, add_pooling_layer=False)
    text_state = {k: v for k, v in with_prefix(state, "blip.text_encoder.").items() if k != "embeddings.position_ids"}
    load_exactly(model, text_state, path, CHECKPOINT)
    return model


def _load_bert_tokenizer(folder: Path):
    from transformers import BertTokenizer

    folder = existing_path(folder, TOKENIZER)
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise WeightFileError(f"{folder}: has no vocab.txt or tokenizer.json; expected {TOKENIZER}.")
    try:
        return BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise WeightFileError(f"{folder}: is not a readable BERT tokenizer ({err}); expected {TOKENIZER}.") from None


def _locate(path: str) -> tuple[Path, Path]:
    parts = parse_parts(path, ("checkpoint", "tokenizer"))
    if parts is not None:
        if set(parts) != {"checkpoint", "tokenizer"}:
            raise WeightFileError(f"{path!r}: names {', '.join(parts)}; expected both parts, 'checkpoint=FILE;tokenizer=FOLDER'.")
        return Path(parts["checkpoint"]), Path(parts["tokenizer"])
    folder = existing_path(path, LAYOUT)
    if not folder.is_dir():
        raise WeightFileError(f"{folder}: is a file; expected {LAYOUT} (the checkpoint alone lacks the tokenizer).")
    checkpoints = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(checkpoints) != 1:
        found = ", ".join(p.name for p in checkpoints) or "none"
        raise WeightFileError(f"{folder}: expected exactly one checkpoint file ({'/'.join(WEIGHT_SUFFIXES)}), found {found}.")
    # The tokenizer's files in the folder itself, in tokenizer/, or in the folder it is published as (docs/recipes.md).
    tokenizer = next((folder / sub for sub in TOKENIZER_SUBFOLDERS if (folder / sub).is_dir()), folder)
    return checkpoints[0], tokenizer

