"""`unifl demo`: the pocket-world demo end to end (`--quick`), its job pool and its claim checks."""

import json
import time
from pathlib import Path

import pytest
from unifl.cli import main
from unifl.pocket.demo.demo import Job, check_claims, run_jobs

ASPECTS = {"color", "layout", "detail", "lighting"}


@pytest.mark.slow
def test_demo_quick_writes_report_metrics_loras_and_downstream_grids(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    # metrics.json in the shape, every model measured on the same images by the held-out judges
    assert set(metrics["models"]) == {"base_20", "stage1_20", "base_4", "stage2_4"}
    assert set(metrics["ablations"]) == {"stage1_no_pefl_20", "stage1_global_reward_20", "stage2_no_adversarial_4"}
    for m in [*metrics["models"].values(), *metrics["ablations"].values(), metrics["real_reference"]]:
        assert isinstance(m["fd"], float) and 0 <= m["structure_iou"] <= 1 and set(m["aesthetic"]) == ASPECTS
    assert metrics["images_per_model"] == 8
    assert len(metrics["claims"]) == 4 and all(isinstance(c["holds"], bool) for c in metrics["claims"])

    # the LoRAs, the grids and the report that shows them
    assert set(metrics["loras"]) == {"stage1", "stage2", "stage1_no_pefl", "stage1_global_reward", "stage2_no_adversarial"}
    assert all((out / name / f"unifl-{name}.safetensors").is_file() for name in metrics["loras"])
    report = (out / "report.md").read_text()
    for grid in ("base_20", "stage1_20", "base_4", "stage2_4", "controlnet", "animatediff"):
        assert f"grid_{grid}.png" in report and (out / f"grid_{grid}.png").is_file()
    assert "| base_20 |" in report and "## Ablations" in report and "## Do the paper's claims hold here?" in report
    assert {"control_class_iou_with_lora", "frame_object_iou_with_lora"} <= set(metrics["downstream"])
    assert (out / "stage1" / "train.log").read_text().strip()  # each worker's own output is kept, not lost


def _meet_then_stamp(name: str, other: str, folder: str) -> tuple[bool, float, float]:
    """Mark this job as started, then wait (a minute at most) for ``other`` to have started too: True only if
    the two ran side by side, whatever the pool's start-up costs on a loaded machine."""
    started = time.time()
    (Path(folder) / name).touch()
    while not (Path(folder) / other).exists():
        if time.time() - started > 60:
            return False, started, time.time()
        time.sleep(0.01)
    return True, started, time.time()


def test_job_pool_respects_dependencies_and_runs_independent_jobs_side_by_side(tmp_path):
    results = {}
    jobs = [Job("first", (_meet_then_stamp, "first", "beside", str(tmp_path))), Job("beside", (_meet_then_stamp, "beside", "first", str(tmp_path))),
            Job("after_first", (_meet_then_stamp, "after_first", "first", str(tmp_path)), after=("first",))]
    run_jobs(jobs, workers=2, threads=1, on_result=lambda name, value: results.setdefault(name, value))
    assert set(results) == {"first", "beside", "after_first"}
    assert results["first"][0] and results["beside"][0], "the two independent jobs did not run side by side"
    assert results["after_first"][1] >= results["first"][2]  # started only once its dependency had finished


def _fail(message: str):
    raise ValueError(message)


def test_job_pool_names_the_job_that_failed():
    with pytest.raises(RuntimeError, match="'broken'"):
        run_jobs([Job("broken", (_fail, "no weights"))], workers=1, threads=1, on_result=lambda *_: None)


def test_job_pool_refuses_a_dependency_no_job_makes():
    with pytest.raises(ValueError, match="stage0"):
        run_jobs([Job("stage2", (_fail, "never runs"), after=("stage0",))], workers=1, threads=1, on_result=lambda *_: None)


def _model(fd: float, iou: float, aesthetic: float) -> dict:
    return {"fd": fd, "structure_iou": iou, "aesthetic": dict.fromkeys(ASPECTS, aesthetic)}


def test_claims_are_checked_with_their_margins():
    models = {"base_20": _model(100, 0.5, 0.0), "stage1_20": _model(90, 0.6, 0.2), "base_4": _model(120, 0.5, 0.0), "stage2_4": _model(100, 0.5, 0.1)}
    holds = [h for _, h, _ in check_claims(models)]
    assert holds == [True, True, False, True]  # 100 is not ≥ 20 % below 120; it is within 25 % of 100
    models["stage2_4"] = _model(95, 0.5, 0.1)
    assert [h for _, h, _ in check_claims(models)][2]
    models["stage1_20"] = _model(90, 0.505, 0.02)  # a stage 1 that barely moves the base holds no claim
    assert [h for _, h, _ in check_claims(models)][:2] == [False, False]
