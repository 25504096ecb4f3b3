"""Metrics of a run: ``metrics.csv`` (always) and TensorBoard events (when installed).

``metrics.csv`` has a fixed header (:data:`COLUMNS` for the contrastive
trainer; the classifier passes its own ``columns``); every row is appended
with one ``os.write`` on a file opened with ``O_APPEND`` and fsync'ed, so a
row is either fully there or not at all after a crash (rows are far below
the size the kernel appends atomically).  Empty cells mean "not measured at
this row" (train rows have no val_* values and the reverse).

On resume :meth:`MetricsLog.truncate_after` drops rows logged after the step
of the checkpoint being resumed (a run killed between a checkpoint and its
next one re-does those steps and logs them again), rewriting the file
atomically.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from .config import atomic_write_bytes

__all__ = ["COLUMNS", "MetricsLog"]

COLUMNS = ("step", "epoch", "split", "loss", "acc", "temperature", "lr", "grad_norm", "patterns_per_s",
           "val_top1", "val_top5", "val_n", "elapsed_s")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class MetricsLog:
    """Append-only CSV metrics (+ optional TensorBoard) for rank 0 of a run.

    columns: the header; the first must be ``step`` (what :meth:`truncate_after` reads).
    """

    def __init__(self, out_dir, *, columns=COLUMNS, tensorboard: bool = True, enabled: bool = True):
        columns = tuple(columns)
        if not columns or columns[0] != "step" or len(set(columns)) != len(columns):
            raise ValueError(f"metrics columns must be distinct names starting with 'step', got {list(columns)}")
        self.columns = columns
        self.path = Path(out_dir) / "metrics.csv"
        self.enabled = enabled
        self._tb = None
        self.tensorboard_note = ""
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
            if header is not None and tuple(header) != columns:
                raise ValueError(f"{self.path} has columns {header}, expected {list(columns)}; "
                                 "move it away or use another run.out_dir")
            if header is None:
                atomic_write_bytes(self.path, self._line(columns))
        else:
            atomic_write_bytes(self.path, self._line(columns))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tensorboard_note = "TensorBoard not installed (pip install tensorboard): metrics.csv only"
            else:
                self._tb = SummaryWriter(log_dir=os.fspath(Path(out_dir) / "tb"))

    @staticmethod
    def _line(cells) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        return buf.getvalue().encode("utf-8")

    def log(self, **values) -> None:
        """Append one row; keys must be names of ``self.columns``."""
        if not self.enabled:
            return
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; columns are {list(self.columns)}")
        data = self._line([_cell(values.get(c)) for c in self.columns])
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._tb is not None:
            step = int(values.get("step", 0))
            split = values.get("split", "train")
            for key, value in values.items():
                if key in ("step", "epoch", "split") or value is None:
                    continue
                self._tb.add_scalar(f"{split}/{key}", float(value), step)
            self._tb.flush()

    def rows(self) -> list[dict]:
        """All rows as dicts of strings."""
        with open(self.path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def truncate_after(self, step: int) -> int:
        """Drop rows with step > ``step`` (atomic rewrite); returns how many were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], rows[1:]
        keep = [r for r in body if r and int(r[0]) <= step]
        if len(keep) == len(body):
            return 0
        atomic_write_bytes(self.path, b"".join(self._line(r) for r in [header] + keep))
        return len(body) - len(keep)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
