"""Install hook run by the hosts: A1111/Forge (``launch.py`` runs it at start-up) and ComfyUI-Manager.

Installs only requirements that are missing (checked with ``importlib.metadata``), never torch, and
never changes anything installed (torch, gradio, fastapi, pydantic, transformers, huggingface_hub and
every other package): pip runs with each installed distribution held at its version, and a missing
package is kept below releases that would not import next to the host's pins. A too-old package is
reported, not upgraded. Honours the webui's ``--skip-install``. Runs as a subprocess, so it loads its
helper by file path instead of importing the pack (whose dependencies may be the very thing missing).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _load_checker():
    spec = importlib.util.spec_from_file_location("unifl_requirements_check", ROOT / "webui_extension" / "requirements_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # @dataclass looks its module up there while the file executes
    spec.loader.exec_module(module)
    return module


def _webui_launch():
    """A1111's ``launch`` module when the webui runs this file (it puts its root on PYTHONPATH), else None."""
    try:
        import launch
    except ImportError:
        return None
    return launch if hasattr(launch, "run_pip") else None


def skip_requested(launch) -> bool:
    return "--skip-install" in sys.argv or bool(launch is not None and getattr(getattr(launch, "args", None), "skip_install", False))


def pip_install(requirements: list[str], constraints: list[str], launch) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="unifl-constraints-", delete=False) as handle:
        handle.write("\n".join(constraints) + "\n")
    try:
        if launch is not None:  # the webui's pip: its index URL and --prefer-binary
            quoted = " ".join(f'"{r}"' for r in requirements)
            launch.run_pip(f'install {quoted} -c "{handle.name}"', f"UniFL requirements: {', '.join(requirements)}")
        else:
            subprocess.check_call([sys.executable, "-m", "pip", "install", *requirements, "-c", handle.name])
    finally:
        Path(handle.name).unlink(missing_ok=True)


def main() -> int:
    launch = _webui_launch()
    if skip_requested(launch):
        print("UniFL: --skip-install given; not checking requirements")
        return 0
    try:
        checker = _load_checker()
    except ImportError as error:
        print(f"UniFL: cannot check requirements ({error}); install 'packaging' in this Python")
        return 0
    findings = checker.check()
    for problem in findings.problems:
        print(f"UniFL: {problem}")
    if findings.to_install:
        for note in findings.notes:
            print(f"UniFL: {note}")
        print(f"UniFL: installing missing requirements: {', '.join(findings.to_install)}")
        try:
            pip_install(list(findings.to_install), checker.pinned_constraints(), launch)
        except (subprocess.CalledProcessError, RuntimeError) as error:
            print(f"UniFL: installing {', '.join(findings.to_install)} failed ({error}); UniFL will say what is missing when it starts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
