"""``unifl score``: scoring image files and folders with reward models, the table, CSV and JSON it writes."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from unifl.cli.score import add_command as add_score_command
from unifl.core.feedback.registry import REWARD_MODELS
from unifl.core.feedback.rewards.statistics import Colorfulness
from unifl.core.feedback.scoring import ScoreError, load_image, score_images


def _write_image(path, size=(24, 24), seed=0, caption=None):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return path


class PromptLength(nn.Module):
    """A prompt-aware reward that remembers what it was called with: score = characters in the prompt."""

    calls: list[tuple[tuple[int, ...], list[str]]] = []

    def forward(self, images, prompts):
        PromptLength.calls.append((tuple(images.shape), list(prompts)))
        return torch.tensor([float(len(p)) for p in prompts]) + images.mean(dim=(1, 2, 3)) * 0


@pytest.fixture
def prompt_length(monkeypatch):
    PromptLength.calls = []
    monkeypatch.setitem(REWARD_MODELS, "prompt-length", lambda path: PromptLength())
    return PromptLength


def _cli(*argv):
    parser = argparse.ArgumentParser(prog="unifl")
    add_score_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", *argv])
    return args.func(args)


def test_score_images_gives_each_reward_a_column(tmp_path, prompt_length):
    paths = [_write_image(tmp_path / f"{i}.png", size=(24, 24) if i < 3 else (32, 16), seed=i) for i in range(4)]
    rows = score_images(paths, {"colour": ("colorfulness", ""), "words": ("prompt-length", "")}, ["a", "bb", "ccc", "dddd"], batch_size=2)
    assert [row["words"] for row in rows] == [1.0, 2.0, 3.0, 4.0]
    expected = Colorfulness()(torch.stack([load_image(p) for p in paths[:3]]))
    assert np.allclose([row["colour"] for row in rows[:3]], expected.numpy(), atol=1e-6)
    # Batches hold consecutive images of one size, at most batch_size of them.
    assert [shape for shape, _ in prompt_length.calls] == [(2, 3, 24, 24), (1, 3, 24, 24), (1, 3, 16, 32)]


def test_the_command_prints_a_table_and_writes_csv_and_json(tmp_path, capsys, prompt_length):
    images = tmp_path / "images"
    images.mkdir()
    _write_image(images / "0001.png", seed=1, caption="a red cat")
    _write_image(images / "0002.jpg", seed=2, caption="a dog")
    _write_image(images / "0001.semantic.png", seed=3)  # a PeFL mask, not an image to score
    (images / "notes.md").write_text("not an image", encoding="utf-8")

    assert _cli(str(images), "--reward", "colour=colorfulness", "--reward", "words=prompt-length:", "--prompts-from", "captions", "--out", str(tmp_path / "scores")) == 0
    table = capsys.readouterr().out
    assert "0001.png" in table and "0002.jpg" in table and "semantic" not in table
    assert table.splitlines()[0].split() == ["image", "colour", "words"]
    assert table.splitlines()[-1].split()[0] == "mean" and table.splitlines()[-1].split()[2] == "7.0000"

    with open(tmp_path / "scores.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["prompt"], float(row["words"])) for row in rows] == [("a red cat", 9.0), ("a dog", 5.0)]
    summary = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert summary["rewards"] == {"colour": {"kind": "colorfulness", "path": ""}, "words": {"kind": "prompt-length", "path": ""}}
    assert summary["mean"]["words"] == 7.0 and len(summary["images"]) == 2


def test_one_prompt_for_every_image(tmp_path, capsys, prompt_length):
    image = _write_image(tmp_path / "a.png")
    assert _cli(str(image), "--reward", "words=prompt-length", "--prompt", "a photo", "--out", str(tmp_path / "out.json")) == 0
    assert prompt_length.calls[0][1] == ["a photo"]
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out.json").is_file()


def test_the_command_scores_with_a_real_loader(tmp_path, capsys):
    """A tiny LAION aesthetic model in its published layout, scored through the command."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model_dir = tmp_path / "laion"
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1, image_size=16, patch_size=8, projection_dim=8)
    CLIPVisionModelWithProjection(config).save_pretrained(str(model_dir / "clip"))
    torch.save({"weight": torch.full((1, 8), 0.1), "bias": torch.tensor([5.0])}, model_dir / "sa_0_4_vit_l_14_linear.pth")
    image = _write_image(tmp_path / "x.png", size=(40, 30))
    assert _cli(str(image), "--reward", f"aesthetic=laion-aesthetic:{model_dir}", "--out", str(tmp_path / "s")) == 0
    score = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["images"][0]["aesthetic"]
    assert abs(score - 5.0) <= 0.1 * 8**0.5  # bias 5 plus a unit embedding times a weight of norm 0.1·√8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--reward", "colorfulness"], "expected NAME=KIND:PATH"),
        (["--reward", "a=colorfulness", "--reward", "a=sharpness"], "the name 'a' is given twice"),
        (["--reward", "a=colorfulness", "--prompts-from", "captions"], r"have no caption file, e.g. .*img\.png: add img\.txt"),
    ],
)
def test_bad_input_is_named(tmp_path, argv, message):
    image = _write_image(tmp_path / "img.png")
    with pytest.raises(ScoreError, match=message):
        _cli(str(image), *argv, "--out", str(tmp_path / "s"))


def test_missing_and_non_image_paths_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ScoreError, match=r"notes\.txt: not an image"):
        _cli(str(tmp_path / "notes.txt"), "--reward", "c=colorfulness")
    with pytest.raises(ScoreError, match="no such file or folder"):
        _cli(str(tmp_path / "missing.png"), "--reward", "c=colorfulness")
    with pytest.raises(ScoreError, match="no images"):
        _cli(str(tmp_path), "--reward", "c=colorfulness")


class PerPixel(nn.Module):
    def forward(self, images, prompts):
        return images


def test_a_reward_with_the_wrong_output_shape_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(REWARD_MODELS, "per-pixel", lambda path: PerPixel())
    with pytest.raises(ScoreError, match=r"reward 'bad' \(per-pixel\) returned torch.Size\(\[1, 3, 24, 24\]\)"):
        score_images([_write_image(tmp_path / "a.png")], {"bad": ("per-pixel", "")})
