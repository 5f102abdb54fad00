"""`unifl demo --quick`: the same path as `make demo`, small enough for the suite."""

import json

import pytest

from unifl.core.cli import main

pytestmark = pytest.mark.slow


def test_demo_quick_writes_report_metrics_and_loras(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"base_20", "stage1_20", "base_4", "stage2_4"}
    for m in metrics["models"].values():
        assert set(m["aesthetic"]) >= {"color", "detail", "lighting"}
    report = (out / "report.md").read_text()
    assert "| base_20 |" in report and "grid_stage2_4.png" in report
    for lora in metrics["loras"].values():
        assert lora.endswith(".safetensors")
    assert (out / "grid_stage2_4.png").is_file()
