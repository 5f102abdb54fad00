"""The tab's form ↔ config translation (no gradio, no webui): lossless, validated, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from unifl.core.config import PRESETS, ConfigError, parse_override, to_dict
from unifl.webui_extension import form


def _form_of(preset: str) -> dict:
    config = form.preset_config(preset, "")
    rewards, perception = form.feedback_values(config)
    return dict(values=form.form_values(config), rewards=rewards, perception=perception)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_an_untouched_form_trains_exactly_the_preset(preset, tmp_path):
    shown = _form_of(preset)
    config = form.build_config(preset=preset, model_path="/models/x.safetensors", run_dir=tmp_path / "run", init_from="",
                               unifl_dir=tmp_path, extra="", **shown)
    expected = to_dict(form.preset_config(preset, ""))
    got = to_dict(config)
    assert got["model"].pop("path") == "/models/x.safetensors" and expected["model"].pop("path", "") in ("", "pocket")
    assert got["logging"].pop("output_dir") == str(tmp_path / "run")
    expected["logging"].pop("output_dir")
    for section in ("rewards", "perception"):  # one dropdown per aspect: the order is the form's
        for tables in (got, expected):
            tables[section] = sorted(tables.get(section, []), key=lambda table: table["aspect"])
    assert got == expected


def test_fields_and_extra_lines_override_the_preset_in_that_order(tmp_path):
    shown = _form_of("tiny")
    shown["values"] |= {"optim.max_steps": 7.0, "optim.learning_rate": 5e-05, "logging.validation_prompts": "a red circle\n\n a blue square ", "stage": "2"}
    shown["rewards"] |= {"color": form.OFF}
    config = form.build_config(preset="tiny", model_path="m", run_dir=tmp_path, init_from="/loras/stage1.safetensors", unifl_dir=tmp_path,
                               extra="# comment\noptim.seed=3\n\nlora.rank=8", **shown)
    assert (config.optim.max_steps, config.optim.learning_rate, config.optim.seed, config.lora.rank) == (7, 5e-05, 3, 8)
    assert config.stage == "2" and config.lora.init_from == "/loras/stage1.safetensors"
    assert config.logging.validation_prompts == ["a red circle", "a blue square"]
    assert sorted(r.aspect for r in config.rewards) == ["detail", "lighting"]


@pytest.mark.parametrize("text", ["C:\\models\\sd 1.5\\v1.safetensors", 'say "hi"\n', "ünïcode ✓", ""])
def test_strings_survive_the_trip_through_an_override(text):
    assert parse_override(f"k={form.toml_literal(text)}") == {"k": text}


def test_bad_values_are_refused_with_the_field_named(tmp_path):
    shown = _form_of("tiny")
    shown["values"]["optim.max_steps"] = 2.5
    with pytest.raises(form.FormError, match=r"Steps \(optim.max_steps\) = 2.5: enter a whole number"):
        form.build_config(preset="tiny", model_path="m", run_dir=tmp_path, init_from="", unifl_dir=tmp_path, extra="", **_form_of("tiny") | {"values": shown["values"]})
    with pytest.raises(ConfigError, match="unknown config key 'optim.max_step'"):
        form.build_config(preset="tiny", model_path="m", run_dir=tmp_path, init_from="", unifl_dir=tmp_path, extra="optim.max_step=3", **_form_of("tiny"))
    with pytest.raises(form.FormError, match="press 🔄 Refresh lists, then pick one from the color reward list"):
        form.build_config(preset="tiny", model_path="m", run_dir=tmp_path, init_from="", unifl_dir=tmp_path, extra="",
                          **_form_of("tiny") | {"rewards": {"color": "vanished: reward.safetensors"}})


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "-dash", "a\\b"])
def test_lora_names_that_are_not_plain_file_stems_are_refused(name):
    with pytest.raises(form.FormError, match="LoRA name"):
        form.check_output_name(name)


def test_model_files_with_a_loader_in_their_metadata_are_offered(tmp_path):
    import torch
    from safetensors.torch import save_file

    rewards = tmp_path / "rewards"
    rewards.mkdir()
    save_file({"w": torch.zeros(1)}, str(rewards / "mine.safetensors"), metadata={"unifl.kind": "pocket-reward", "unifl.alpha": "0.1"})
    save_file({"w": torch.zeros(1)}, str(rewards / "foreign.safetensors"))
    (rewards / "half-copied.safetensors").write_bytes(b"\x00\x01")
    catalog = form.model_catalog("rewards", tmp_path)
    assert catalog["pocket-reward: mine.safetensors"] == {"kind": "pocket-reward", "path": str(rewards / "mine.safetensors")}
    assert not any("foreign" in label or "half-copied" in label for label in catalog)
    assert "sharpness · image statistic (α -1)" in catalog  # what the presets use is always offered, statistics said to be


def test_the_auto_preset_follows_the_model_family(tiny_sd15_dir, tiny_sdxl_dir):
    assert form.resolve_preset(form.AUTO_PRESET, str(tiny_sd15_dir)) == "sd15"
    assert form.resolve_preset(form.AUTO_PRESET, str(tiny_sdxl_dir)) == "sdxl"
    assert form.resolve_preset(form.AUTO_PRESET, "pocket") == "pocket"
    assert form.resolve_preset("tiny", str(tiny_sdxl_dir)) == "tiny"


def test_stage_two_can_start_from_any_lora_in_the_lora_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.safetensors", "sub/b.safetensors", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert form.lora_choices(tmp_path) == {form.NO_LORA: "", "a.safetensors": str(tmp_path / "a.safetensors"), str(Path("sub/b.safetensors")): str(tmp_path / "sub/b.safetensors")}
    assert form.lora_choices(tmp_path / "missing") == {form.NO_LORA: ""}


def test_a_preset_without_feedback_models_starts_from_the_public_model_recipe(tmp_path):
    """sd15/sdxl name no models: the dropdowns show the published models found in the UniFL folder, and
    image statistics, labelled as such, for the reward aspects without one; none is ever all "off"."""
    config = form.preset_config("sd15", "")
    assert not config.rewards and not config.perception
    rewards, perception = form.shown_feedback(config, tmp_path)
    assert rewards == {"color": "colorfulness · image statistic (α 0.5)", "layout": form.OFF,
                       "detail": "sharpness · image statistic (α -1)", "lighting": "exposure · image statistic (α 0.3)"}
    assert set(perception.values()) == {form.OFF}

    (tmp_path / "rewards" / "PickScore_v1").mkdir(parents=True)
    (tmp_path / "rewards" / "HPS_v2.1_compressed.pt").write_bytes(b"")
    (tmp_path / "perception").mkdir()
    (tmp_path / "perception" / "vgg16-397923af.pth").write_bytes(b"")
    rewards, perception = form.shown_feedback(config, tmp_path)
    assert rewards["color"] == f"hpsv2: {tmp_path / 'rewards' / 'HPS_v2.1_compressed.pt'} (α 0.28)"
    assert rewards["layout"] == f"pickscore: {tmp_path / 'rewards' / 'PickScore_v1'} (α 21.5)"
    assert rewards["detail"] == "sharpness · image statistic (α -1)"  # no ImageReward here
    assert perception["style"] == f"vgg16: {tmp_path / 'perception' / 'vgg16-397923af.pth'}"
    built = form.build_config(preset="sd15", model_path="m", run_dir=tmp_path / "run", init_from="", unifl_dir=tmp_path, extra="",
                              values=form.form_values(config), rewards=rewards, perception=perception)
    assert {(r.aspect, r.kind, r.threshold, r.weight) for r in built.rewards} == {("color", "hpsv2", 0.28, 20.0), ("layout", "pickscore", 21.5, 1.0),
                                                                                 ("detail", "sharpness", -1.0, 1.0), ("lighting", "exposure", 0.3, 1.0)}
    assert [(p.aspect, p.kind, p.path) for p in built.perception] == [("style", "vgg16", str(tmp_path / "perception" / "vgg16-397923af.pth"))]

    # The recipe's structure and layout models are offered once present, but never on by default (they need masks).
    for name in ("maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", "deeplabv3_resnet50_coco-cd0a2569.pth"):
        (tmp_path / "perception" / name).write_bytes(b"")
    catalog = form.model_catalog("perception", tmp_path)
    assert catalog[f"maskrcnn-resnet50-fpn-v2: {tmp_path / 'perception' / 'maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth'}"]["kind"] == "maskrcnn-resnet50-fpn-v2"
    assert catalog[f"deeplabv3-resnet50: {tmp_path / 'perception' / 'deeplabv3_resnet50_coco-cd0a2569.pth'}"]["kind"] == "deeplabv3-resnet50"
    assert form.shown_feedback(config, tmp_path)[1] == perception
