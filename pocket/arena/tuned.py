"""The tuning run's choices, committed: what ``make arena`` and ``make arena-choices`` take (``pocket/arena/tuned/``).

The sweeps (``make arena-tune``: every learning-rate and discriminator-rate grid of UniFL's stages and of each peer
with both LoRA variants, on the validation split) take hours on two cores, longer than one sitting of the standard
run beside them. So their outcome is committed: ``python -m unifl.pocket.arena.tuned out/arena-tune`` copies each
sweep's ``choice.json`` (the chosen hyperparameters and every candidate's validation numbers; the candidates' runs
stay behind, named relative to the tuning folder) into ``pocket/arena/tuned/tuning/<training>/``, beside ``README.md``
with the table and the machine, libraries and commit that made them. A fresh clone runs the standard arena from
these; ``unifl arena --tune --tuning-from pocket/arena/tuned`` sweeps only what is not committed yet (a tuning
run spread over several sittings), and a change of the code or the base model is a reason to sweep again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...core.files import atomic_write_text
from .plan import COMMITTED_TUNING
from .report import environment, tuning_table

REPO_ROOT = Path(__file__).resolve().parents[2]


def _relative_runs(value, source: Path):
    """``value`` with every ``"run"`` path made relative to the tuning folder ``source``."""
    if isinstance(value, dict):
        return {key: (_relative(item, source) if key == "run" and item else _relative_runs(item, source)) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative_runs(item, source) for item in value]
    return value


def _relative(path: str, source: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(source))
    except ValueError:
        return Path(path).name


def export(source: str | Path, target: str | Path = REPO_ROOT / COMMITTED_TUNING) -> list[str]:
    """Copy the finished sweeps of the tuning arena ``source`` into ``target`` (replacing a training's earlier
    choice, keeping the trainings ``source`` has not swept, nor those it adopted); returns the trainings copied."""
    source, target = Path(source).resolve(), Path(target)
    # a choice this arena adopted ("from") was swept elsewhere: the export keeps the sweep's own copy
    choices = [path for path in sorted((source / "tuning").glob("*/choice.json")) if not json.loads(path.read_text()).get("from")]
    if not choices:
        raise FileNotFoundError(f"{source / 'tuning'} holds no finished sweep of its own (choice.json): run `make arena-tune` first")
    exported = []
    for path in choices:
        choice = _relative_runs(json.loads(path.read_text()), source)
        destination = target / "tuning" / path.parent.name / "choice.json"  # an arena's layout: --tuning-from reads it as one
        destination.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(destination, json.dumps(choice, indent=1) + "\n")
        exported.append(path.parent.name)
    provenance = target / "environment.json"
    known = json.loads(provenance.read_text()) if provenance.is_file() else {}
    settings = json.loads((source / "settings.json").read_text()) if (source / "settings.json").is_file() else {}
    here = environment()
    for name in exported:
        known[name] = {"machine": here["machine"], "libraries": here["libraries"], "trained_at": trained_at(source / "tuning" / name),
                       "exported_at": here["commit"], "settings": settings}
    atomic_write_text(provenance, json.dumps(known, indent=1, sort_keys=True) + "\n")
    write_readme(target)
    return exported


def trained_at(sweep: Path) -> list[str]:
    """The code a sweep's candidates recorded when they trained (``result.json``'s ``version``): ``this
    repository@<commit>`` for UniFL's, the peer's repository at its commit for a peer's."""
    versions = {json.loads(path.read_text()).get("version", "") for path in sweep.glob("*/result.json")}
    return sorted({f"{where}@{rest.split(' ')[0][:12]}" for where, _, rest in (version.partition("@") for version in versions if "@" in version)})


def provenance_line(entry: dict) -> str:
    libraries = ", ".join(f"{name} {version}" for name, version in entry["libraries"].items())
    return (f"Machine: {entry['machine']}. Libraries: {libraries}. Candidates trained with "
            f"{', '.join(f'`{commit}`' for commit in entry['trained_at']) or 'unknown'}; exported at `{entry['exported_at'][:12]}`.")


def write_readme(target: Path) -> None:
    """``README.md``: every committed sweep's candidates and choice, and where each was swept."""
    tuning = {path.parent.name: json.loads(path.read_text()) for path in sorted(target.glob("tuning/*/choice.json"))}
    provenance = json.loads((target / "environment.json").read_text())
    made = {}
    for name in tuning:
        made.setdefault(provenance_line(provenance[name]), []).append(name)
    lines = ["# The tuning run's choices", "",
             "Written by `python -m unifl.pocket.arena.tuned out/arena-tune` from a tuning arena (`make arena-tune`): each",
             "training's sweep on the validation split, first training seed. `make arena` and `make arena-choices` take the",
             "chosen hyperparameters from here; sweep again (`make arena-tune`, then this export) after a change of the code",
             "or the base model. Candidates' runs are named relative to the tuning folder, which is not committed.", "",
             *tuning_table(tuning), "", "## Where they were swept", ""]
    lines += [f"- {', '.join(names)}: {line}" for line, names in made.items()]
    atomic_write_text(target / "README.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m unifl.pocket.arena.tuned", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a tuning arena's folder (make arena-tune: out/arena-tune)")
    parser.add_argument("--to", type=Path, default=REPO_ROOT / COMMITTED_TUNING, help=f"where to write (default: this repository's {COMMITTED_TUNING})")
    args = parser.parse_args(argv)
    exported = export(args.source, args.to)
    print(f"exported the choices of {', '.join(exported)} to {args.to}")
    return exported


if __name__ == "__main__":
    main()
