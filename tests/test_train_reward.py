"""`unifl train-reward` end to end: JSONL pairs on disk → one model per aspect (+ global), α in the file."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from unifl.cli import main
from unifl.core.data import DataError
from unifl.core.feedback.loading import load_reward_model
from unifl.core.feedback.rewards.files import load_reward_file
from unifl.core.training.aspect_rewards import train_aspect_models
from unifl.core.training.preference_data import read_pairs
from unifl.pocket.world.degrade import preference_pair
from unifl.pocket.world.world import WorldConfig


def save_png(tensor, path):
    Image.fromarray((tensor.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory):
    """24 pocket-world pairs per aspect (colour, detail), written as a user would: PNGs + JSONL."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for aspect in ("color", "detail"):
        for i in range(24):
            caption, better, worse = preference_pair(rng, WorldConfig(resolution=32), aspect, strength=0.9)
            a, b = (better, worse) if i % 2 == 0 else (worse, better)  # the preferred image is not always "a"
            save_png(a, root / "img" / f"{aspect}{i}a.png")
            save_png(b, root / "img" / f"{aspect}{i}b.png")
            lines.append(json.dumps({"prompt": caption, "image_a": f"img/{aspect}{i}a.png", "image_b": f"img/{aspect}{i}b.png", "preferred": "a" if i % 2 == 0 else "b", "aspect": aspect}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def test_reads_pairs_by_aspect_with_the_preferred_image_first(pair_file):
    pairs = read_pairs(pair_file, 32)
    assert set(pairs) == {"color", "detail"} and len(pairs["detail"]) == 24
    sharp = lambda x: (x[:, :, 1:, :].float() - x[:, :, :-1, :].float()).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (sharp(pairs["detail"].better) > sharp(pairs["detail"].worse)).float().mean() > 0.9


def test_trains_one_model_per_aspect_and_a_global_one(pair_file, tmp_path):
    results = train_aspect_models(pair_file, tmp_path / "rewards", backbone="pocket", steps=40, batch_size=8, val_fraction=0.25, include_global=True, resolution=32, alpha_quantiles={"detail": 0.25})
    assert {r.aspect for r in results} == {"color", "detail", "global"}
    for r in results:
        _, meta = load_reward_file(r.path)
        assert float(meta["unifl.alpha"]) == pytest.approx(r.alpha) and meta["unifl.aspect"] == r.aspect
        assert 0.0 <= r.val_accuracy <= 1.0 and r.val_pairs == (12 if r.aspect == "global" else 6)
    detail = next(r for r in results if r.aspect == "detail")
    assert "quantile 0.25" in load_reward_file(detail.path)[1]["unifl.alpha_rule"]
    model = load_reward_model("pocket-reward", str(detail.path))
    assert model.alpha == pytest.approx(detail.alpha)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(images, ["a red circle", ""]).sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_aspect_models(pair_file, tmp_path / "rewards", backbone="pocket", steps=1, resolution=32)


def test_a_stop_keeps_the_finished_aspects_and_drops_the_one_in_training(pair_file, tmp_path):
    asked = []

    def stop_in_the_second_aspect():
        asked.append(True)
        return len(asked) == 5 + 3  # 5 steps of "color", then 2 steps of "detail"

    results = train_aspect_models(pair_file, tmp_path / "rewards", backbone="pocket", steps=5, batch_size=8, resolution=32, should_stop=stop_in_the_second_aspect)
    assert [r.aspect for r in results] == ["color"] and len(asked) == 8
    assert sorted(p.name for p in (tmp_path / "rewards").glob("*")) == ["color.safetensors"]


def test_bad_rows_are_listed_with_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "image_a": "a.png", "image_b": "b.png", "preferred": "c", "aspect": "color"}\nnot json\n{"prompt": "x"}\n')
    with pytest.raises(DataError, match=r"3 bad row\(s\)(.|\n)*line 1: preferred = 'c'(.|\n)*line 2: not JSON(.|\n)*line 3: missing image_a"):
        read_pairs(bad, 32)


def test_cli_prints_the_table(pair_file, tmp_path, capsys):
    assert main(["train-reward", str(pair_file), "--out", str(tmp_path / "cli"), "--steps", "5", "--batch-size", "4", "--resolution", "32"]) == 0
    out = capsys.readouterr().out
    assert "val acc" in out and "color" in out and "detail" in out


def test_clip_backbone_trains_only_its_head(pair_file, tmp_path):
    from transformers import CLIPConfig, CLIPModel
    from unifl.core.diffusion.tiny import write_clip_tokenizer

    folder = tmp_path / "clip"
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    write_clip_tokenizer(folder, ["a", "red", "circle"])
    results = train_aspect_models(pair_file, tmp_path / "clip-rewards", backbone=f"clip:{folder}", steps=3, batch_size=4)
    reward = load_reward_model("clip-reward", str(results[0].path))
    assert reward.alpha == pytest.approx(results[0].alpha)
    state, _ = load_reward_file(results[0].path)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}, "only the head is saved"
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    reward(images, ["a red circle", "a circle"]).sum().backward()
    assert images.grad.abs().sum() > 0
