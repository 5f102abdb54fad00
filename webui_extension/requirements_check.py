"""Which of UniFL's requirements a host's Python lacks, and which it has in a version UniFL cannot use.

Shared by ``install.py`` (run by A1111 and ComfyUI-Manager as a subprocess, so this module imports
only the standard library and ``packaging``, and is loaded by file path) and by the webui tab, which
shows the same findings instead of failing deep inside an import.

The hosts pin their own torch, gradio, fastapi, pydantic, transformers and huggingface_hub; upgrading
any of them has broken webui installs for years (A1111 #4698, #7120, #9035). So nothing installed is
ever upgraded: a missing package is installed with every installed pinned package held at its
version, and a too-old one is reported with what to do.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"
#: Never installed by UniFL: the host brings the build that matches its GPU.
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "xformers"})
#: Never changed by UniFL when installed: the hosts pin them.
HOST_PINNED = TORCH_FAMILY | {"gradio", "gradio-client", "fastapi", "pydantic", "transformers", "huggingface-hub"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Findings:
    """``to_install``: requirement strings to pip-install; ``problems``: messages for the user."""

    to_install: tuple[str, ...]
    problems: tuple[str, ...]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements that apply to this Python (environment markers evaluated)."""
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def check(path: Path = REQUIREMENTS_FILE) -> Findings:
    to_install, problems = [], []
    for requirement in read_requirements(path):
        name = normalize(requirement.name)
        version = installed_version(requirement.name)
        if version is None and name in TORCH_FAMILY:
            problems.append(f"{requirement.name} is not installed; UniFL never installs it (the host's build must match its GPU). Install the build for your GPU from pytorch.org.")
        elif version is None:
            to_install.append(str(requirement))
        elif not requirement.specifier.contains(Version(version), prereleases=True):
            fix = ("the host pins it, so UniFL leaves it alone: use a host version that ships a matching one"
                   if name in HOST_PINNED else f'upgrade it in the host\'s Python with: pip install "{requirement}" (check first that the host does not pin it)')
            problems.append(f"{requirement.name} {version} is installed but UniFL needs {requirement}; {fix}.")
    return Findings(tuple(to_install), tuple(problems))


def pinned_constraints() -> list[str]:
    """``name==version`` for every installed host-pinned package: pip must not move them while it
    installs what is missing (a missing diffusers would otherwise pull a newer huggingface_hub)."""
    pins = []
    for name in sorted(HOST_PINNED):
        version = installed_version(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return pins
