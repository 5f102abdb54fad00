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
