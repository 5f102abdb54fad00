"""The training-step benchmark runs end to end and prints both stages' tables (timings are not tested)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"
NUMBER = r"\d+(?:\.\d+)?"

pytestmark = pytest.mark.slow


def table_rows(output: str, stage: str) -> list[list[str]]:
    """The data rows of the markdown table under ``### Stage <stage>``."""
    section = output.split(f"### Stage {stage}:", 1)[1].split("###", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # drop the header row


def test_quick_benchmark_prints_both_stages_with_numeric_columns():
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "machine: CPU" in out and "torch" in out
    for stage in ("1", "2"):
        rows = table_rows(out, stage)
        assert [row[0] for row in rows] == ["naive full-chain ReFL", "UniFL train_step"]
        for row in rows:
            measured, ratios = row[1:4], row[4:]  # wall s, CPU s, peak MiB; then the three ratios
            assert all(re.fullmatch(NUMBER, cell) and float(cell) > 0 for cell in measured), row
            assert len(ratios) == 3 and all(re.fullmatch(NUMBER + "x", cell) for cell in ratios), row
        assert rows[0][4:] == ["1.00x"] * 3, "ratios are relative to the naive baseline"
    assert out.count("max relative difference") == 2
    for stage, configs in (("1", ["today", "short prefixes"]), ("2", ["today", "shared rollout", "shared, steps 1/2/4/8", "shared, lean feedback", "short aesthetic prefix"])):
        section = out.split(f"### Stage {stage} per term:", 1)[1].split("###", 1)[0]
        header = next(line for line in section.splitlines() if line.startswith("| term |"))
        assert [c.split(":")[0].strip() for c in header.strip("|").split("|")[1::3]] == configs
        total = next(line for line in section.splitlines() if line.startswith("| **per step** |"))
        cells = [c.strip() for c in total.strip("|").split("|")[1:]]
        assert len(cells) == 3 * len(configs) and all(re.fullmatch(NUMBER, c) for c in cells), total
        if stage == "2":  # the feedback cuts: the same UNet evaluations as the shared rollout, fewer feedback ones
            shared_unet, shared_feedback = (float(cells[3 * configs.index("shared rollout") + k]) for k in (0, 1))
            lean_unet, lean_feedback = (float(cells[3 * configs.index("shared, lean feedback") + k]) for k in (0, 1))
            assert lean_unet == shared_unet and lean_feedback < shared_feedback, total
    stage2 = out.split("### Stage 2 per term:", 1)[1]
    today, shared = (float(x) for x in re.findall(r"\| \*\*per step\*\* \| (" + NUMBER + r")(?: \| [^|]+){2} \| (" + NUMBER + ")", stage2)[0])
    assert shared < today, "the shared rollout makes fewer UNet evaluations than today's stage 2"
    stage1 = out.split("### Stage 1 per term:", 1)[1]
    today, short = (float(x) for x in re.findall(r"\| \*\*per step\*\* \| (" + NUMBER + r")(?: \| [^|]+){2} \| (" + NUMBER + ")", stage1)[0])
    assert short < today, "shortened prefixes make fewer UNet evaluations than today's stage 1"
    assert "adversarial + aesthetic (one rollout)" in stage2 and "shared rollout / today: UNet evaluations" in stage2


GPU_CHECK = BENCH.parent / "gpu_check.sh"


def test_the_gpu_check_runs_its_plan_end_to_end_as_a_dry_run_on_the_cpu(tmp_path):
    """The one command a GPU session runs (bench/gpu_check.sh), at toy widths and 64 px: its plan, its report
    and the 1-step training, so a session lent a GPU for minutes fails only on what needs the GPU."""
    import json
    import os

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(GPU_CHECK), "--dry-run"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = json.loads((tmp_path / "real_size.json").read_text())
    assert {(r["run"]["architecture"], r["run"]["stage"], r["run"]["resolution"]) for r in results} == {(a, s, 64) for a in ("sd15", "sdxl") for s in ("1", "2")}
    assert not [r for r in results if "error" in r]
    assert "| sdxl | UniFL stage 2 | 64 | lean |" in (tmp_path / "real_size.md").read_text()
    assert "1 stage-1 steps at 64 px" in (tmp_path / "train1.txt").read_text()
    assert "none (a dry run on the CPU)" in (tmp_path / "gpu.txt").read_text()


def test_a_failed_run_fails_the_real_size_benchmark(tmp_path):
    """This Python has no TRL, so its AlignProp step fails: the benchmark says so and exits 1 (the GPU check too)."""
    command = [sys.executable, str(BENCH.parent / "real_size.py"), "--quick", "--device", "cpu", "--threads", "1", "--lean-only",
               "--architectures", "sd15", "--sd15-resolutions", "64", "--alignprop-python", sys.executable, "--json", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "1 run(s) failed: sd15 AlignProp 64px lean" in done.stderr, done.stderr[-2000:]
    assert "| sd15 | UniFL stage 1 | 64 | lean |" in done.stdout  # what did run is still reported


def test_the_pocket_vae_cost_bench_prices_every_presets_vae_beside_the_unet():
    from unifl.pocket.models.ldm import PRESETS

    done = subprocess.run([sys.executable, str(BENCH.parent / "pocket_vae_cost.py"), "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines() if line.startswith("| (")]
    assert {row[0] for row in rows} == {str(settings.vae_channels) for settings in PRESETS.values()} and "v1" in rows[0][2]
    assert {row[1] for row in rows} >= {"16×16"} and all(re.fullmatch(NUMBER, row[i]) for row in rows for i in (4, 5, 6, 7))
    assert "thread(s) on" in done.stdout
