"""`unifl pocket build --quick`: every part's build runs end to end from the one command (smoke sizes)."""

import pytest
from unifl.cli import main

pytestmark = pytest.mark.slow


def test_quick_build_of_every_part(tmp_path, capsys):
    assert main(["pocket", "build", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for part in ("ldm", "perception", "rewards"):
        assert f"pocket build: {part} done" in out
    assert (tmp_path / "ldm" / "model_index.json").is_file()
    assert list((tmp_path / "perception").glob("*.safetensors")) and list((tmp_path / "rewards").glob("*.safetensors"))


def test_unknown_part_is_named(capsys):
    assert main(["pocket", "build", "--only", "vae"]) == 1
    assert "unknown pocket part(s) vae" in capsys.readouterr().err
