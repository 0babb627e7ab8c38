"""Metrics: correct-prediction counts, confusion-matrix mIoU, boundary F1, and a CSV log that
survives resuming."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .datasets import IGNORE_INDEX

__all__ = [
    "ConfusionMatrix",
    "CsvLog",
    "boundary_counts",
    "boundary_f1",
    "correct_counts",
]


def correct_counts(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 hits and scored units of a batch: images (logits [B, K], target [B]) or pixels
    (logits [B, K, H, W], target [B, H, W]; pixels labelled IGNORE_INDEX are not scored).

    Returns:
        (correct, scored), two [] int64 tensors on the logits' device.
    """
    prediction = logits.detach().argmax(1)
    if logits.ndim == 4:
        keep = target != IGNORE_INDEX
        return ((prediction == target) & keep).sum(), keep.sum()
    return (prediction == target).sum(), torch.tensor(target.shape[0], device=target.device)


class ConfusionMatrix:
    """Accumulates a K x K confusion matrix over batches of per-pixel predictions."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
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


def _boundaries(labels: Tensor) -> Tensor:
    """[B, H, W] int -> [B, H, W] bool, pixels whose right or lower neighbour has another label."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :-1, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    return edge


def boundary_counts(prediction: Tensor, target: Tensor, tolerance: int = 2) -> Tensor:
    """Counts of the boundary F-score (Martin et al.'s BSDS measure, with a square tolerance).

    Args:
        prediction: [B, H, W] int64 predicted labels.
        target: [B, H, W] int64 true labels.
        tolerance: a boundary pixel is matched by one within this many pixels (Chebyshev).

    Returns:
        [4] float64: predicted boundary pixels within `tolerance` of a true boundary, predicted
        boundary pixels, true boundary pixels within `tolerance` of a predicted one, true
        boundary pixels. Sum them over a dataset, then `boundary_f1`.
    """
    pred_edge, true_edge = _boundaries(prediction), _boundaries(target)
    kernel = 2 * tolerance + 1

    def near(edge: Tensor) -> Tensor:
        return F.max_pool2d(edge[:, None].float(), kernel, 1, tolerance)[:, 0] > 0

    return torch.stack(
        [
            (pred_edge & near(true_edge)).sum(),
            pred_edge.sum(),
            (true_edge & near(pred_edge)).sum(),
            true_edge.sum(),
        ]
    ).to(torch.float64)


def boundary_f1(counts: Tensor) -> float:
    """F = 2PR / (P + R) with P = counts[0] / counts[1], R = counts[2] / counts[3]."""
    precision = float(counts[0] / counts[1]) if counts[1] else 0.0
    recall = float(counts[2] / counts[3]) if counts[3] else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


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
            writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, object]) -> None:
        with open(self.path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=self.fields).writerow(
                {k: _format(row.get(k, "")) for k in self.fields}
            )


def _format(value: object) -> object:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value
