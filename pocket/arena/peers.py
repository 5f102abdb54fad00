"""Where the peers' code and Pythons are, and ``make peers``: their public repositories at the pinned commits.

The peers' code is theirs and never part of this repository. ``python -m unifl.pocket.arena.peers fetch``
(``make peers``) fetches each repository at the commit our run-time patches (``bench/peers/``) were written
for into ``.peers/src/<peer>`` of this checkout (ignored by git); ``make peer-venvs`` makes the Pythons in
``.peers/venvs/``. Environment variables point at copies elsewhere (a machine without network: clone the
repository at the commit on one that has it, copy it over, set the variable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = REPO_ROOT / ".peers"


@dataclass(frozen=True)
class PeerRepository:
    url: str
    commit: str
    folder: str
    variable: str
    """The environment variable that points at a local copy instead."""


REPOSITORIES = {
    "diffusers": PeerRepository("https://github.com/huggingface/diffusers", "58eb52c0803ea9af3abec60841c2a093bdf1f951", "huggingface+diffusers", "UNIFL_PEER_DIFFUSERS"),
    "pcm": PeerRepository("https://github.com/G-U-N/Phased-Consistency-Model", "b127277f641f28ad2459647a05f78133e5b3fd34", "pcm", "UNIFL_PEER_PCM"),
}
"""The peers' public repositories at the commits the glue's patches match (LCM-LoRA is diffusers' example)."""
SOURCE_OF = {"lcm_lora": "diffusers", "pcm": "pcm", "pcm_adv": "pcm"}
PYTHONS = {"peers": "UNIFL_PEERS_PYTHON", "trl": "UNIFL_PEER_TRL_PYTHON"}
"""The peers' venvs (``make peer-venvs``): ``peers`` adds webdataset (LCM-LoRA, PCM), ``trl`` trl 0.23.1 (AlignProp)."""


def _python(venv: str) -> str:
    return os.environ.get(PYTHONS[venv]) or str(PEERS_DIR / "venvs" / venv / "bin" / "python")


def source_path(repository: str) -> Path:
    spec = REPOSITORIES[repository]
    return Path(os.environ.get(spec.variable) or PEERS_DIR / "src" / spec.folder)


def peer_sources() -> dict[str, dict]:
    """Each peer's code and Python: the environment variables, else this checkout's ``.peers/`` folder."""
    sources = {method: {"source": str(source_path(repository)), "python": _python("peers")} for method, repository in SOURCE_OF.items()}
    return sources | {"alignprop": {"source": "pip:trl==0.23.1", "python": _python("trl")}}


def missing_reason(method: str) -> str:
    """Why a peer cannot run here ('' when it can), and how to fix it, in one line."""
    source = peer_sources()[method]
    if not Path(source["python"]).is_file():
        venv = "trl" if method == "alignprop" else "peers"
        return f"no Python at {source['python']} (run `make peer-venvs`, or set {PYTHONS[venv]})"
    if not source["source"].startswith("pip:") and not Path(source["source"]).exists():
        spec = REPOSITORIES[SOURCE_OF[method]]
        return f"no copy of {spec.url} at {source['source']} (run `make peers`, or set {spec.variable} to a copy at commit {spec.commit[:12]})"
    return ""


def fetch(repository: str, run=subprocess.run) -> Path:
    """``repository`` at its pinned commit in its folder: a shallow fetch of that one commit (GitHub serves a commit
    by its hash), checked out detached, in a temporary folder beside the target that is renamed into place only
    when whole (a failed fetch, offline say, leaves nothing that looks like a copy). A folder already at the
    commit is left as it is."""
    spec, target = REPOSITORIES[repository], source_path(repository)

    def git(folder: Path, *args):
        return run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True)

    if target.exists():
        try:
            head = git(target, "rev-parse", "HEAD").stdout.strip()
        except subprocess.CalledProcessError:
            head = ""
        if head == spec.commit:
            return target
        raise RuntimeError(f"{target} is {'at ' + head[:12] if head else 'not a git checkout with a commit'}, not the pinned {spec.commit[:12]}: "
                           f"check it out there (git -C {target} checkout {spec.commit}) or move the folder away")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        git(partial, "init", "-q")
        git(partial, "fetch", "-q", "--depth", "1", spec.url, spec.commit)
        git(partial, "checkout", "-q", "--detach", "FETCH_HEAD")
        os.replace(partial, target)
    except subprocess.CalledProcessError as error:
        said = (error.stderr or "").strip().splitlines()
        raise RuntimeError(f"could not fetch {spec.url} at {spec.commit[:12]} ({said[-1] if said else 'git failed'}); "
                           f"offline? clone it at that commit elsewhere and set {spec.variable}=<that folder>") from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # our own temporary folder; gone already when the rename happened
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("fetch", "status"))
    args = parser.parse_args(argv)
    failed = False
    if args.command == "fetch":
        for name, spec in REPOSITORIES.items():
            try:
                print(f"{name}: {fetch(name)} at {spec.commit[:12]}")
            except RuntimeError as error:
                print(f"{name}: {error}", file=sys.stderr)
                failed = True
    for method in peer_sources():
        reason = missing_reason(method)
        print(f"{method}: {'ready' if not reason else 'NOT READY: ' + reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
