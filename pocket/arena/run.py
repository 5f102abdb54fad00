"""``unifl arena``: plan the jobs, skip those whose outputs exist, run the rest on a worker pool, measure.

Layout of the output folder (everything a job makes is its proof of work; delete it to redo the job):

* ``trainings/<training>/seed<r>/result.json`` (and the LoRA, logs) – one per training and seed;
* ``tuning/<training>/<candidate>/`` and ``choice_<k>.json`` per swept axis, ``choice.json`` last – the
  hyperparameter candidates of UniFL's stages and the peers (first training seed), judged on the validation
  split, each grid widened while its best value sits at an edge (:data:`~.plan.TUNING`);
* ``controls/<row>/choice.json`` – the post-filter and strength chosen for a row on the validation split;
* ``samples/<row>/seed<r>.safetensors`` – the row's images of replicate ``r`` (uint8; a control row's are its
  row's, filtered);
* ``measures/<row>/seed<r>.json`` (+ ``.features``, ``.per_image`` safetensors) and ``references/seed<r>.json``
  – the judges' numbers, measured in the workers right after sampling;
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

import torch

from ...core.machine import source_commit
from ..demo.demo import Job, pocket_world_missing, run_jobs
from ..plugin import register
from .controls import PostFilters, judge_post_filters, post_filters_available
from .counting import count_feedback_models, count_unet, new_counter
from .estimate import MEASURED_COSTS, estimate
from .measure import Judges, load_images, load_tensor, prompt_set, real_images, sample_row, save_images, save_tensor, write_json
from .peers import missing_reason, peer_sources
from .plan import DATA_STREAM, SPLITS, WIDEN_FACTOR, ArenaSettings, Training, own_lora, rows, trainings, tuning_of, tuning_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_GLUE = REPO_ROOT / "bench" / "peers"
AXIS_FLAGS = {"learning_rate": "lr", "discriminator_rate": "dr"}
"""A swept hyperparameter's short name in candidate folders and job names."""


# ------------------------------------------------------------------------------------------- peer sources


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
    return not missing_reason(method)


# ----------------------------------------------------------------------------------------- worker functions


def train_unifl(out: str, training: str, seed: int, overrides: list[str], init_from: str) -> dict:
    """One UniFL LoRA (in a worker): the pocket preset plus ``overrides``; its wall time is a peer's budget."""
    from ...core.config import load_config
    from ...core.training.trainer import TrainerCallbacks, UniFLTrainer
    from ..demo import demo

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
               hyperparameters: dict, lora: str = "unifl") -> dict:
    """A peer through our glue (``bench/peers/<method>.py``) in its own Python; its output goes to train.log."""
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    source = peer_sources()[method]
    script = PEER_GLUE / f"{method.split('_adv')[0]}.py"
    command = [source["python"], str(script), "--out", str(run_dir), "--seed", str(seed), "--budget-seconds", f"{budget_seconds:.1f}",
               "--max-steps", str(max_steps), "--data", data_dir, "--source", source["source"], "--threads", str(threads), "--lora", lora,
               *[f"--{key.replace('_', '-')}={value:g}" for key, value in hyperparameters.items()]]
    if method == "pcm_adv":
        command.append("--adversarial")
    env = {**os.environ, "PYTHONPATH": str(package_path_entry(run_dir)), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run_dir / "train.log", "w", encoding="utf-8") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(run_dir))
    if done.returncode != 0:
        raise RuntimeError(f"peer {method} failed (exit {done.returncode}); see {run_dir / 'train.log'}")
    return json.loads((run_dir / "result.json").read_text())


def write_peer_data(out: str, count: int) -> str:
    """The training stream as files for the peers' own loaders: png + txt pairs and webdataset shards."""
    from ..world.world import PocketDataset, WorldConfig

    folder = Path(out)
    sys.path.insert(0, str(PEER_GLUE))
    from data import write_pocket_files  # noqa: E402  (bench/peers/data.py: our glue, no peer code)

    write_pocket_files(PocketDataset(count, DATA_STREAM[0], WorldConfig(resolution=64)), folder)
    return str(folder)


# ----------------------------------------------------------------------------------------------- the plan


def plan_jobs(out: Path, settings: ArenaSettings, judge_path: str = "", post_filters: bool | None = None) -> tuple[list[Job], dict]:
    """Every job of the arena with its dependencies, and what each job will produce.

    ``post_filters``: whether the judges' post-filters are there (None: look), i.e. whether control rows run."""
    planned, row_plan = trainings(settings), rows(settings)
    missing = {t.method: missing_reason(t.method) for t in planned.values() if t.method != "unifl" and missing_reason(t.method)}
    present = {name: t for name, t in planned.items() if t.method not in missing}
    if post_filters is None:
        post_filters = post_filters_available()
    runnable = {name: row for name, row in row_plan.items() if (row.training is None or row.training in present) and (post_filters or not row.control_of)}
    jobs, outputs, done = [], {"trainings": {}, "samples": {}, "references": {}}, {}
    needs_data = any(t.method in ("lcm_lora", "pcm", "pcm_adv") for t in present.values())
    data_dir = out / "peer_data"
    if needs_data:
        count = 256 if settings.quick else DATA_STREAM[1]
        jobs.append(Job("peer_data", (write_peer_data, str(data_dir), count), steps=1))
        done["peer_data"] = lambda: (data_dir / "DONE").is_file()
    data_after = lambda t: ("peer_data",) if t.method in ("lcm_lora", "pcm", "pcm_adv") else ()  # noqa: E731
    tune_seed = settings.seeds[0]
    choice_job = {}
    for name, t in present.items():
        spec = tuning_spec(name)
        if spec is None or (tuning_dir(out, name) / "choice.json").is_file() or (settings.tuning_from and not settings.sweep_missing):
            continue  # no sweep, or its choice is here (made, or adopted from another arena)
        previous = ()
        for k, axis in enumerate(spec.axes):
            candidates = []
            for value in _grid(axis, settings):
                job = f"{name}~{AXIS_FLAGS[axis]}{value:g}@{tune_seed}"
                after = tuple(f"{d}@{tune_seed}" for d in t.after) + data_after(t) + previous
                jobs.append(Job(job, (_candidate_job, str(out), name, k, value, settings), after, _units(t, settings)))
                done[job] = (lambda name=name, k=k, axis=axis, value=value: _candidate_result(out, name, k, axis, value).is_file())
                candidates.append(job)
            choice = f"{name}~choice{k}@{tune_seed}"
            jobs.append(Job(choice, (_choose_job, str(out), name, k, settings, judge_path), tuple(candidates), _units(t, settings)))
            done[choice] = (lambda name=name, k=k: (tuning_dir(out, name) / f"choice_{k}.json").is_file())
            previous = (choice,)
        choice_job[name] = previous[0]
    first_seed_jobs = set()
    for seed in settings.seeds:
        for name, t in present.items():
            run_dir = out / "trainings" / name / f"seed{seed}"
            outputs["trainings"][(name, seed)] = run_dir / "result.json"
            job = f"{name}@{seed}"
            tuned = choice_job.get(tuning_of(name))
            after = tuple(f"{d}@{seed}" for d in t.after) + data_after(t) + ((tuned,) if tuned else ())
            jobs.append(Job(job, (_training_job, str(out), name, t, seed, settings, str(data_dir)), after, _units(t, settings)))
            done[job] = (lambda p=run_dir / "result.json": p.is_file())
        outputs["references"][seed] = out / "references" / f"seed{seed}.json"
        jobs.append(Job(f"reference@{seed}", (_reference_job, str(out), seed, settings, judge_path), (), max(1, round(4 * settings.images / 256))))
        done[f"reference@{seed}"] = (lambda p=outputs["references"][seed]: p.is_file())
        for row_name, row in runnable.items():
            path = out / "measures" / row_name / f"seed{seed}.json"
            outputs["samples"][(row_name, seed)] = path
            job = f"{row_name}@{seed}"
            done[job] = (lambda p=path: p.is_file())
            if row.control_of:
                choose = f"{row.control_of}~filter@{tune_seed}"
                if choose not in first_seed_jobs:
                    first_seed_jobs.add(choose)
                    after = (f"{row.training}@{tune_seed}",) if row.training else ()
                    jobs.append(Job(choose, (_control_choice_job, str(out), row.control_of, row.training, row.sampler, settings, judge_path), after,
                                    max(1, round(row.sampler.unet_calls_per_image() * settings.images / 256))))
                    done[choose] = (lambda p=controls_dir(out, row.control_of) / "choice.json": p.is_file())
                jobs.append(Job(job, (_control_job, str(out), row_name, row.control_of, seed, settings, judge_path), (f"{row.control_of}@{seed}", choose), 1))
                continue
            after = ((f"{row.training}@{seed}",) if row.training else ()) + (f"reference@{seed}",)
            units = max(1, round((row.sampler.unet_calls_per_image() + 4) * settings.images / 256))  # + the judges, ~4 UNet calls' worth
            jobs.append(Job(job, (_sample_job, str(out), row_name, row.training, seed, row.sampler, settings, judge_path), after, units))
    return jobs, {"outputs": outputs, "done": done, "present": present, "rows": runnable, "planned_rows": row_plan, "missing": missing,
                  "trainings": planned, "post_filters": post_filters}


def tuning_dir(out: Path, training: str) -> Path:
    return out / "tuning" / training


def controls_dir(out: Path, row: str) -> Path:
    return out / "controls" / row


def _units(training: Training, settings: ArenaSettings) -> int:
    """A training job's share of the progress bar: its steps (UniFL) or 100 (a peer: its steps follow its budget)."""
    if training.method != "unifl":
        return 100
    steps1, steps2 = settings.steps
    return steps2 if "stage=2" in training.overrides else steps1


def _grid(axis: str, settings: ArenaSettings) -> tuple[float, ...]:
    return settings.learning_rates if axis == "learning_rate" else settings.discriminator_rates


def _candidate_name(hyperparameters: dict) -> str:
    return "_".join(f"{AXIS_FLAGS[axis]}{value:g}" for axis, value in hyperparameters.items())


def _chosen(out: Path, name: str, axis_index: int) -> dict:
    """The hyperparameters chosen by the axes before ``axis_index`` (``{}`` for the first)."""
    if axis_index == 0:
        return {}
    return json.loads((tuning_dir(out, name) / f"choice_{axis_index - 1}.json").read_text())["hyperparameters"]


def _candidate_result(out: Path, name: str, axis_index: int, axis: str, value: float) -> Path:
    if axis_index > 0 and not (tuning_dir(out, name) / f"choice_{axis_index - 1}.json").is_file():
        return tuning_dir(out, name) / "_not_yet" / "result.json"
    return tuning_dir(out, name) / _candidate_name(_chosen(out, name, axis_index) | {axis: value}) / "result.json"


def _candidate_job(out: str, name: str, axis_index: int, value: float, settings: ArenaSettings) -> dict:
    """Train one candidate of a sweep: the earlier axes at their chosen values, this axis at ``value``."""
    out_dir = Path(out)
    axis = tuning_spec(name).axes[axis_index]
    hyperparameters = _chosen(out_dir, name, axis_index) | {axis: value}
    run_dir = tuning_dir(out_dir, name) / _candidate_name(hyperparameters)
    if (run_dir / "result.json").is_file():
        return json.loads((run_dir / "result.json").read_text())
    training = trainings(settings)[name]
    return _train(out_dir, name, training, settings.seeds[0], settings, str(out_dir / "peer_data"), hyperparameters, run_dir)


def _train(out_dir: Path, name: str, training: Training, seed: int, settings: ArenaSettings, data_dir: str, hyperparameters: dict, target: Path,
           lora: str = "") -> dict:
    if training.method == "unifl":
        init = str(out_dir / "trainings" / training.init_from / f"seed{seed}" / f"unifl-{training.init_from}.safetensors") if training.init_from else ""
        flags = {"learning_rate": "optim.learning_rate", "discriminator_rate": "adversarial.discriminator_lr"}
        return train_unifl(str(target), name, seed, [*training.overrides, *[f"{flags[k]}={v:g}" for k, v in hyperparameters.items()]], init)
    if training.steps_of:
        budget, max_steps = 0.0, json.loads((out_dir / "trainings" / training.steps_of / f"seed{seed}" / "result.json").read_text())["steps"]
    else:
        budget = sum(json.loads((out_dir / "trainings" / b / f"seed{seed}" / "result.json").read_text())["seconds"] for b in training.budget_of)
        max_steps = settings.peer_min_steps
    return train_peer(str(target), name, training.method, seed, budget, max_steps, data_dir, settings.threads, hyperparameters, lora or training.lora)


def _training_job(out: str, name: str, training: Training, seed: int, settings: ArenaSettings, data_dir: str) -> dict:
    """A training seed of the test run, with the hyperparameters the validation sweep chose; the chosen candidate
    (same seed, data and budget) is that seed's training."""
    out_dir = Path(out)
    target = out_dir / "trainings" / name / f"seed{seed}"
    tuned = tuning_of(name)
    choice_path = tuning_dir(out_dir, tuned) / "choice.json"
    choice = json.loads(choice_path.read_text()) if choice_path.is_file() else {"hyperparameters": {}}
    if name == tuned and seed == choice.get("seed") and choice.get("run"):
        return _adopt_candidate(Path(choice["run"]), target)
    return _train(out_dir, name, training, seed, settings, data_dir, choice["hyperparameters"], target, lora=choice.get("lora", ""))


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
    """The candidate with the lowest FD or the highest prompt accuracy; on a tie the first."""
    if metric == "fd":
        return min(candidates, key=lambda c: c["fd"])
    return max(candidates, key=lambda c: c[metric])


def widened(values: list[float], best: float) -> float | None:
    """The next value beyond the grid's edge when ``best`` sits on it (``WIDEN_FACTOR`` further out), else None."""
    if best == max(values) and best != min(values):
        return best * WIDEN_FACTOR
    if best == min(values) and best != max(values):
        return best / WIDEN_FACTOR
    return None


def _choose_job(out: str, name: str, axis_index: int, settings: ArenaSettings, judge_path: str) -> dict:
    """Judge every candidate of one axis of ``name``'s sweep as its tuning row on the *validation* split, widen the
    grid (training each new candidate here) while the best value sits at an edge, and keep the best
    (``tuning/<name>/choice_<k>.json``; after the last axis also ``choice.json``)."""
    out_dir, split = Path(out), SPLITS["validation"]
    spec = tuning_spec(name)
    axis = spec.axes[axis_index]
    sampler = rows(settings)[spec.row].sampler
    seed = settings.seeds[0]
    prompts = prompt_set(split, settings, seed)
    judges = Judges(judge_path)
    real = _real_features(out_dir / "tuning" / "real_features.safetensors", judges, split, settings)
    earlier = _chosen(out_dir, name, axis_index)
    training = trainings(settings)[name]
    candidates, values, widenings = {}, list(_grid(axis, settings)), 0

    def judge(value: float) -> None:
        hyperparameters = earlier | {axis: value}
        run_dir = tuning_dir(out_dir, name) / _candidate_name(hyperparameters)
        if not (run_dir / "result.json").is_file():
            _train(out_dir, name, training, seed, settings, str(out_dir / "peer_data"), hyperparameters, run_dir)
        result = json.loads((run_dir / "result.json").read_text())
        images_path = run_dir / "validation.safetensors"
        if not images_path.is_file():
            sample_row(sampler, result["lora"], prompts.prompts, prompts.seeds, str(images_path))
        measured = judges.measure(load_images(images_path), prompts, real, None, real=_real_images(out_dir / "tuning" / "real_images.safetensors", split, settings) if judges.spectrum else None)
        candidates[f"{value:g}"] = {axis: value, "hyperparameters": hyperparameters, "run": str(run_dir), "steps": result["steps"],
                                    "fd": measured["realism"]["fd"], "kid": measured["realism"]["kid"], "prompt_accuracy": measured["prompt"]["prompt_accuracy"]}

    for value in values:
        judge(value)
    while True:
        best = best_candidate([candidates[f"{v:g}"] for v in values], spec.metric)
        beyond = widened(values, best[axis])
        if beyond is None or widenings >= settings.widen_limit:
            break
        values.append(beyond)
        widenings += 1
        judge(beyond)
    choice = {"training": name, "row": spec.row, "metric": spec.metric, "axis": axis, "split": "validation", "seed": seed, "images": len(prompts),
              "candidates": candidates, "grid": sorted(values), "widened": widenings, "at_edge": widened(values, best[axis]) is not None,
              "hyperparameters": best["hyperparameters"], "run": best["run"]}
    write_json(tuning_dir(out_dir, name) / f"choice_{axis_index}.json", choice)
    if axis_index == len(spec.axes) - 1:
        axes = [json.loads((tuning_dir(out_dir, name) / f"choice_{k}.json").read_text()) for k in range(len(spec.axes))]
        write_json(tuning_dir(out_dir, name) / "choice.json", {"training": name, "row": spec.row, "metric": spec.metric, "seed": seed, "images": len(prompts),
                                                               "hyperparameters": best["hyperparameters"], "run": best["run"], "axes": axes})
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
    return _measure(out_dir, row_name, seed, load_images(images_path), settings, judge_path)


def _measure(out_dir: Path, row_name: str, seed: int, images, settings: ArenaSettings, judge_path: str) -> str:
    split = SPLITS[settings.split]
    judges = Judges(judge_path)
    reference = json.loads((out_dir / "references" / f"seed{seed}.json").read_text())
    path = out_dir / "measures" / row_name / f"seed{seed}.json"
    real = _real_features(out_dir / "references" / "real_features.safetensors", judges, split, settings)
    value = judges.measure(images, prompt_set(split, settings, seed), real, reference["real_same_scenes"]["aspects"],
                           features_path=path.with_suffix(".features.safetensors"), per_image_path=path.with_suffix(".per_image.safetensors"),
                           real=_real_images(out_dir / "references" / "real_images.safetensors", split, settings) if judges.spectrum else None)
    write_json(path, value)
    return str(path)


def _control_choice_job(out: str, row_name: str, training: str | None, sampler, settings: ArenaSettings, judge_path: str,
                        post_filters: PostFilters | None = None) -> dict:
    """Choose ``row_name``'s post-filter on the validation split: its first training seed sampled on the validation
    prompts and noise, against the validation split's real images (``controls/<row>/choice.json``)."""
    out_dir, split, seed = Path(out), SPLITS["validation"], settings.seeds[0]
    post_filters = post_filters or judge_post_filters(judge_path)
    folder = controls_dir(out_dir, row_name)
    images_path = folder / "validation.safetensors"
    if not images_path.is_file():
        prompts = prompt_set(split, settings, seed)
        lora = json.loads((out_dir / "trainings" / training / f"seed{seed}" / "result.json").read_text())["lora"] if training else None
        sample_row(sampler, lora, prompts.prompts, prompts.seeds, str(images_path))
    choice = post_filters.choose(load_images(images_path), real_images(split.real_seed, 0, settings.num_real))
    choice = {"row": row_name, "split": "validation", "seed": seed, **choice}
    write_json(folder / "choice.json", choice)
    return choice


def _control_job(out: str, control: str, row_name: str, seed: int, settings: ArenaSettings, judge_path: str, post_filters: PostFilters | None = None) -> str:
    """A control row's replicate: its row's test images through the filter chosen for it, measured like any row."""
    out_dir = Path(out)
    post_filters = post_filters or judge_post_filters(judge_path)
    choice = json.loads((controls_dir(out_dir, row_name) / "choice.json").read_text())
    filtered = post_filters.apply(load_images(out_dir / "samples" / row_name / f"seed{seed}.safetensors"), choice).clamp(0, 1)
    save_images((filtered * 255).round().to(torch.uint8), out_dir / "samples" / control / f"seed{seed}.safetensors")
    return _measure(out_dir, control, seed, load_images(out_dir / "samples" / control / f"seed{seed}.safetensors"), settings, judge_path)


def _real_features(path: Path, judges: Judges, split, settings: ArenaSettings):
    """A split's real reference set's judge features, computed once and kept in ``path`` (two workers may both
    write it: same bytes)."""
    if path.is_file():
        return load_tensor(path)
    features = judges.real_features(split.real_seed, 0, settings.num_real)
    save_tensor(features, path)
    return features


def _real_images(path: Path, split, settings: ArenaSettings):
    """A split's real reference images (for the spectrum measure), rendered once and kept in ``path``."""
    if not path.is_file():
        save_images((real_images(split.real_seed, 0, settings.num_real) * 255).round().to(torch.uint8), path)
    return load_images(path)


def _reference_job(out: str, seed: int, settings: ArenaSettings, judge_path: str) -> str:
    """Ceiling and floors of one replicate (real renders of the same and of other scenes, uniform noise)."""
    out_dir, split = Path(out), SPLITS[settings.split]
    judges = Judges(judge_path)
    judges._real_features[(split.real_seed, 0, settings.num_real)] = _real_features(out_dir / "references" / "real_features.safetensors", judges, split, settings)
    path = out_dir / "references" / f"seed{seed}.json"
    write_json(path, judges.references(split, settings, seed, prompt_set(split, settings, seed), features_dir=out_dir / "references"))
    return str(path)


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
    if "best" in settings.lora_variants and not settings.tuning_from:
        raise ValueError("LoRA variant 'best' takes each peer's better variant from a tuning run: give --tuning-from (`make arena-tune` makes out/arena-tune)")
    out = Path(out_dir).resolve()  # absolute: each peer runs in its own folder, where a relative path means another place
    _check_settings(out, settings)
    if settings.tuning_from:
        adopt_tuning(tuning_source(settings.tuning_from), out, settings)

    started = time.time()
    jobs, plan = plan_jobs(out, settings, judge_path)
    for method, reason in plan["missing"].items():
        print(f"arena: PEER NOT RUN: {method}: {reason}", file=sys.stderr)
    if settings.controls and not plan["post_filters"]:
        print("arena: CONTROLS NOT RUN: the judges have no post-filter registry (unifl.pocket.judges.post_filters)", file=sys.stderr)
    finished = {job.name for job in jobs if plan["done"][job.name]()}
    todo = [Job(j.name, j.work, tuple(d for d in j.after if d not in finished), j.steps) for j in jobs if j.name not in finished]
    predicted = estimate(settings, MEASURED_COSTS, present=set(plan["present"]), rows_run=set(plan["rows"]))
    print(f"arena: {len(jobs)} jobs, {len(finished)} already done, {len(todo)} to run ({settings.split} split, seeds {list(settings.seeds)}, "
          f"budget ×{settings.budget}); predicted {predicted['wall'] / 60:.0f} min for the whole plan on {settings.workers} workers (`pocket/arena/estimate.py`)")

    if todo:
        run_jobs(todo, settings.workers, settings.threads, lambda name, value: None, desc="UniFL arena")
    references = {seed: json.loads(path.read_text()) for seed, path in plan["outputs"]["references"].items()}
    measures = {}
    for (row_name, seed), path in plan["outputs"]["samples"].items():
        measures.setdefault(row_name, {})[seed] = json.loads(path.read_text())
    results = {key: json.loads(p.read_text()) for key, p in plan["outputs"]["trainings"].items() if p.is_file()}
    seconds = time.time() - started
    metrics = write_report(out, settings, plan, measures, references, results, seconds, _add_elapsed(out, seconds))
    print(f"arena report: {out / 'report.md'}")
    return metrics


def tuning_source(folder: str) -> Path:
    """``--tuning-from``'s folder: as given, or, when relative and not under the working folder, under this
    repository's root (the committed choices, ``pocket/arena/tuned``, from wherever ``unifl arena`` is started)."""
    path = Path(folder)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    return path.resolve()


def shown_path(path: Path) -> str:
    """A path as the report names it: relative to this repository when inside it (no machine's folders in the docs)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def adopt_tuning(source: Path, out: Path, settings: ArenaSettings) -> None:
    """Take another arena's chosen hyperparameters (the standard run the committed tuning run's, the budget curve's
    ×4 and ×16 the standard run's): each ``choice.json`` is copied without its candidate run, which trained on another
    split or budget. A peer whose LoRA is ``"best"`` takes the variant whose chosen candidate scored better there.
    A missing choice is refused, unless ``settings.sweep_missing`` (this run sweeps it)."""
    planned = trainings(settings)
    for name, training in planned.items():
        if tuning_spec(name) is None or (training.method != "unifl" and missing_reason(training.method)):
            continue  # a peer that is not on this machine is a "not run" row, whatever was tuned
        target = tuning_dir(out, name) / "choice.json"
        if target.is_file():
            continue
        path = tuning_dir(source, name) / "choice.json"
        if not path.is_file():
            if settings.sweep_missing:
                continue
            raise FileNotFoundError(f"{path} is missing: run the tuning arena (`make arena-tune`) and export its choices "
                                    f"(`python -m unifl.pocket.arena.tuned out/arena-tune`) first, or give --tuning-from another folder")
        choice = json.loads(path.read_text())
        if training.lora == "best" and "lora" not in choice:
            choice = better_lora_variant(choice, tuning_dir(source, own_lora(name)) / "choice.json")
        write_json(target, {**choice, "run": "", "from": shown_path(path)})


def chosen_score(choice: dict) -> float:
    """The judge number (``choice["metric"]``) of a sweep's chosen candidate on the validation split."""
    last = choice["axes"][-1]
    return float(last["candidates"][f"{choice['hyperparameters'][last['axis']]:g}"][choice["metric"]])


def better_lora_variant(unifl_choice: dict, own_path: Path) -> dict:
    """Of a peer's two tuned variants (UniFL's LoRA, its script's own), the choice that scored better on the tuning
    metric, with ``lora`` naming it and both scores kept for the report."""
    if not own_path.is_file():
        raise FileNotFoundError(f"{own_path} is missing: the tuning run must sweep both LoRA variants (`unifl arena --tune` does)")
    choices = {"unifl": unifl_choice, "own": json.loads(own_path.read_text())}
    scores = {variant: chosen_score(choice) for variant, choice in choices.items()}
    pick = min if unifl_choice["metric"] == "fd" else max
    variant = pick(scores, key=scores.get)
    return {**choices[variant], "lora": variant, "lora_scores": scores}


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
