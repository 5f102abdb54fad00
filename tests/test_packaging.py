"""The folder is a pip package, a ComfyUI node folder and an A1111 extension at once: keep all three true."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    found = {"unifl"} | {"unifl." + ".".join(p.parent.relative_to(ROOT).parts) for top in ("cli", "core", "pocket", "comfyui_nodes", "webui_extension") for p in (ROOT / top).rglob("__init__.py")}
    assert found == set(PYPROJECT["tool"]["setuptools"]["packages"])


def test_no_torch_in_requirements_and_they_match_pyproject():
    lines = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    names = {l.split(">")[0].split("=")[0].split(";")[0].strip().lower() for l in lines}
    assert not names & {"torch", "torchvision", "torchaudio", "xformers"}
    assert sorted(lines) == sorted(PYPROJECT["project"]["dependencies"]) or {l.replace("'", '"') for l in lines} == {d.replace("'", '"') for d in PYPROJECT["project"]["dependencies"]}


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout


def test_importing_the_pack_is_cheap_and_core_needs_no_host():
    assert run("import sys, unifl; print('torch' in sys.modules)").strip() == "False"
    loaded = run("import sys, unifl.core.training.trainer, unifl.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio','comfy','comfy_api','folder_paths','modules')))")
    assert loaded.strip() == "[]"


def test_the_core_imports_without_the_pocket_world_or_a_host():
    loaded = run("import sys, unifl.core, unifl.core.training.trainer, unifl.core.feedback.builtin, unifl.core.training.aspect_rewards; "
                 "print(sorted(m for m in sys.modules if m.startswith(('unifl.pocket', 'unifl.cli', 'unifl.comfyui_nodes', 'unifl.webui_extension'))))")
    assert loaded.strip() == "[]"


def test_cli_entry_points():
    out = subprocess.run([sys.executable, "-m", "unifl", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "sample", "export", "demo"):
        assert command in out
    for command in ("train", "sample", "export", "demo"):
        assert subprocess.run([sys.executable, "-m", "unifl", command, "--help"], capture_output=True, text=True).returncode == 0


@pytest.mark.slow
def test_the_wheel_maps_the_root_to_unifl_and_ships_the_model_configs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)], check=True)
    names = zipfile.ZipFile(next(tmp_path.glob("unifl-*.whl"))).namelist()
    assert "unifl/__init__.py" in names and "unifl/core/training/trainer.py" in names and "unifl/pocket/world/world.py" in names
    assert "unifl/core/diffusion/model_configs/sd15/unet/config.json" in names and "unifl/core/diffusion/model_configs/clip_tokenizer/vocab.json" in names
    assert not any(n.startswith(("tests/", "unifl/tests/", "core/")) for n in names)
