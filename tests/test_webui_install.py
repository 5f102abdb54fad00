"""install.py (run by A1111/Forge and ComfyUI-Manager): installs only what is missing, never moves a host pin."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from unifl.webui_extension import requirements_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def install():
    spec = importlib.util.spec_from_file_location("unifl_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_findings_separate_what_to_install_from_what_to_report(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join([
        "pytest>=1  # installed and new enough",
        "unifl-no-such-package>=1",
        "xformers>=0.0.20",
        "pytest<1",
        "transformers<1",
        "no-such-package-either>=1; python_version < '3.0'",
    ]))
    findings = requirements_check.check(requirements)
    assert findings.to_install == ("unifl-no-such-package>=1",)
    xformers, pytest_problem, transformers = findings.problems
    assert xformers.startswith("xformers is not installed; UniFL never installs it")
    assert f"pytest {importlib.metadata.version('pytest')} is installed but UniFL needs pytest<1; upgrade it" in pytest_problem
    assert "the host pins it, so UniFL leaves it alone" in transformers


def test_the_shipped_requirements_are_met_here():
    assert requirements_check.check() == requirements_check.Findings((), ())


def test_installed_host_pins_are_held_while_pip_installs(install, monkeypatch, capsys):
    webui_launch = types.ModuleType("launch")
    webui_launch.args = SimpleNamespace(skip_install=False)
    calls = []

    def run_pip(command, desc):
        constraints = command.split(" -c ")[1].strip('"')
        calls.append((command, Path(constraints).read_text().split()))

    webui_launch.run_pip = run_pip
    monkeypatch.setitem(sys.modules, "launch", webui_launch)
    monkeypatch.setattr(install, "_load_checker", lambda: SimpleNamespace(
        check=lambda: requirements_check.Findings(("peft>=0.15",), ("transformers 4.30.2 is installed but ...",)),
        pinned_constraints=requirements_check.pinned_constraints))
    assert install.main() == 0
    (command, constraints), = calls
    assert command.startswith('install "peft>=0.15" -c ')
    assert f"torch=={importlib.metadata.version('torch')}" in constraints
    assert f"transformers=={importlib.metadata.version('transformers')}" in constraints
    assert not Path(command.split(" -c ")[1].strip('"')).exists()  # the temporary constraints file is gone
    assert "UniFL: transformers 4.30.2 is installed but ..." in capsys.readouterr().out


def test_skip_install_is_honoured(install, monkeypatch, capsys):
    webui_launch = types.ModuleType("launch")
    webui_launch.args = SimpleNamespace(skip_install=True)
    webui_launch.run_pip = lambda command, desc: pytest.fail("pip ran despite --skip-install")
    monkeypatch.setitem(sys.modules, "launch", webui_launch)
    assert install.main() == 0
    assert "--skip-install given" in capsys.readouterr().out


def test_outside_the_webui_pip_runs_in_this_python(install, monkeypatch):
    monkeypatch.setitem(sys.modules, "launch", None)  # ComfyUI-Manager: no webui launch module
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda argv: calls.append(argv))
    monkeypatch.setattr(install, "_load_checker", lambda: SimpleNamespace(
        check=lambda: requirements_check.Findings(("peft>=0.15",), ()), pinned_constraints=lambda: ["torch==2.13.0"]))
    assert install.main() == 0
    (argv,) = calls
    assert argv[:5] == [sys.executable, "-m", "pip", "install", "peft>=0.15"] and argv[5] == "-c"


def test_the_checker_loads_by_file_path_as_install_py_runs_it(install):
    checker = install._load_checker()  # no pack import: in a bare webui the pack's dependencies may be missing
    assert checker.check() == checker.Findings((), ())
    assert any(pin.startswith("pytest==") for pin in checker.pinned_constraints())


def test_pip_holds_every_installed_distribution():
    # A1111 re-installs requirements_versions.txt (safetensors, accelerate, numpy, Pillow...) when one moved.
    pins = requirements_check.pinned_constraints()
    for name in ("torch", "numpy", "safetensors", "accelerate", "pytest"):
        assert f"{name}=={importlib.metadata.version(name)}" in pins
    assert len(pins) == len({pin.split("==")[0] for pin in pins})


# What install.py would do on the stock hosts (docs/host-compatibility.md): the versions of the packages
# they ship, None for what they lack. pip alone would pick diffusers and peft releases that fail at import.
A1111_1_10 = {"transformers": "4.30.2", "accelerate": "0.21.0", "safetensors": "0.4.2", "diffusers": None, "peft": None}
FORGE_WITHOUT_PEFT = {"transformers": "4.46.1", "accelerate": "0.31.0", "safetensors": "0.4.2", "diffusers": None, "peft": None}


def _host(monkeypatch, tmp_path, versions):
    monkeypatch.setattr(requirements_check, "installed_version", lambda name: versions[requirements_check.normalize(name)])
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("diffusers>=0.31\ntransformers>=4.30.2\npeft>=0.13.2\naccelerate>=0.21\nsafetensors>=0.4.2\n")
    return requirements_check.check(requirements)


def test_a1111_gets_the_diffusers_and_peft_that_import_next_to_its_transformers(monkeypatch, tmp_path):
    findings = _host(monkeypatch, tmp_path, A1111_1_10)
    assert findings.to_install == ("diffusers>=0.31,<0.32", "peft>=0.13.2,<0.14")
    assert findings.problems == ()
    assert any("transformers 4.30.2 is installed" in note and "SiglipImageProcessor" in note for note in findings.notes)


def test_a_cap_on_one_missing_package_caps_what_depends_on_it(monkeypatch, tmp_path):
    # accelerate 0.31 keeps peft below 0.15 (clear_device_cache), and diffusers 0.34+ refuses such a peft.
    findings = _host(monkeypatch, tmp_path, FORGE_WITHOUT_PEFT)
    assert findings.to_install == ("diffusers>=0.31,<0.34", "peft>=0.13.2,<0.15")
    assert any("peft will be below 0.15" in note for note in findings.notes)


def test_new_enough_hosts_get_no_caps(monkeypatch, tmp_path):
    findings = _host(monkeypatch, tmp_path, {**A1111_1_10, "transformers": "5.0.0", "accelerate": "1.0.0"})
    assert findings.to_install == ("diffusers>=0.31", "peft>=0.13.2") and findings.notes == ()


def test_installed_releases_that_cannot_import_together_are_reported(monkeypatch, tmp_path):
    findings = _host(monkeypatch, tmp_path, {**FORGE_WITHOUT_PEFT, "diffusers": "0.35.2", "peft": "0.13.2"})
    assert findings.to_install == ()
    (clash,) = findings.problems
    assert clash.startswith("diffusers 0.35.2 does not work next to the installed peft 0.13.2: diffusers 0.34+ needs peft 0.15+")
    assert clash.endswith('pip install "diffusers<0.34".')
