"""Which of UniFL's requirements a host's Python lacks, and which it has in a version UniFL cannot use.

Shared by ``install.py`` (run by A1111 and ComfyUI-Manager as a subprocess, so this module imports
only the standard library and ``packaging``, and is loaded by file path) and by the webui tab, which
shows the same findings instead of failing deep inside an import.

The hosts pin their own torch, gradio, fastapi, pydantic, transformers and huggingface_hub; upgrading
any of them has broken webui installs for years (A1111 #4698, #7120, #9035). A1111 also re-installs
its ``requirements_versions.txt`` at every start when an installed version differs from its pin
(safetensors, accelerate, numpy, Pillow...), which would undo an upgrade and leave what needed it
broken. So nothing installed is ever changed: a missing package is installed with every installed
distribution held at its version, and a too-old one is reported with what to do.

Some releases need newer companions than their metadata declares (found by running UniFL's tests on
A1111's and Forge's pinned stacks, see docs/host-compatibility.md): :data:`CAPS` lists them, and a
missing package is installed below the release that would not import next to what the host has.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"
#: Never installed by UniFL: the host brings the build that matches its GPU.
TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio", "xformers"})
#: Never changed by UniFL when installed: the hosts pin them.
HOST_PINNED = TORCH_FAMILY | {"gradio", "gradio-client", "fastapi", "pydantic", "transformers", "huggingface-hub"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Findings:
    """``to_install``: requirement strings to pip-install; ``problems``: messages for the user;
    ``notes``: why a requirement to install carries an upper bound (see :data:`CAPS`)."""

    to_install: tuple[str, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cap:
    """``package`` from release ``from_version`` on needs ``needs`` at ``needs_version`` or newer, though
    its metadata does not say so: pip would pick a release that fails at import next to an older host pin."""

    package: str
    from_version: str
    needs: str
    needs_version: str
    why: str


#: Measured on A1111 1.10.1's and Forge's stacks (docs/host-compatibility.md); each ``why`` is what fails.
CAPS = (
    Cap("diffusers", "0.32", "transformers", "4.37", "its pipelines import transformers' SiglipImageProcessor"),
    Cap("diffusers", "0.34", "peft", "0.15", "it refuses to import next to an older peft"),
    Cap("diffusers", "0.35", "peft", "0.17", "it refuses to import next to an older peft"),
    Cap("peft", "0.14", "transformers", "4.43", "it imports transformers' EncoderDecoderCache"),
    Cap("peft", "0.15", "accelerate", "0.32", "it imports accelerate.utils.memory.clear_device_cache"),
)


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
    requirements = read_requirements(path)
    installed = {normalize(r.name): installed_version(r.name) for r in requirements}
    missing = {normalize(r.name) for r in requirements if installed[normalize(r.name)] is None}
    caps, notes = _caps(installed, missing)
    to_install, problems = [], []
    for requirement in requirements:
        name = normalize(requirement.name)
        version = installed[name]
        if version is None and name in TORCH_FAMILY:
            problems.append(f"{requirement.name} is not installed; UniFL never installs it (the host's build must match its GPU). Install the build for your GPU from pytorch.org.")
        elif version is None:
            to_install.append(f"{requirement},<{caps[name]}" if name in caps else str(requirement))
        elif not requirement.specifier.contains(Version(version), prereleases=True):
            fix = ("the host pins it, so UniFL leaves it alone: use a host version that ships a matching one"
                   if name in HOST_PINNED else f'upgrade it in the host\'s Python with: pip install "{requirement}" (check first that the host does not pin it)')
            problems.append(f"{requirement.name} {version} is installed but UniFL needs {requirement}; {fix}.")
    problems += _clashes(installed)
    return Findings(tuple(to_install), tuple(problems), tuple(notes))


def _caps(installed: dict[str, str | None], missing: set[str]) -> tuple[dict[str, Version], list[str]]:
    """The upper bound each missing package needs next to what is installed, and why.

    A cap can follow from another: A1111's accelerate 0.21 caps peft below 0.15, and a peft below 0.15
    caps diffusers below 0.34. So the rules are applied until nothing changes.
    """
    caps: dict[str, Version] = {}
    notes: list[str] = []
    changed = True
    while changed:
        changed = False
        for cap in CAPS:
            package, needs = normalize(cap.package), normalize(cap.needs)
            if package not in missing or (package in caps and caps[package] <= Version(cap.from_version)):
                continue
            have = installed.get(needs)
            if have is not None and _version(have) is not None and _version(have) < Version(cap.needs_version):
                because = f"{cap.needs} {have} is installed"
            elif have is None and needs in caps and caps[needs] <= Version(cap.needs_version):
                because = f"{cap.needs} will be below {caps[needs]}"
            else:
                continue
            caps[package] = Version(cap.from_version)
            notes.append(f"{cap.package} stays below {cap.from_version}: {because}, and {cap.package} {cap.from_version}+ "
                         f"needs {cap.needs} {cap.needs_version}+ ({cap.why})")
            changed = True
    return caps, notes


def _clashes(installed: dict[str, str | None]) -> list[str]:
    """Installed releases that :data:`CAPS` says do not import next to another installed one, one message a package."""
    clashing: dict[str, list[Cap]] = {}
    for cap in CAPS:
        have, needs = (_version(installed.get(normalize(name)) or "") for name in (cap.package, cap.needs))
        if have is not None and needs is not None and have >= Version(cap.from_version) and needs < Version(cap.needs_version):
            clashing.setdefault(cap.package, []).append(cap)
    problems = []
    for package, caps in clashing.items():
        reasons = "; ".join(f"{package} {c.from_version}+ needs {c.needs} {c.needs_version}+ ({c.why})" for c in caps)
        others = ", ".join(dict.fromkeys(f"{c.needs} {installed[normalize(c.needs)]}" for c in caps))
        below = min(Version(c.from_version) for c in caps)
        problems.append(f"{package} {installed[normalize(package)]} does not work next to the installed {others}: {reasons}. "
                        f'Install an older one in the host\'s Python with: pip install "{package}<{below}".')
    return problems


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def pinned_constraints() -> list[str]:
    """``name==version`` for every installed distribution: pip installs what is missing and moves nothing
    (a missing diffusers would otherwise pull a newer huggingface_hub or safetensors than the host pins)."""
    import importlib.metadata as metadata

    pins = {}
    for distribution in metadata.distributions():
        name = distribution.metadata["Name"]
        if not name or normalize(name) in pins or _version(distribution.version) is None:
            continue  # a broken install, a shadowed second copy, or a version pip could not match
        pins[normalize(name)] = f"{normalize(name)}=={distribution.version}"
    return sorted(pins.values())
