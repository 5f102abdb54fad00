"""CLIP models from local files, and the image–text similarity scorer that PickScore, CLIP score and HPSv2 share.

A CLIP model arrives in one of two forms:

* a Hugging Face folder, ``config.json`` plus ``model.safetensors`` / ``pytorch_model.bin`` (or shards),
  as ``save_pretrained`` writes it and as PickScore and ``openai/clip-vit-large-patch14`` are published;
* a bare state dict in transformers' key layout (a single ``.safetensors`` such as ComfyUI's
  ``models/clip_vision`` files, or an OpenCLIP checkpoint after :mod:`.hps` renamed its keys). Its
  architecture is read from the tensor shapes. Shapes cannot tell two things: the attention head count
  (64-wide heads, except the vision towers of ViT-H/14 (80) and ViT-bigG/14 (104), both 16 heads) and
  the activation (OpenAI's ViT-B/L use ``quick_gelu``, OpenCLIP's ViT-H/G ``gelu``); those follow the
  published models, and anything else should come as a folder whose ``config.json`` says so.

Weights are always loaded with an exact key and shape check (:func:`~..weight_files.load_exactly`):
transformers' ``from_pretrained`` would initialise a missing tower randomly with only a log line.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...weight_files import WeightFileError, count_indexed, existing_path, load_exactly, read_hf_folder_weights, read_state_dict, shape_of
from .clip_preprocess import clip_preprocess

FULL_CLIP = "a full CLIP model (a Hugging Face CLIPModel folder: config.json with model_type 'clip' and its weights)"
CLIP_VISION = "a CLIP image tower with projection (a Hugging Face CLIP folder, or a .safetensors of CLIPModel or CLIPVisionModelWithProjection weights)"
_WIDE_VISION_HEADS = {1280: 16, 1664: 16}  # ViT-H/14 (80-wide heads) and ViT-bigG/14 (104-wide)


def attention_heads(width: int, tower: str) -> int:
    """Head count of a published CLIP tower of this width (see the module docstring)."""
    if tower == "vision" and width in _WIDE_VISION_HEADS:
        return _WIDE_VISION_HEADS[width]
    return max(1, width // 64)


def vision_config_from_state(state: Mapping[str, torch.Tensor], path: str | Path, hidden_act: str | None = None, expected: str = CLIP_VISION):
    """A ``CLIPVisionConfig`` (with ``projection_dim``) read from transformers-layout vision weights."""
    from transformers import CLIPVisionConfig

    shape = partial(shape_of, state, path=path, expected=expected)
    width = shape("vision_model.embeddings.class_embedding")[-1]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    grid = math.isqrt(shape("vision_model.embeddings.position_embedding.weight")[0] - 1)
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=count_indexed(state, "vision_model.encoder.layers."),
        num_attention_heads=attention_heads(width, "vision"),
        image_size=patch * grid,
        patch_size=patch,
        projection_dim=shape("visual_projection.weight")[0],
        hidden_act=hidden_act or ("gelu" if width in _WIDE_VISION_HEADS else "quick_gelu"),
    )


def clip_config_from_state(state: Mapping[str, torch.Tensor], path: str | Path, tokenizer, hidden_act: str, expected: str = FULL_CLIP):
    """A ``CLIPConfig`` for both towers read from transformers-layout weights; token ids from ``tokenizer``."""
    from transformers import CLIPConfig

    shape = partial(shape_of, state, path=path, expected=expected)
    width = shape("text_model.embeddings.token_embedding.weight")[1]
    text = dict(
        vocab_size=shape("text_model.embeddings.token_embedding.weight")[0],
        hidden_size=width,
        intermediate_size=shape("text_model.encoder.layers.0.mlp.fc1.weight")[0],
        num_hidden_layers=count_indexed(state, "text_model.encoder.layers."),
        num_attention_heads=attention_heads(width, "text"),
        max_position_embeddings=shape("text_model.embeddings.position_embedding.weight")[0],
        projection_dim=shape("text_projection.weight")[0],
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = vision_config_from_state(state, path, hidden_act, expected).to_dict()
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=text["projection_dim"])


def load_clip(folder: str | Path):
    """A ``CLIPModel`` (both towers, float32, eval) from a Hugging Face folder."""
    from transformers import CLIPConfig, CLIPModel

    folder = _folder(folder, FULL_CLIP)
    config = _read_config(folder)
    if config.get("model_type") != "clip":
        raise WeightFileError(
            f"{folder / 'config.json'}: describes a {config.get('model_type')!r} model; expected {FULL_CLIP}. "
            "A vision-only CLIP cannot score prompts: pass the folder of the whole model."
        )
    model = CLIPModel(CLIPConfig.from_dict(config))
    load_exactly(model, without_position_ids(read_hf_folder_weights(folder, FULL_CLIP)), folder, FULL_CLIP)
    return model.eval()


def load_clip_vision(path: str | Path):
    """A ``CLIPVisionModelWithProjection`` (float32, eval) from a Hugging Face CLIP folder or a single file.

    A folder may hold a whole ``CLIPModel`` or only its vision tower; a file's text-tower keys, if any,
    are ignored. A single file gets OpenAI CLIP's architecture conventions (see the module docstring).
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = existing_path(path, CLIP_VISION)
    if path.is_dir():
        config = _read_config(path)
        if config.get("model_type") == "clip":
            config = {**config.get("vision_config", {}), "projection_dim": config.get("projection_dim", 512)}
        elif config.get("model_type") != "clip_vision_model":
            raise WeightFileError(f"{path / 'config.json'}: describes a {config.get('model_type')!r} model; expected {CLIP_VISION}.")
        vision_config = CLIPVisionConfig.from_dict(config)
        state = read_hf_folder_weights(path, CLIP_VISION)
    else:
        state = read_state_dict(path, CLIP_VISION)
        vision_config = vision_config_from_state(state, path)
    state = {k: v for k, v in without_position_ids(state).items() if k.startswith(("vision_model.", "visual_projection."))}
    model = CLIPVisionModelWithProjection(vision_config)
    load_exactly(model, state, path, CLIP_VISION)
    return model.eval()


def build_clip(state: Mapping[str, torch.Tensor], path: str | Path, tokenizer, hidden_act: str, expected: str = FULL_CLIP):
    """A ``CLIPModel`` holding ``state`` (transformers layout, both towers), its shape read from the tensors."""
    from transformers import CLIPModel

    model = CLIPModel(clip_config_from_state(state, path, tokenizer, hidden_act, expected))
    load_exactly(model, state, path, expected)
    return model.eval()


def without_position_ids(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without ``embeddings.position_ids``: transformers before 4.31 saved that constant ``arange``
    (PickScore_v1 and openai/clip-vit-large-patch14 files carry it); newer versions rebuild it."""
    return {key: value for key, value in state.items() if not key.endswith("embeddings.position_ids")}


def load_clip_tokenizer(folder: str | Path | None = None):
    """A ``CLIPTokenizer`` from ``folder``, or with ``None`` from CLIP's vocabulary shipped with UniFL.

    Every CLIP (OpenAI, OpenCLIP, PickScore, HPSv2) uses the same 49408-token BPE vocabulary, so a model
    published without tokenizer files still tokenizes exactly as its authors did with the shipped one.
    """
    from transformers import CLIPTokenizer

    from ...diffusion.loading import CLIP_VOCAB_DIR

    source = CLIP_VOCAB_DIR
    if folder is not None:
        source = _folder(folder, "a CLIP tokenizer folder")
        if not has_tokenizer_files(source):
            raise WeightFileError(f"{source}: has no vocab.json or tokenizer.json; expected a CLIP tokenizer folder. Leave the tokenizer out to use CLIP's vocabulary shipped with UniFL.")
    try:
        return CLIPTokenizer.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as err:
        raise WeightFileError(f"{source}: is not a readable CLIP tokenizer ({err}). Copy the tokenizer files again.") from None


def has_tokenizer_files(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() or (folder / "tokenizer.json").is_file()


class ClipSimilarity(nn.Module):
    """``scale × cos(image embedding, prompt embedding)`` of a CLIP model, one score per image.

    ``scale=None`` uses the model's own ``logit_scale.exp()`` (PickScore's score); a number fixes it
    (HPSv2: 1, the raw cosine; CLIP score: 100). ``fit`` is the preprocessing of :func:`clip_preprocess`.
    """

    def __init__(self, clip: nn.Module, tokenizer, *, scale: float | None = None, fit: str = "crop", source: str = ""):
        super().__init__()
        vocab_size = clip.config.text_config.vocab_size
        if len(tokenizer) > vocab_size:
            raise WeightFileError(f"{source}: the tokenizer has {len(tokenizer)} tokens but the model's text tower only {vocab_size}; pass the model's own tokenizer.")
        self.clip = clip
        self.tokenizer = tokenizer
        self.scale = scale
        self.fit = fit
        self.image_size = clip.config.vision_config.image_size
        self.max_length = clip.config.text_config.max_position_embeddings

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{type(self).__name__} needs one prompt per image: got {len(prompts)} prompt(s) for {images.shape[0]} image(s)")
        weight = self.clip.visual_projection.weight
        pixels = clip_preprocess(images, self.image_size, fit=self.fit).to(weight.dtype)
        image_embeds = self.clip.visual_projection(self.clip.vision_model(pixel_values=pixels).pooler_output)
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt").to(weight.device)
        text_out = self.clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        text_embeds = self.clip.text_projection(text_out.pooler_output)
        cosine = (F.normalize(image_embeds.float(), dim=-1) * F.normalize(text_embeds.float(), dim=-1)).sum(dim=-1)
        return cosine * (self.clip.logit_scale.exp().float() if self.scale is None else self.scale)


def _folder(path: str | Path, expected: str) -> Path:
    path = existing_path(path, expected)
    if not path.is_dir():
        raise WeightFileError(f"{path}: is a file; expected {expected}.")
    return path


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightFileError(f"{folder}: has no config.json; expected a Hugging Face model folder as save_pretrained writes it.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{folder / 'config.json'}: is not readable JSON ({err}). Copy the folder again.") from None
    if not isinstance(config, dict):
        raise WeightFileError(f"{folder / 'config.json'}: expected a JSON object. Copy the folder again.")
    return config
