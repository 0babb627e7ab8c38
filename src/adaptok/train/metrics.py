"""Metrics: accuracy, confusion-matrix mIoU, and a CSV log that survives resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ConfusionMatrix", "CsvLog", "accuracy_count"]


def accuracy_count(logits: Tensor, target: Tensor) -> Tensor:
    """[] int64 number of correct top-1 predictions: logits [B, K], target [B]."""
    return (logits.argmax(-1) == target).sum()


class ConfusionMatrix:
    """Accumulates a K x K confusion matrix over batches of per-pixel predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """prediction, target: [B, H, W] int64 (target == ignore_index is not scored)."""
        keep = target != self.ignore_index
        true = target[keep].cpu()
        pred = prediction[keep].cpu()
        k = self.num_classes
        self.matrix += torch.bincount(true * k + pred, minlength=k * k).view(k, k)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes present in the targets or predictions."""
        matrix = self.matrix.double()
        intersection = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - intersection
        present = union > 0
        return float((intersection[present] / union[present]).mean()) if present.any() else 0.0

    @property
    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diagonal().sum()) / total if total else 0.0


class CsvLog:
    """Append rows of metrics to a CSV file (header written once).

    Args:
        path: the CSV file.
        fields: column names.
        resume_step: when resuming, rows logged after this step (by a run killed after its last
            checkpoint) are dropped so the log matches the resumed run; None: start afresh.
    """

    def __init__(self, path: str | Path, fields: list[str], resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as stream:
                rows = [r for r in csv.DictReader(stream) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, object]) -> None:
        with open(self.path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=self.fields).writerow(
                {k: _format(row.get(k, "")) for k in self.fields}
            )


def _format(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))
