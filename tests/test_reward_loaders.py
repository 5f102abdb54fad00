"""The reward-model loaders, on tiny randomly initialised models saved in the published file layouts.

No real scorer weights exist on the test machines, so every test builds a tiny model whose keys are
the real ones (tiny widths, same names and ranks), saves it the way its authors did, loads it through
the registry and checks: scores of shape ``[B]``, gradients reaching the images, the loaded weights
equal to the saved ones, agreement with a straightforward re-implementation of the original forward,
and a clear :class:`WeightFileError` naming the file when the file does not fit.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from unifl.core.diffusion.tiny import write_clip_tokenizer
from unifl.core.feedback.loading import load_reward_model
from unifl.core.feedback.rewards.clip_preprocess import CLIP_MEAN, CLIP_STD, clip_preprocess
from unifl.core.weight_files import WeightFileError

WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue"]
PROMPTS = ["a photo of a cat", "a red dog"]
WIDTH, PROJECTION, IMAGE, PATCH = 32, 12, 32, 8


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """Random values everywhere (LayerNorm weights too), so equality checks cannot pass by default values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return module


def _images(batch: int = 2, height: int = 40, width: int = 48) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1), requires_grad=True)


def _assert_differentiable(model: nn.Module, images: torch.Tensor, prompts=PROMPTS) -> torch.Tensor:
    scores = model(images, prompts)
    assert scores.shape == (images.shape[0],) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())
    return scores.detach()


@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip-tokenizer")
    write_clip_tokenizer(folder, words=WORDS)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(clip_tokenizer_dir):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text = dict(vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=16, **ids)
    vision = dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1, image_size=IMAGE, patch_size=PATCH)
    torch.manual_seed(0)
    return _perturb(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION)), seed=0).eval()


def _clip_image_embeddings(clip, images: torch.Tensor) -> torch.Tensor:
    pixels = clip_preprocess(images, IMAGE)
    return clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output)


# -- preprocessing ----------------------------------------------------------------------------------


def test_clip_preprocess_crops_the_centre_and_normalises():
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    square = torch.rand(1, 3, 32, 32)
    assert torch.allclose(clip_preprocess(square, 32), (square - mean) / std)  # already the size: no resampling
    wide = torch.rand(2, 3, 40, 64, requires_grad=True)
    out = clip_preprocess(wide, 32)
    assert out.shape == (2, 3, 32, 32)
    out.sum().backward()
    assert wide.grad[..., :, :8].abs().sum() == 0 and wide.grad[..., :, 24:40].abs().sum() > 0  # the sides are cropped away


def test_clip_preprocess_pad_fits_the_long_side_and_pads_black():
    tall = torch.rand(1, 3, 64, 32)
    out = clip_preprocess(tall, 32, fit="pad")
    black = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, :, :8], black.view(3, 1, 1).expand(3, 32, 8))
    assert torch.allclose(out[0, :, :, 24:], black.view(3, 1, 1).expand(3, 32, 8))


# -- LAION aesthetic --------------------------------------------------------------------------------


MLP_WIDTHS = (PROJECTION, 20, 10, 8, 4)  # the published head: (768, 1024, 128, 64, 16)


def _improved_aesthetic_head(seed: int = 2) -> dict[str, torch.Tensor]:
    """``sac+logos+ava1-l14-linearMSE.pth``'s keys: Linear layers at indices 0, 2, 4, 6, 7 of ``layers``."""
    generator = torch.Generator().manual_seed(seed)
    state, widths = {}, (*MLP_WIDTHS, 1)
    for index, (w_in, w_out) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        state[f"layers.{index}.weight"] = torch.randn(w_out, w_in, generator=generator) / w_in**0.5
        state[f"layers.{index}.bias"] = torch.randn(w_out, generator=generator) * 0.1
    return state


def _original_mlp(state: dict[str, torch.Tensor], embeddings: torch.Tensor) -> torch.Tensor:
    """improved-aesthetic-predictor's forward: normalized() then its Linear layers, no activations."""
    norms = embeddings.norm(dim=-1, keepdim=True)
    x = embeddings / torch.where(norms == 0, torch.ones_like(norms), norms)
    for index in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    return x.squeeze(-1)


def test_laion_aesthetic_from_a_folder_matches_the_original_forward(tmp_path, tiny_clip):
    tiny_clip.save_pretrained(str(tmp_path / "clip"))
    head = _improved_aesthetic_head()
    torch.save(head, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    model = load_reward_model("laion-aesthetic", str(tmp_path))

    images = _images()
    scores = _assert_differentiable(model, images)
    with torch.no_grad():
        expected = _original_mlp(head, _clip_image_embeddings(tiny_clip, images))
    assert torch.allclose(scores, expected, atol=1e-5)
    for key, value in head.items():
        assert torch.equal(model.head.state_dict()[key], value)
    assert torch.equal(model.vision.visual_projection.weight, tiny_clip.visual_projection.weight)
    assert getattr(model, "alpha", None) is None


def test_laion_linear_head_from_named_parts_with_alpha(tmp_path, tiny_clip):
    save_file({k: v.contiguous() for k, v in _with_old_position_ids(tiny_clip.state_dict()).items()}, str(tmp_path / "clip-vit-l-14.safetensors"))
    head = {"weight": torch.randn(1, PROJECTION), "bias": torch.randn(1)}  # sa_0_4_vit_l_14_linear.pth
    save_file(head, str(tmp_path / "linear-head.safetensors"), metadata={"unifl.alpha": "5.5"})
    model = load_reward_model("laion-aesthetic", f"clip={tmp_path / 'clip-vit-l-14.safetensors'};head={tmp_path / 'linear-head.safetensors'}")

    images = _images()
    scores = _assert_differentiable(model, images)
    with torch.no_grad():
        embeddings = _clip_image_embeddings(tiny_clip, images)
        expected = (embeddings / embeddings.norm(dim=-1, keepdim=True)) @ head["weight"].T + head["bias"]
    assert torch.allclose(scores, expected.squeeze(-1), atol=1e-5)
    assert model.alpha == 5.5


def test_laion_rejects_a_head_for_another_clip_width(tmp_path, tiny_clip):
    tiny_clip.save_pretrained(str(tmp_path / "clip"))
    head = {"weight": torch.randn(1, 768), "bias": torch.randn(1)}
    torch.save(head, tmp_path / "head.pth")
    with pytest.raises(WeightFileError, match=r"head\.pth.*768-d.*12-d"):
        load_reward_model("laion-aesthetic", str(tmp_path))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda state: state.pop("layers.4.bias"), r"missing: layers\.4\.bias"),
        (lambda state: state.update({"layers.4.bias": torch.zeros(3)}), r"wrong shape: layers\.4\.bias \(3,\)"),
        (lambda state: state.update({"layers.9.weight": torch.zeros(1, 1)}), r"unexpected: layers\.9\.weight"),
    ],
)
def test_laion_rejects_a_head_that_does_not_match(tmp_path, tiny_clip, corrupt, message):
    tiny_clip.save_pretrained(str(tmp_path / "clip"))
    head = _improved_aesthetic_head()
    corrupt(head)
    torch.save(head, tmp_path / "head.pth")
    with pytest.raises(WeightFileError, match=r"head\.pth.*" + message):
        load_reward_model("laion-aesthetic", str(tmp_path))


def test_laion_folder_layout_errors_name_the_problem(tmp_path, tiny_clip):
    with pytest.raises(WeightFileError, match="neither clip/ nor clip.safetensors"):
        load_reward_model("laion-aesthetic", str(tmp_path))
    tiny_clip.save_pretrained(str(tmp_path / "clip"))
    torch.save(_improved_aesthetic_head(), tmp_path / "a.pth")
    torch.save(_improved_aesthetic_head(), tmp_path / "b.pth")
    with pytest.raises(WeightFileError, match=r"exactly one head file.*a\.pth, b\.pth"):
        load_reward_model("laion-aesthetic", str(tmp_path))
    with pytest.raises(WeightFileError, match="expected both parts"):
        load_reward_model("laion-aesthetic", f"clip={tmp_path / 'clip'}")
    with pytest.raises(WeightFileError, match="no such file"):
        load_reward_model("laion-aesthetic", str(tmp_path / "missing"))


class _NotATensor:
    pass


def test_a_pickle_with_python_objects_is_refused(tmp_path, tiny_clip):
    tiny_clip.save_pretrained(str(tmp_path / "clip"))
    torch.save({**_improved_aesthetic_head(), "trainer": _NotATensor()}, tmp_path / "head.pth")
    with pytest.raises(WeightFileError, match=r"head\.pth: holds Python objects besides tensors"):
        load_reward_model("laion-aesthetic", str(tmp_path))


# -- PickScore and CLIP score -----------------------------------------------------------------------


def _reference_similarity(clip, tokenizer_dir, images: torch.Tensor) -> torch.Tensor:
    """transformers' own CLIPModel.forward: logits_per_image = logit_scale.exp() · cos, per (image, prompt) pair."""
    from transformers import CLIPTokenizer

    tokens = CLIPTokenizer.from_pretrained(str(tokenizer_dir))(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = clip(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=clip_preprocess(images, IMAGE))
    return out.logits_per_image.diagonal()


def _with_old_position_ids(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What transformers < 4.31 saved (PickScore_v1, openai/clip-vit-large-patch14): position_ids buffers too."""
    return {**state, "text_model.embeddings.position_ids": torch.arange(16)[None], "vision_model.embeddings.position_ids": torch.arange(17)[None]}


@pytest.fixture
def clip_folder(tmp_path, tiny_clip, clip_tokenizer_dir):
    folder = tmp_path / "PickScore_v1"
    tiny_clip.save_pretrained(str(folder))
    torch.save(_with_old_position_ids(tiny_clip.state_dict()), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink(missing_ok=True)  # transformers < 4.35 saves only pytorch_model.bin
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((clip_tokenizer_dir / name).read_bytes())
    return folder


def test_pickscore_is_the_logit_scaled_cosine(clip_folder, tiny_clip, clip_tokenizer_dir):
    model = load_reward_model("pickscore", str(clip_folder))
    images = _images()
    scores = _assert_differentiable(model, images)
    assert torch.allclose(scores, _reference_similarity(tiny_clip, clip_tokenizer_dir, images), atol=1e-4)
    for key, value in tiny_clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], value), key


def test_clip_score_is_100_times_the_cosine(clip_folder, tiny_clip, clip_tokenizer_dir):
    model = load_reward_model("clip-score", f"model={clip_folder};tokenizer={clip_tokenizer_dir}")
    images = _images()
    scores = _assert_differentiable(model, images)
    expected = _reference_similarity(tiny_clip, clip_tokenizer_dir, images) / tiny_clip.logit_scale.exp() * 100
    assert torch.allclose(scores, expected, atol=1e-3)
    with pytest.raises(ValueError, match="one prompt per image"):
        model(images, PROMPTS[:1])


def test_a_clip_folder_without_tokenizer_uses_the_shipped_vocabulary(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1, max_position_embeddings=77)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1, image_size=IMAGE, patch_size=PATCH)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(str(tmp_path))
    model = load_reward_model("pickscore", str(tmp_path))
    assert len(model.tokenizer) == 49408
    assert model.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert model(torch.rand(1, 3, IMAGE, IMAGE), ["a photo of a cat"]).shape == (1,)


def test_pickscore_rejects_a_vision_only_folder_and_missing_weights(tmp_path, tiny_clip):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision_only = tmp_path / "vision"
    config = CLIPVisionConfig(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, image_size=IMAGE, patch_size=PATCH)
    CLIPVisionModelWithProjection(config).save_pretrained(str(vision_only))
    with pytest.raises(WeightFileError, match=r"vision.config\.json.*'clip_vision_model'.*vision-only"):
        load_reward_model("pickscore", str(vision_only))

    broken = tmp_path / "broken"
    tiny_clip.save_pretrained(str(broken))
    (broken / "pytorch_model.bin").unlink(missing_ok=True)  # what transformers < 4.35 saves instead
    state = {k: v.contiguous() for k, v in tiny_clip.state_dict().items()}
    del state["text_projection.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(WeightFileError, match=r"broken.*missing: text_projection\.weight"):
        load_reward_model("pickscore", f"model={broken}")


# -- HPSv2 ------------------------------------------------------------------------------------------


class _OpenClipBlock(nn.Module):
    """OpenCLIP's ResidualAttentionBlock (names ln_1, attn (nn.MultiheadAttention), ln_2, mlp.c_fc, mlp.c_proj)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(), c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _OpenClipTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([_OpenClipBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class _OpenClipVisual(nn.Module):
    def __init__(self, width, layers, heads, patch, image, embed):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn((image // patch) ** 2 + 1, width) * 0.1)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _OpenClipTransformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed) * width**-0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class OpenClipReference(nn.Module):
    """OpenCLIP's ``CLIP`` (ViT image tower) with its key names, as the reference the key map must agree with."""

    def __init__(self, vision_width=WIDTH, vision_layers=2, vision_heads=1, patch=PATCH, image=IMAGE, text_width=WIDTH, text_layers=2, text_heads=1, context=16, vocab=100, embed=PROJECTION):
        super().__init__()
        self.visual = _OpenClipVisual(vision_width, vision_layers, vision_heads, patch, image, embed)
        self.token_embedding = nn.Embedding(vocab, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context, text_width) * 0.1)
        self.transformer = _OpenClipTransformer(text_width, text_layers, text_heads)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed) * text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        causal = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        x = self.transformer(self.token_embedding(ids) + self.positional_embedding, causal)
        return self.ln_final(x)[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


def test_hpsv2_matches_the_openclip_forward(tmp_path, clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    torch.manual_seed(3)
    reference = _perturb(OpenClipReference(vocab=len(tokenizer)), seed=3).eval()
    state = {**reference.state_dict(), "attn_mask": torch.full((16, 16), float("-inf")).triu(1)}
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "HPS_v2.1_compressed.pt")
    model = load_reward_model("hpsv2", f"checkpoint={tmp_path / 'HPS_v2.1_compressed.pt'};tokenizer={clip_tokenizer_dir}")

    images = _images(height=IMAGE, width=IMAGE)
    scores = _assert_differentiable(model, images)
    ids = tokenizer(PROMPTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        image_features = nn.functional.normalize(reference.visual(clip_preprocess(images, IMAGE, fit="pad")), dim=-1)
        text_features = nn.functional.normalize(reference.encode_text(ids), dim=-1)
    assert torch.allclose(scores, (image_features @ text_features.T).diagonal(), atol=1e-5)
    loaded = model.clip.state_dict()
    assert torch.equal(loaded["text_projection.weight"], state["text_projection"].T)
    assert torch.equal(loaded["vision_model.encoder.layers.1.self_attn.k_proj.weight"], state["visual.transformer.resblocks.1.attn.in_proj_weight"][WIDTH : 2 * WIDTH])
    assert model.clip.config.vision_config.hidden_act == "gelu"


def test_the_real_vit_h_14_layout_becomes_laions_clip_h_config():
    """HPSv2's checkpoint is OpenCLIP ViT-H-14: its keys (a few written out below) map onto exactly that CLIPModel."""
    from transformers import CLIPModel
    from unifl.core.feedback.rewards.clip_models import clip_config_from_state, load_clip_tokenizer, without_position_ids
    from unifl.core.feedback.rewards.hps import openclip_to_transformers

    with torch.device("meta"):
        vit_h = OpenClipReference(1280, 32, 16, 14, 224, 1024, 24, 16, 77, 49408, 1024)
    state = vit_h.state_dict()
    published = {
        "visual.conv1.weight": (1280, 3, 14, 14),
        "visual.class_embedding": (1280,),
        "visual.positional_embedding": (257, 1280),
        "visual.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "visual.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
        "visual.proj": (1280, 1024),
        "token_embedding.weight": (49408, 1024),
        "positional_embedding": (77, 1024),
        "transformer.resblocks.23.attn.out_proj.weight": (1024, 1024),
        "ln_final.bias": (1024,),
        "text_projection": (1024, 1024),
        "logit_scale": (),
    }
    assert {key: tuple(state[key].shape) for key in published} == published
    converted = openclip_to_transformers(state)
    config = clip_config_from_state(converted, "ViT-H-14", load_clip_tokenizer(), hidden_act="gelu")
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size, vision.patch_size, vision.image_size) == (1280, 32, 16, 5120, 14, 224)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size, text.max_position_embeddings, text.vocab_size) == (1024, 24, 16, 4096, 77, 49408)
    assert config.projection_dim == 1024 and text.eos_token_id == 49407
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in without_position_ids(CLIPModel(config).state_dict()).items()}
    assert {key: tuple(value.shape) for key, value in converted.items()} == expected


def test_hpsv2_rejects_an_image_tower_alone_and_foreign_keys(tmp_path):
    state = OpenClipReference().state_dict()
    torch.save({"state_dict": {k: v for k, v in state.items() if k.startswith("visual.")}}, tmp_path / "visual.pt")
    with pytest.raises(WeightFileError, match=r"visual\.pt: has no token_embedding\.weight, text_projection.*both the image and the text tower"):
        load_reward_model("hpsv2", str(tmp_path / "visual.pt"))
    torch.save({**state, "text.transformer.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, tmp_path / "custom.pt")
    with pytest.raises(WeightFileError, match=r"custom\.pt: has keys an OpenCLIP ViT does not \(text\.transformer"):
        load_reward_model("hpsv2", str(tmp_path / "custom.pt"))


# -- ImageReward ------------------------------------------------------------------------------------


class _BlipAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * (width // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, width))


class _BlipBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _BlipAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(width, 4 * width), act=nn.GELU(), fc2=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlipViTReference(nn.Module):
    """BLIP's ``VisionTransformer`` (timm names: cls_token, pos_embed, patch_embed.proj, blocks.N.*, norm)."""

    def __init__(self, width=WIDTH, layers=2, heads=1, patch=PATCH, image=IMAGE):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, width) * 0.1)
        self.blocks = nn.ModuleList([_BlipBlock(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


#: A few of the real ``ImageReward.pt`` text-encoder keys (BLIP's med BertModel), which must load.
MED_KEYS = (
    "blip.text_encoder.embeddings.word_embeddings.weight",
    "blip.text_encoder.embeddings.position_ids",
    "blip.text_encoder.encoder.layer.0.attention.self.query.weight",
    "blip.text_encoder.encoder.layer.0.attention.output.LayerNorm.weight",
    "blip.text_encoder.encoder.layer.0.crossattention.self.key.weight",
    "blip.text_encoder.encoder.layer.1.crossattention.output.dense.bias",
    "blip.text_encoder.encoder.layer.1.intermediate.dense.weight",
    "blip.text_encoder.encoder.layer.1.output.LayerNorm.bias",
)


@pytest.fixture
def imagereward_files(tmp_path):
    """A tiny ImageReward.pt in the published layout, and a BERT tokenizer folder."""
    from transformers import BlipTextConfig, BlipTextModel

    tokenizer_dir = tmp_path / "bert-base-uncased"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    torch.manual_seed(4)
    vit = _perturb(BlipViTReference(), seed=4).eval()
    text_config = BlipTextConfig(vocab_size=len(WORDS) + 7, hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=40, encoder_hidden_size=WIDTH, is_decoder=True, bos_token_id=2, eos_token_id=3, sep_token_id=3, pad_token_id=0)
    text = _perturb(BlipTextModel(text_config, add_pooling_layer=False), seed=5)
    mlp = {f"mlp.{key}": value for key, value in _improved_aesthetic_head(seed=6).items()}
    mlp["mlp.layers.0.weight"] = torch.randn(MLP_WIDTHS[1], 24) / 24**0.5  # the head reads the 24-d [CLS] state
    state = {f"blip.visual_encoder.{k}": v for k, v in vit.state_dict().items()}
    state |= {f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()}
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)
    state |= mlp | {"blip.vision_proj.weight": torch.randn(8, WIDTH), "blip.text_proj.weight": torch.randn(8, 24)}
    assert all(key in state for key in MED_KEYS)
    torch.save(state, tmp_path / "ImageReward.pt")
    return tmp_path / "ImageReward.pt", tokenizer_dir, vit, state


def test_imagereward_matches_blip_and_its_head(imagereward_files):
    from unifl.core.feedback.rewards.imagereward import SCORE_MEAN, SCORE_STD

    checkpoint, tokenizer_dir, vit, state = imagereward_files
    model = load_reward_model("imagereward", f"checkpoint={checkpoint};tokenizer={tokenizer_dir}")
    images = _images()
    scores = _assert_differentiable(model, images)

    pixels = clip_preprocess(images.detach(), IMAGE)
    with torch.no_grad():
        image_tokens = vit(pixels)
        assert torch.allclose(model.vision(pixel_values=pixels).last_hidden_state, image_tokens, atol=1e-5)
        tokens = model.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        cls = model.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], encoder_hidden_states=image_tokens).last_hidden_state[:, 0]
        head = {key[len("mlp."):]: value for key, value in state.items() if key.startswith("mlp.")}
        x = cls
        for index in (0, 2, 4, 6, 7):
            x = x @ head[f"layers.{index}.weight"].T + head[f"layers.{index}.bias"]
    assert torch.allclose(scores, ((x - SCORE_MEAN) / SCORE_STD).squeeze(-1), atol=1e-5)
    text_state = model.text.state_dict()
    for key in MED_KEYS[2:]:
        assert torch.equal(text_state[key[len("blip.text_encoder."):]], state[key])


def test_imagereward_from_a_folder_and_its_errors(imagereward_files, tmp_path):
    checkpoint, tokenizer_dir, _, state = imagereward_files
    folder = tmp_path / "ImageReward"
    folder.mkdir()
    (folder / "ImageReward.pt").write_bytes(checkpoint.read_bytes())
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_bytes((tokenizer_dir / "vocab.txt").read_bytes())
    assert load_reward_model("imagereward", str(folder))(torch.rand(1, 3, IMAGE, IMAGE), ["a cat"]).shape == (1,)
    (folder / "tokenizer").rename(folder / "bert-base-uncased")  # the recipe's layout: the tokenizer under its published name
    assert load_reward_model("imagereward", str(folder))(torch.rand(1, 3, IMAGE, IMAGE), ["a cat"]).shape == (1,)

    with pytest.raises(WeightFileError, match="the checkpoint alone lacks the tokenizer"):
        load_reward_model("imagereward", str(checkpoint))
    torch.save({k: v for k, v in state.items() if not k.startswith("mlp.")}, tmp_path / "no-head.pt")
    with pytest.raises(WeightFileError, match=r"no-head\.pt: has no layers\.0\.weight"):
        load_reward_model("imagereward", f"checkpoint={tmp_path / 'no-head.pt'};tokenizer={tokenizer_dir}")
    (tokenizer_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]), encoding="utf-8")
    with pytest.raises(WeightFileError, match=r"ImageReward\.pt: its text encoder knows 14 tokens but the tokenizer has 45"):
        load_reward_model("imagereward", f"checkpoint={checkpoint};tokenizer={tokenizer_dir}")
