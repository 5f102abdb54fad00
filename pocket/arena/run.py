"""``unifl arena``: plan the jobs, skip those whose outputs exist, run the rest on a worker pool, measure.

Layout of the output folder (everything a job makes is its proof of work; delete it to redo the job):

* ``trainings/<training>/seed<r>/result.json`` (and the LoRA, logs) – one per training and seed;
* ``tuning/<training>/lr<rate>/`` and ``choice.json`` – the learning-rate candidates of UniFL's stages and the
  peers (first training seed) and the one the validation split chose (:data:`~.plan.TUNING`);
* ``samples/<row>/seed<r>.safetensors`` – the row's images of replicate ``r`` (uint8);
* ``measures/<row>/seed<r>.json`` and ``references/seed<r>.json`` – the judges' numbers (measured in the
  workers, right after sampling: the judges cost about as much per image as a few UNet calls);
* ``metrics.json``, ``report.md``, ``grid_*.png``, ``curves_*.png`` – the summary (:mod:`.report`).

A killed run restarts where it stopped: finished jobs are skipped job by job. The settings are written to
``settings.json`` on the first run; a later run with other settings in the same folder is refused
(its numbers would mix two arenas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict
from pathlib import Path

from ...core.machine import source_commit
from ..demo import Job, pocket_world_missing, run_jobs
from ..plugin import register
from .counting import count_feedback_models, count_unet, new_counter
from .measure import Judges, load_images, load_tensor, prompt_set, sample_row, save_tensor, write_json
from .plan import DATA_STREAM, SPLITS, TUNING, ArenaSettings, Training, rows, trainings, tuning_of

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_GLUE = REPO_ROOT / "bench" / "peers"


# ------------------------------------------------------------------------------------------- peer sources


def peer_sources() -> dict[str, dict]:
    """Where each peer's code and Python are on this machine (environment variables, then the usual
    places); a peer is present when both exist. Their code is never part of this repository."""
    env = os.environ.get
    peers_python = env("UNIFL_PEERS_PYTHON", "/work/venvs/peers/bin/python")
    return {
        "lcm_lora": {"source": env("UNIFL_PEER_DIFFUSERS", "/work/peer-src/huggingface+diffusers"), "python": peers_python},
        "pcm": {"source": env("UNIFL_PEER_PCM", "/work/peer-src/pcm"), "python": peers_python},
        "pcm_adv": {"source": env("UNIFL_PEER_PCM", "/work/peer-src/pcm"), "python": peers_python},
        "alignprop": {"source": "pip:trl==0.23.1", "python": env("UNIFL_PEER_TRL_PYTHON", "/work/venvs/trl/bin/python")},
    }


def package_path_entry(scratch: Path) -> Path:
    """A folder whose ``unifl`` is this checkout, for a peer's Python (another venv) to import our glue's helpers
    from: the package's parent when the checkout folder is named ``unifl``, else a symlink in ``scratch``."""
    if REPO_ROOT.name == "unifl":
        return REPO_ROOT.parent
    folder = Path(scratch).resolve() / "_pythonpath"  # absolute: the peer runs in its own folder (``out`` may be relative)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "unifl"
    if link.is_symlink() and link.resolve() != REPO_ROOT:  # left by a run from another checkout (or a deleted one)
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return folder


def peer_present(method: str) -> bool:
    source = peer_sources()[method]
    return Path(source["python"]).is_file() and (source["source"].startswith("pip:") or Path(source["source"]).exists())


# ----------------------------------------------------------------------------------------- worker functions


def train_unifl(out: str, training: str, seed: int, overrides: list[str], init_from: str) -> dict:
    """One UniFL LoRA (in a worker): the pocket preset plus ``overrides``; its wall time is a peer's budget."""
    from ...core.config import load_config
    from ...core.training.trainer import TrainerCallbacks, UniFLTrainer
    from .. import demo

    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    counter = new_counter()
    count_unet(counter)
    extra = [f"lora.init_from={init_from}"] if init_from else []
    config = load_config(None, [f"logging.output_dir={run_dir}", f"logging.output_name=unifl-{training}", "logging.tensorboard=false",
                                f"optim.seed={seed}", *overrides, *extra], preset="pocket")
    name = f"{training}@{seed}"
    callbacks = TrainerCallbacks(on_progress=lambda step, total, logs: demo._progress.put((name, step)))
    started = time.perf_counter()
    with open(run_dir / "train.log", "w", encoding="utf-8") as log, redirect_stdout(log), redirect_stderr(log):
        trainer = UniFLTrainer(config, callbacks=callbacks)
        count_feedback_models([*trainer.rewards.values(), *(model for _, model in trainer.perception), trainer.discriminator], counter)
        result = trainer.train(overwrite=True)
    seconds = time.perf_counter() - started
    summary = {"method": "unifl", "lora": {"format": "kohya", "path": str(result.lora_path)}, "seconds": round(seconds, 1),
               "steps": result.steps, "batch_size": config.optim.batch_size, "images_seen": result.steps * config.optim.batch_size,
               "unet_evaluations": counter["unet"], "feedback_evaluations": counter["feedback"], "seed": seed, "overrides": overrides, "version": f"this repository@{source_commit(REPO_ROOT)}"}
    write_json(run_dir / "result.json", summary)
    return summary


def train_peer(out: str, training: str, method: str, seed: int, budget_seconds: float, max_steps: int, data_dir: str, threads: int,
               learning_rate: float) -> dict:
    """A peer through our glue (``bench/peers/<method>.py``) in its own Python; its output goes to train.log."""
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = peer_sources()[method]
    script = PEER_GLUE / f"{method.split('_adv')[0]}.py"
    command = [source["python"], str(script), "--out", str(run_dir), "--seed", str(seed), "--budget-seconds", f"{budget_seconds:.1f}",
               "--max-steps", str(max_steps), "--data", data_dir, "--source", source["source"], "--threads", str(threads),
               "--learning-rate", f"{learning_rate:g}"]
    if method == "pcm_adv":
        command.append("--adversarial")
    env = {**os.environ, "PYTHONPATH": str(package_path_entry(run_dir)), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run_dir / "train.log", "w", encoding="utf-8") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(run_dir))
    if done.returncode != 0:
        raise RuntimeError(f"peer {method} failed (exit {done.returncode}); see {run_dir / 'train.log'}")
    summary = json.loads((run_dir / "result.json").read_text())
    return summary


def write_peer_data(out: str, count: int) -> str:
    """The training stream as files for the peers' own loaders: png + txt pairs and webdataset shards."""
    from ..world import PocketDataset, WorldConfig

    folder = Path(out)
    sys.path.insert(0, str(PEER_GLUE))
    from data import write_pocket_files  # noqa: E402  (bench/peers/data.py: our glue, no peer code)

    write_pocket_files(PocketDataset(count, DATA_STREAM[0], WorldConfig(resolution=64)), folder)
    return str(folder)


# ----------------------------------------------------------------------------------------------- the plan


def plan_jobs(out: Path, settings: ArenaSettings, judge_path: str = "") -> tuple[list[Job], dict]:
    """Every job of the arena with its dependencies, and what each sampling job will produce."""
    planned, row_plan = trainings(settings), rows(settings)
    present = {name: t for name, t in planned.items() if t.method == "unifl" or peer_present(t.method)}
    jobs, outputs = [], {"trainings": {}, "samples": {}, "references": {}, "tuning": {}}
    needs_data = any(t.method in ("lcm_lora", "pcm", "pcm_adv") for t in present.values())
    data_dir = out / "peer_data"
    if needs_data:
        count = 256 if settings.quick else DATA_STREAM[1]
        jobs.append(Job("peer_data", (write_peer_data, str(data_dir), count), steps=1))
        outputs["peer_data"] = data_dir / "DONE"
    data_after = lambda t: ("peer_data",) if t.method in ("lcm_lora", "pcm", "pcm_adv") else ()  # noqa: E731
    tune_seed = settings.seeds[0]
    for name, t in present.items():
        if name not in TUNING:
            continue
        candidates = []
        for rate in settings.learning_rates:
            job = f"{name}~lr{rate:g}@{tune_seed}"
            run_dir = tuning_dir(out, name) / f"lr{rate:g}"
            outputs["tuning"][job] = run_dir / "result.json"
            after = tuple(f"{d}@{tune_seed}" for d in t.after) + data_after(t)
            jobs.append(Job(job, (_training_job, str(out), name, t, tune_seed, settings, str(data_dir), rate, str(run_dir)), after, _units(t, settings)))
            candidates.append(job)
        choice = f"{name}~choice@{tune_seed}"
        outputs["tuning"][choice] = tuning_dir(out, name) / "choice.json"
        sampler = row_plan[TUNING[name][0]].sampler
        units = max(1, round((sampler.unet_calls_per_image() + 4) * settings.images * len(candidates) / 256))
        jobs.append(Job(choice, (_choose_job, str(out), name, settings, judge_path), tuple(candidates), units))
    for seed in settings.seeds:
        for name, t in present.items():
            run_dir = out / "trainings" / name / f"seed{seed}"
            outputs["trainings"][(name, seed)] = run_dir / "result.json"
            after = tuple(f"{d}@{seed}" for d in t.after) + data_after(t) + (f"{tuning_of(name)}~choice@{tune_seed}",)
            jobs.append(Job(f"{name}@{seed}", (_training_job, str(out), name, t, seed, settings, str(data_dir)), after, _units(t, settings)))
        outputs["references"][seed] = out / "references" / f"seed{seed}.json"
        jobs.append(Job(f"reference@{seed}", (_reference_job, str(out), seed, settings, judge_path), (), max(1, round(4 * settings.images / 256))))
        for row_name, row in row_plan.items():
            if row.training is not None and row.training not in present:
                continue
            outputs["samples"][(row_name, seed)] = out / "measures" / row_name / f"seed{seed}.json"
            after = ((f"{row.training}@{seed}",) if row.training else ()) + (f"reference@{seed}",)
            units = max(1, round((row.sampler.unet_calls_per_image() + 4) * settings.images / 256))  # + the judges, ~4 UNet calls' worth
            jobs.append(Job(f"{row_name}@{seed}", (_sample_job, str(out), row_name, row.training, seed, row.sampler, settings, judge_path), after, units))
    return jobs, {"outputs": outputs, "present": present, "rows": row_plan}


def tuning_dir(out: Path, training: str) -> Path:
    return out / "tuning" / training


def _units(training: Training, settings: ArenaSettings) -> int:
    """A training job's share of the progress bar: its steps (UniFL) or 100 (a peer: its steps follow its budget)."""
    if training.method != "unifl":
        return 100
    return settings.stage2_steps if "stage=2" in training.overrides else settings.stage1_steps


def _training_job(out: str, name: str, training: Training, seed: int, settings: ArenaSettings, data_dir: str,
                  learning_rate: float | None = None, run_dir: str = "") -> dict:
    """A training: a learning-rate candidate (``learning_rate`` given, into ``run_dir``) or, with the rate the
    validation sweep chose, a training seed of the test run; the chosen candidate is that seed's training."""
    out_dir = Path(out)
    target = Path(run_dir) if run_dir else out_dir / "trainings" / name / f"seed{seed}"
    if learning_rate is None:
        choice = json.loads((tuning_dir(out_dir, tuning_of(name)) / "choice.json").read_text())
        learning_rate = choice["learning_rate"]
        if name in TUNING and seed == choice["seed"]:
            return _adopt_candidate(tuning_dir(out_dir, name) / f"lr{learning_rate:g}", target)
    if training.method == "unifl":
        init = str(out_dir / "trainings" / "stage1" / f"seed{seed}" / "unifl-stage1.safetensors") if "stage1" in training.after else ""
        return train_unifl(str(target), name, seed, [*training.overrides, f"optim.learning_rate={learning_rate:g}"], init)
    reference = json.loads((out_dir / "trainings" / (training.budget_of or training.steps_of) / f"seed{seed}" / "result.json").read_text())
    if training.steps_of:
        budget, max_steps = 0.0, reference["steps"]
    else:
        budget, max_steps = reference["seconds"], settings.peer_min_steps
    return train_peer(str(target), name, training.method, seed, budget, max_steps, data_dir, settings.threads, learning_rate)


def _adopt_candidate(candidate: Path, target: Path) -> dict:
    """The chosen candidate's run as the test run's training of its seed (a copy; result.json last, naming the copy).
    Links are copied as links: the run's ``_pythonpath/unifl`` points at this checkout, venvs included, and
    following it once filled the disk with tens of GB. The import link is a scratch of the run, so it is left out."""
    import shutil

    ignored = shutil.ignore_patterns("result.json", "validation.safetensors", "_pythonpath")
    shutil.copytree(candidate, target, symlinks=True, dirs_exist_ok=True, ignore=ignored)
    result = json.loads((candidate / "result.json").read_text())
    result["lora"]["path"] = str(target / Path(result["lora"]["path"]).name)
    result["tuning"] = f"the chosen learning-rate candidate of the validation sweep ({candidate})"
    write_json(target / "result.json", result)
    return result


def best_candidate(candidates: list[dict], metric: str) -> dict:
    """The candidate with the lowest FD or the highest prompt accuracy; on a tie the first (the preset's rate)."""
    if metric == "fd":
        return min(candidates, key=lambda c: c["fd"])
    return max(candidates, key=lambda c: c[metric])


def _choose_job(out: str, name: str, settings: ArenaSettings, judge_path: str) -> dict:
    """Sample each learning-rate candidate of ``name`` as its tuning row on the *validation* split, judge it, and
    keep the best (:data:`TUNING`); writes ``tuning/<name>/choice.json``."""
    out_dir, split = Path(out), SPLITS["validation"]
    row_name, metric = TUNING[name]
    sampler = rows(settings)[row_name].sampler
    seed = settings.seeds[0]
    prompts = prompt_set(split, settings, seed)
    judges = Judges(judge_path)
    real = _real_features(out_dir / "tuning" / "real_features.safetensors", judges, split, settings)
    candidates = {}
    for rate in settings.learning_rates:
        run_dir = tuning_dir(out_dir, name) / f"lr{rate:g}"
        result = json.loads((run_dir / "result.json").read_text())
        images_path = run_dir / "validation.safetensors"
        if not images_path.is_file():
            sample_row(sampler, result["lora"], prompts.prompts, prompts.seeds, str(images_path))
        measured = judges.measure(load_images(images_path), prompts, real, None)
        candidates[f"{rate:g}"] = {"learning_rate": rate, "steps": result["steps"], "fd": measured["realism"]["fd"], "kid": measured["realism"]["kid"],
                                   "prompt_accuracy": measured["prompt"]["prompt_accuracy"]}
    chosen = best_candidate(list(candidates.values()), metric)
    choice = {"training": name, "row": row_name, "metric": metric, "split": "validation", "seed": seed, "images": len(prompts),
              "candidates": candidates, "learning_rate": chosen["learning_rate"]}
    write_json(tuning_dir(out_dir, name) / "choice.json", choice)
    return choice


def _sample_job(out: str, row_name: str, training: str | None, seed: int, sampler, settings: ArenaSettings, judge_path: str) -> str:
    """Sample a row's replicate (unless its images are there) and measure it with the frozen judges."""
    out_dir, split = Path(out), SPLITS[settings.split]
    prompts = prompt_set(split, settings, seed)
    images_path = out_dir / "samples" / row_name / f"seed{seed}.safetensors"
    if not images_path.is_file():
        lora = None
        if training is not None:
            lora = json.loads((out_dir / "trainings" / training / f"seed{seed}" / "result.json").read_text())["lora"]
        sample_row(sampler, lora, prompts.prompts, prompts.seeds, str(images_path))
    judges = Judges(judge_path)
    reference = json.loads((out_dir / "references" / f"seed{seed}.json").read_text())
    path = out_dir / "measures" / row_name / f"seed{seed}.json"
    value = judges.measure(load_images(images_path), prompts, _real_features(out_dir / "references" / "real_features.safetensors", judges, split, settings), reference["real_same_scenes"]["aspects"],
                           features_path=path.with_suffix(".features.safetensors"))
    write_json(path, value)
    return str(path)


def _real_features(path: Path, judges: Judges, split, settings: ArenaSettings):
    """A split's real reference set's judge features, computed once and kept in ``path`` (two workers may both
    write it: same bytes)."""
    if path.is_file():
        return load_tensor(path)
    features = judges.real_features(split.real_seed, 0, settings.num_real)
    save_tensor(features, path)
    return features


def _reference_job(out: str, seed: int, settings: ArenaSettings, judge_path: str) -> str:
    """Ceiling and floors of one replicate (real renders of the same and of other scenes, uniform noise)."""
    out_dir, split = Path(out), SPLITS[settings.split]
    judges = Judges(judge_path)
    judges._real_features[(split.real_seed, 0, settings.num_real)] = _real_features(out_dir / "references" / "real_features.safetensors", judges, split, settings)
    path = out_dir / "references" / f"seed{seed}.json"
    write_json(path, judges.references(split, settings, seed, prompt_set(split, settings, seed), features_dir=out_dir / "references"))
    return str(path)


def _done(job: Job, outputs: dict) -> bool:
    if job.name == "peer_data":
        return outputs["peer_data"].is_file()
    if job.name in outputs["tuning"]:
        return outputs["tuning"][job.name].is_file()
    name, seed = job.name.rsplit("@", 1)
    if name == "reference":
        return outputs["references"][int(seed)].is_file()
    key = (name, int(seed))
    path = outputs["trainings"].get(key) or outputs["samples"].get(key)
    return path is not None and path.is_file()


def run_arena(out_dir: str | Path = "out/arena", settings: ArenaSettings | None = None, judge_path: str = "") -> dict:
    """Run (or resume) the arena and write ``metrics.json`` and ``report.md``; returns the metrics.

    ``judge_path``: another prompt-judge file than the shipped one (tests use a smoke-built judge)."""
    from .report import write_report

    register()
    missing = [part for part in pocket_world_missing() if not (judge_path and part == "arena prompt judge")]
    if missing:
        raise FileNotFoundError(f"the pocket world is incomplete ({', '.join(missing)} missing); rebuild it with `unifl pocket build`")
    settings = settings or ArenaSettings()
    if settings.quick and settings.split != "validation":
        raise ValueError("a quick (smoke) arena runs on the validation split only: the test split is for the full, frozen run")
    out = Path(out_dir).resolve()  # absolute: each peer runs in its own folder, where a relative path means another place
    _check_settings(out, settings)
    started = time.time()
    jobs, plan = plan_jobs(out, settings, judge_path)
    outputs = plan["outputs"]
    finished = {job.name for job in jobs if _done(job, outputs)}
    todo = [Job(j.name, j.work, tuple(d for d in j.after if d not in finished), j.steps) for j in jobs if j.name not in finished]
    print(f"arena: {len(jobs)} jobs, {len(finished)} already done, {len(todo)} to run ({settings.split} split, seeds {list(settings.seeds)})")

    if todo:
        run_jobs(todo, settings.workers, settings.threads, lambda name, value: None, desc="UniFL arena")
    references = {seed: json.loads(path.read_text()) for seed, path in outputs["references"].items()}
    measures = {}
    for (row_name, seed), path in outputs["samples"].items():
        measures.setdefault(row_name, {})[seed] = json.loads(path.read_text())
    results = {key: json.loads(p.read_text()) for key, p in outputs["trainings"].items() if p.is_file()}
    seconds = time.time() - started
    metrics = write_report(out, settings, plan, measures, references, results, seconds, _add_elapsed(out, seconds))
    print(f"arena report: {out / 'report.md'}")
    return metrics


def _add_elapsed(out: Path, seconds: float) -> float:
    """The wall time of every invocation on this folder so far (``elapsed.json``): a resumed arena's cost is the sum."""
    path = out / "elapsed.json"
    total = (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0) + seconds
    write_json(path, {"seconds": round(total, 1)})
    return total


def _check_settings(out: Path, settings: ArenaSettings) -> None:
    path = out / "settings.json"
    current = json.loads(json.dumps(asdict(settings)))
    comparable = {k: v for k, v in current.items() if k not in ("workers", "threads")}
    if path.is_file():
        before = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("workers", "threads")}
        if before != comparable:
            changed = sorted(k for k in comparable if before.get(k) != comparable[k])
            raise ValueError(f"{out} holds an arena with other settings ({', '.join(changed)}); use another --out or delete that folder")
    write_json(path, current)
