"""Training logs: a CSV file (always) and TensorBoard (when installed)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..files import atomic_write_text, read_text


class RunLogger:
    """Appends one row per logged step; on resume, rows after the resume step are dropped first."""

    def __init__(self, run_dir: str | Path, tensorboard: bool, resume_step: int | None = None):
        self.path = Path(run_dir) / "logs.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.path.is_file():
            text = read_text(self.path, "training log")
            try:
                self.rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if int(r["step"]) <= resume_step]
            except (KeyError, TypeError, ValueError) as err:  # a hand-edited or damaged log
                raise ValueError(f"{self.path}: not a UniFL training log ({type(err).__name__}: {err}); move it away to resume without the old rows") from None
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
        """Replace the whole file atomically (a full disk keeps the old rows)."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: f"{v:.6g}" for k, v in values.items()}}
        self.rows.append(row)
        if any(k not in self.fields for k in row):
            self.fields = list(dict.fromkeys([*self.fields, *row]))
            self._rewrite()
        else:
            self._append(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def _append(self, row: dict) -> None:
        """One row at the end; a write that fails half-way (a full disk) is cut back off, so no half row stays."""
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            end = fh.tell()
            try:
                csv.DictWriter(fh, fieldnames=self.fields).writerow(row)
                fh.flush()
            except OSError:
                fh.truncate(end)
                raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
