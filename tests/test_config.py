from pathlib import Path

import pytest
from unifl.core.config import ConfigError, TrainConfig, explain, from_dict, load_config, parse_override, render_reference, to_dict

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_values():
    c = TrainConfig()
    assert (c.pefl.inference_steps, c.pefl.noise_level, c.pefl.grad_levels) == (20, 10, [0, 5])
    assert (c.adversarial.inference_steps, c.adversarial.timestep_spacing, c.adversarial.discriminator_from) == (4, "trailing", "detail")


def test_unknown_key_names_the_field_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.learning_rte.*learning_rate"):
        load_config(write(tmp_path, "[optim]\nlearning_rte = 1e-4\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match="lora.rank"):
        load_config(write(tmp_path, '[lora]\nrank = "big"\n'))


def test_file_preset_and_overrides_compose(tmp_path):
    path = write(tmp_path, 'preset = "sd15"\nstage = 1\n[optim]\nmax_steps = 7\n[[rewards]]\naspect = "detail"\nkind = "sharpness"\n')
    c = load_config(path, ["optim.learning_rate=2e-5", "model.path=/models/x.safetensors"])
    assert c.data.resolution == 512 and c.optim.max_steps == 7 and c.optim.learning_rate == 2e-5
    assert c.model.path == "/models/x.safetensors" and c.stage == "1" and c.rewards[0].kind == "sharpness"


def test_a_preset_can_set_values_for_one_stage_below_the_users(tmp_path, monkeypatch):
    """A preset's ``stages`` table applies in that stage's runs only, under the file's and the overrides' values."""
    from unifl.core.config import presets

    monkeypatch.setitem(presets.PRESETS, "staged", {"optim": {"learning_rate": 1e-5, "max_steps": 3}, "adversarial": {"weight": 0.0}, "rewards": presets.STATISTIC_REWARDS, "stages": {"2": {"optim": {"learning_rate": 2e-4}}}})
    assert load_config(None, [], preset="staged").optim.learning_rate == 1e-5
    assert load_config(None, ["stage=2"], preset="staged").optim.learning_rate == 2e-4
    assert load_config(write(tmp_path, 'preset = "staged"\nstage = 2\n'), []).optim.learning_rate == 2e-4  # the file's stage
    staged = load_config(None, ["stage=2", "optim.learning_rate=5e-5"], preset="staged")
    assert (staged.optim.learning_rate, staged.optim.max_steps) == (5e-5, 3)
    assert presets.stage_fields("staged") == {"optim.learning_rate"} and presets.stage_fields("sd15") == set()


def test_cross_field_validation_messages():
    with pytest.raises(ConfigError, match="pefl.grad_levels"):
        load_config(None, ["pefl.grad_levels=[0, 25]"])
    with pytest.raises(ConfigError, match="discriminator"):
        load_config(None, ["stage=2"])
    with pytest.raises(ConfigError, match="perception"):
        load_config(None, ['perception=[{aspect = "colour", kind = "x"}]'])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.toml")


def test_real_size_presets_store_frozen_weights_in_half_precision():
    for preset in ("sd15", "sdxl"):
        c = load_config(None, [], preset=preset)
        assert (c.model.dtype, c.model.vae_dtype, c.optim.mixed_precision) == ("bf16", "fp32", "bf16"), preset


def test_feedback_model_dtype_follows_mixed_precision_unless_set():
    c = load_config(None, ['rewards=[{aspect = "detail", kind = "sharpness"}]', 'perception=[{aspect = "style", kind = "vgg16", dtype = "fp32"}]', "optim.mixed_precision=bf16"])
    assert c.rewards[0].dtype == "auto" and c.rewards[0].resolved_dtype(c.optim.mixed_precision) == "bf16"
    assert c.perception[0].resolved_dtype(c.optim.mixed_precision) == "fp32"
    assert c.rewards[0].resolved_dtype("no") == "fp32"
    with pytest.raises(ConfigError, match=r"rewards\[0\].dtype = 'bf16' runs under the training autocast: set optim.mixed_precision"):
        load_config(None, ['rewards=[{aspect = "detail", kind = "sharpness", dtype = "bf16"}]'])
    with pytest.raises(ConfigError, match=r"perception\[0\].dtype = 'half'"):
        load_config(None, ['perception=[{aspect = "style", kind = "vgg16", dtype = "half"}]'])


def test_override_parsing():
    assert parse_override("optim.max_steps=3") == {"optim": {"max_steps": 3}}
    assert parse_override("model.path=/a/b c.safetensors") == {"model": {"path": "/a/b c.safetensors"}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.max_steps")


def test_round_trip_through_dict():
    c = load_config(None, [], preset="tiny")
    assert from_dict(TrainConfig, to_dict(c)) == c


def test_every_field_is_documented_and_the_reference_is_current():
    assert all(text for _, _, text in explain())
    assert (ROOT / "docs" / "config-reference.md").read_text() == render_reference(), "run: python -m unifl.core.config > docs/config-reference.md"


def test_renamed_keys_say_their_new_name():
    with pytest.raises(ConfigError, match="'data.num_pocket_images' was renamed to 'data.source_images'"):
        load_config(None, ["data.num_pocket_images=16"], preset="tiny")


def test_lora_dropout_and_init_are_reachable_from_a_config():
    from unifl.core.lora.peft import settings_from_config

    config = load_config(None, ["lora.dropout=0.1", 'lora.init="gaussian"'], preset="tiny")
    settings = settings_from_config(config.lora)
    assert (settings.dropout, settings.init) == (0.1, "gaussian")
