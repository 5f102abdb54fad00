"""Training logs: a CSV file (always) and TensorBoard (when installed)."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLogger:
    """Appends one row per logged step; on resume, rows after the resume step are dropped first."""

    def __init__(self, run_dir: str | Path, tensorboard: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / "logs.csv"
        self.rows: list[dict] = []
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if resume_step is not None and int(r["step"]) <= resume_step]
        self.fields: list[str] = list(self.rows[0].keys()) if self.rows else []
        self._rewrite()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:
                self.writer = None

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: f"{v:.6g}" for k, v in values.items()}}
        self.rows.append(row)
        if any(k not in self.fields for k in row):
            self.fields = list(dict.fromkeys([*self.fields, *row]))
            self._rewrite()
        else:
            with self.path.open("a", newline="", encoding="utf-8") as fh:
                csv.DictWriter(fh, fieldnames=self.fields).writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
