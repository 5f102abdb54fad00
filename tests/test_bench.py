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
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=240)
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
