"""Training logs: CSV files (always) and TensorBoard event files (when ``tensorboard`` is installed).

``RUN/train_log.csv`` and ``RUN/val_log.csv`` get one row per log step. On resume, rows from
steps after the resumed step (written by the interrupted run after its last checkpoint) are
dropped first, so the logs always describe exactly the run that the checkpoints continue.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from DiffuX2CTLib.io.atomic import atomic_file


class CSVLog:
    """Append rows with a fixed header to a CSV file; :meth:`truncate_after` drops later steps."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields

    def truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(float(r.get("step", 0))) <= step]
        with atomic_file(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: Mapping[str, Any]) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class RunLogger:
    """CSV and TensorBoard logging of a run (use on the main process only)."""

    TRAIN_FIELDS = ["step", "epoch", "loss", "simple", "proj", "lr", "grad_norm", "samples_per_s", "seconds"]
    VAL_FIELDS = ["step", "psnr_db", "ssim3d", "mae_hu", "rmse_hu", "seconds"]

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.train = CSVLog(self.run_dir / "train_log.csv", self.TRAIN_FIELDS)
        self.val = CSVLog(self.run_dir / "val_log.csv", self.VAL_FIELDS)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to CSV only (pip install tensorboard)", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def resume_at(self, step: int) -> None:
        self.train.truncate_after(step)
        self.val.truncate_after(step)

    def log_train(self, row: Mapping[str, Any]) -> None:
        self.train.append(row)
        if self.writer is not None:
            for key in ("loss", "simple", "proj", "lr", "grad_norm", "samples_per_s"):
                self.writer.add_scalar(f"train/{key}", float(row[key]), int(row["step"]))

    def log_val(self, row: Mapping[str, Any]) -> None:
        self.val.append(row)
        if self.writer is not None:
            for key in ("psnr_db", "ssim3d", "mae_hu"):
                self.writer.add_scalar(f"val/{key}", float(row[key]), int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


__all__ = ["CSVLog", "RunLogger"]
