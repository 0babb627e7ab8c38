"""The two loops `fit` runs: one optimiser step on a batch, and an evaluation over a dataset.

Both take any `nn.Module` mapping images [B, C, H, W] to logits ([B, K] classification,
[B, K, H, W] dense); an `AdaptiveViT` also reports its tokens per image. Datasets with a
`batch(index)` method (`TensorImages`) are read one gathered batch at a time; others go through
a DataLoader.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import AdaptokError
from ..models import AdaptiveViT
from .augment import random_resized_crop_flip, step_generator
from .datasets import IGNORE_INDEX
from .distributed import DistInfo, ShardSampler, all_reduce_sum
from .metrics import ConfusionMatrix, boundary_counts, boundary_f1, correct_counts

__all__ = [
    "EVAL_FIELDS",
    "TRAIN_FIELDS",
    "Distillation",
    "EvalResult",
    "MetricWindow",
    "autocast_context",
    "batches",
    "compute_loss",
    "evaluate",
    "forward_counts",
    "train_step",
    "unwrap",
]

TRAIN_FIELDS = ["step", "epoch", "loss", "accuracy", "tokens_per_image", "images_per_second", "lr"]
EVAL_FIELDS = [
    "step",
    "split",
    "loss",
    "accuracy",
    "miou",
    "boundary_f1",
    "tokens_per_image",
    "images_per_second",
    "images",
]


@dataclass(frozen=True)
class EvalResult:
    """Evaluation metrics over a whole split.

    Attributes:
        loss: mean cross-entropy (per image for classification, per scored pixel for dense).
        accuracy: top-1 accuracy (classification) or pixel accuracy (dense).
        miou: mean IoU (dense; None for classification).
        boundary_f1: boundary F-score of the predicted label maps, 2-pixel tolerance
            (`metrics.boundary_counts`; dense only, None for classification).
        tokens_per_image: mean number of tokens (regions) per image (None for a model that
            does not report them, i.e. not an AdaptiveViT).
        images_per_second: throughput of the evaluation forward passes.
        images: images evaluated.
    """

    loss: float
    accuracy: float
    miou: float | None
    tokens_per_image: float | None
    images_per_second: float
    images: int
    boundary_f1: float | None = None

    @property
    def score(self) -> float:
        """The score that chooses a checkpoint: mIoU for dense tasks, else accuracy."""
        return self.accuracy if self.miou is None else self.miou

    def row(self, step: int, split: str) -> dict[str, object]:
        """The eval_metrics.csv row of this result."""
        return {**dataclasses.asdict(self), "step": step, "split": split}


def autocast_context(device: torch.device, amp: str):
    """bf16 autocast: on CUDA for amp="auto", on any device for "bf16", never for "off"."""
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if device.type == "cuda" and enabled and not torch.cuda.is_bf16_supported():
        enabled = False
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compute_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for [B, K] or [B, K, H, W] logits (dense: pixels labelled 255 ignored)."""
    if logits.ndim == 4:
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits.float(), target)


@dataclass(frozen=True)
class Distillation:
    """A teacher whose softened logits the model is trained to match, beside the labels
    (`TrainConfig.distill`)."""

    teacher: nn.Module  # in eval mode, on the run's device
    weight: float
    temperature: float

    def loss(self, logits: Tensor, images: Tensor, cross_entropy: Tensor) -> Tensor:
        """(1 - w) * cross_entropy + w * T^2 * KL(teacher || model) on the same images."""
        with torch.no_grad():
            target = self.teacher(images).float()
        t = self.temperature
        divergence = F.kl_div(
            F.log_softmax(logits.float() / t, -1),
            F.log_softmax(target / t, -1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - self.weight) * cross_entropy + self.weight * t * t * divergence


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def forward_counts(net: nn.Module, images: Tensor) -> tuple[Tensor, Tensor | None]:
    """(logits, tokens per image [B] int64) of an AdaptiveViT (possibly DDP-wrapped); other
    models give (logits, None)."""
    if isinstance(unwrap(net), AdaptiveViT):
        return net(images, return_counts=True)
    return net(images), None


def batches(
    dataset: Dataset,
    indices: Iterable[int],
    batch_size: int,
    *,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, targets) of `dataset` in the order of `indices`, `batch_size` at a time.

    A dataset with a `batch(index)` method is gathered a batch at a time (no per-image
    `__getitem__`); others are read by a DataLoader with `num_workers` workers.
    """
    if hasattr(dataset, "batch"):
        chunk: list[int] = []
        for index in indices:
            chunk.append(index)
            if len(chunk) == batch_size:
                yield dataset.batch(torch.tensor(chunk))  # type: ignore[attr-defined]
                chunk = []
        if chunk and not drop_last:
            yield dataset.batch(torch.tensor(chunk))  # type: ignore[attr-defined]
        return
    yield from DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,  # type: ignore[arg-type]
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        # A private generator: creating an iterator must not consume the global RNG, or a
        # resumed run would draw different random numbers from an uninterrupted one.
        generator=torch.Generator(),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: str = "auto",
    dist_info: DistInfo | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate a model on a dataset (sharded over processes when running distributed).

    Args:
        model: any module mapping images to logits (or a DDP-wrapped one); put in eval mode
            here and restored after.
        dataset: yields (image, target) as `build_dataset` does (or has a `batch` method).
        batch_size: images per forward pass.
        device: where to compute.
        amp: autocast policy (see TrainConfig.amp).
        dist_info: the process group layout (None: single process).
        progress: show a progress bar.

    Returns:
        EvalResult summed over every process.
    """
    net = unwrap(model)
    device = torch.device(device)
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    shard = ShardSampler(len(dataset), rank, world)
    was_training = net.training
    net.eval()
    confusion: ConfusionMatrix | None = None
    if isinstance(net, AdaptiveViT) and net.task == "dense":
        confusion = ConfusionMatrix(net.head.fc.out_features)  # every rank, even with no batch
    # loss, correct, images, tokens, scored units, 4 boundary counts
    sums = torch.zeros(9, dtype=torch.float64)
    reports_tokens = True
    start = time.perf_counter()
    loader = batches(dataset, shard, batch_size)
    total = -(-len(shard) // batch_size)
    bar = tqdm(loader, total=total, desc="eval", disable=None if progress else True, leave=False)
    for images, target in bar:  # (a bar only on a terminal: none in log files)
        images, target = images.to(device), target.to(device)
        with autocast_context(device, amp):
            logits, counts = forward_counts(net, images)
        loss = compute_loss(logits, target)
        correct, scored = correct_counts(logits, target)
        sums[:5] += torch.tensor(
            [
                float(loss) * float(scored),
                float(correct),
                images.shape[0],
                0.0 if counts is None else float(counts.sum()),
                float(scored),
            ],
            dtype=torch.float64,
        )
        reports_tokens &= counts is not None
        if logits.ndim == 4:
            prediction = logits.argmax(1)
            confusion = confusion or ConfusionMatrix(logits.shape[1])
            confusion.update(prediction, target)
            sums[5:] += boundary_counts(prediction, target).cpu()
    elapsed = time.perf_counter() - start
    sums = all_reduce_sum(sums)
    miou = f1 = None
    if confusion is not None:
        confusion.matrix = all_reduce_sum(confusion.matrix)
        miou, f1 = confusion.miou, boundary_f1(sums[5:])
    elapsed = float(all_reduce_sum(torch.tensor([elapsed], dtype=torch.float64))[0]) / world
    net.train(was_training)
    images_done = int(sums[2])
    return EvalResult(
        loss=float(sums[0] / sums[4].clamp(min=1)),
        accuracy=float(sums[1] / sums[4].clamp(min=1)),
        miou=miou,
        boundary_f1=f1,
        tokens_per_image=float(sums[3] / max(images_done, 1)) if reports_tokens else None,
        images_per_second=images_done / max(elapsed, 1e-9),
        images=images_done,
    )


@dataclass
class MetricWindow:
    """Sums over a run of training steps: the steps since the last log row, or the whole run.

    Each window counts its own steps, so the first window of a resumed run (which may hold fewer
    than log_every steps) is averaged over the steps it really holds.
    """

    steps: int = 0
    loss: float = 0.0
    correct: float = 0.0
    scored: float = 0.0
    tokens: float = 0.0
    images: int = 0
    seconds: float = 0.0

    def add(
        self, *, loss: float, correct: float, scored: float, tokens: float, images: int,
        seconds: float,
    ) -> None:  # fmt: skip
        self.steps += 1
        self.loss += loss
        self.correct += correct
        self.scored += scored
        self.tokens += tokens
        self.images += images
        self.seconds += seconds

    def row(self, *, step: int, epoch: int, lr: float, world_size: int) -> dict[str, object]:
        """The train_metrics.csv row of this window."""
        return {
            "step": step,
            "epoch": epoch,
            "loss": self.loss / self.steps,
            "accuracy": self.correct / max(1.0, self.scored),
            "tokens_per_image": self.tokens / max(1, self.images),
            "images_per_second": self.images * world_size / max(self.seconds, 1e-9),
            "lr": lr,
        }


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: Tensor,
    target: Tensor,
    *,
    step: int,
    device: torch.device,
    amp: str,
    grad_clip: float | None,
    augment_seed: int | None,
    min_crop: float,
    distillation: Distillation | None = None,
    rank: int = 0,
    every_parameter: list[Tensor] | None = None,
) -> dict[str, float | int]:
    """One optimiser step on a batch.

    Args:
        net: the model (possibly DDP-wrapped), in training mode.
        optimizer, scheduler: stepped once.
        images, target: the batch (moved to `device` here).
        step: the step number (names it in errors; seeds the augmentation).
        device: where to compute.
        amp: autocast policy.
        grad_clip: max gradient norm (None: no clipping).
        augment_seed: the run's seed to augment the batch with (`augment.step_generator`), or
            None for no augmentation.
        min_crop: the smallest crop area of the augmentation, as a fraction of the image.
        distillation: a teacher to match beside the labels (None: labels only).
        rank: this process's rank (DDP replicas draw different augmentations).
        every_parameter: under DDP, the trainable parameters: each enters the loss with weight
            exactly 0, so a parameter this step leaves out (the dHT embedder's λ and background
            on box-shaped regions) still gets a (zero) gradient. DDP's reducer then never waits
            for a missing one, without find_unused_parameters' extra graph traversal and its
            per-process warning.

    Returns:
        The `MetricWindow.add` statistics of the batch.

    Raises:
        AdaptokError: the loss is not finite.
    """
    tick = time.perf_counter()
    images = images.to(device, non_blocking=True)
    target = target.to(device, non_blocking=True)
    if augment_seed is not None:
        images = random_resized_crop_flip(
            images, generator=step_generator(augment_seed, step, rank), scale=(min_crop, 1.0)
        )
    with autocast_context(device, amp):
        logits, counts = forward_counts(net, images)
        loss = compute_loss(logits, target)
        if distillation is not None:
            loss = distillation.loss(logits, images, loss)
    if not torch.isfinite(loss):
        lr = optimizer.param_groups[0]["lr"]
        raise AdaptokError(f"loss became {float(loss)} at step {step}; lower the lr (now {lr:g})")
    optimizer.zero_grad(set_to_none=True)
    if every_parameter:
        loss = loss + 0.0 * sum(p.reshape(-1)[0] for p in every_parameter)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the step's time, not its launch
    elapsed = time.perf_counter() - tick
    correct, scored = correct_counts(logits, target)
    return dict(
        loss=float(loss.detach()),
        correct=float(correct),
        scored=float(scored),
        tokens=0.0 if counts is None else float(counts.sum()),
        images=images.shape[0],
        seconds=elapsed,
    )
