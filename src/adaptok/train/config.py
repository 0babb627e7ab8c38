"""`TrainConfig`: how to train (read by `fit`), and the data a `train` command reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AdaptokError
from .augment import CROP_SCALE

__all__ = ["RESUMABLE_FIELDS", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    `fit` reads the optimisation and run fields; `train` (and `adaptok train`) also read the data
    fields to build the datasets it hands to `fit`. The whole record is stored in every
    checkpoint.

    Attributes:
        dataset: (data) "fashion-mnist", "folder", "seg-folder" or "shapes".
        data_root: (data) the dataset's folder (None: the dataset's default).
        train_limit: (data) use the first N training samples (None: all).
        val_images: (data) hold out N of those training samples as a validation split
            (`adaptok.train.datasets.holdout`: a draw seeded with `seed`), never trained on. 0: no
            validation split.
        eval_limit: (data) evaluate on the first N test samples (None: all).
        output: folder for last.pt, best.pt, train_metrics.csv, eval_metrics.csv.
        steps: optimizer steps in total. A finished or stopped run can be resumed with more
            steps: the warm-up + cosine schedule is then rebuilt for the new total (the learning
            rate jumps from the old curve to the new one at the resumed step).
        batch_size: images per step and process.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to the parameters that modules declare in
            `no_weight_decay()`, nor to norms and biases; see `optim.parameter_groups`).
        warmup_steps: linear warm-up steps before the cosine decay.
        grad_clip: max gradient norm (None: no clipping).
        seed: seeds the data order, the validation draw and the augmentation (and, in `train`,
            the model's initialisation).
        amp: "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off".
        augment: random-resized crops and horizontal flips of every training batch
            (`adaptok.train.augment`). None ("auto"): on for classification, off for dense tasks
            (their label maps are not transformed); `train` also turns it off for a model that
            starts from trained weights (init_from, backbone weights). `fit` cannot tell whether
            a model is trained: pass False to fine-tune one without augmentation. True on a
            dense task is refused.
        min_crop: the smallest crop of the augmentation, as a fraction of the image's area
            (crops are drawn between it and the whole image).
        distill: weight of distillation from a teacher model that `fit` is given (e.g. the
            grid parent of a retrofit, fine-tuned onto fewer tokens): the loss is
            (1 - distill) * cross-entropy + distill * T^2 * KL(teacher || model) on logits
            softened by the temperature T (Hinton et al., 2015). 0: no teacher. Classification
            only.
        distill_temperature: T of the distillation term.
        log_every: steps between rows of train_metrics.csv.
        checkpoint_every: steps between checkpoints (and one at the end).
        eval_every: steps between evaluations (0: only at the end). With a validation set they
            score it (and one at step 0), best.pt keeps the weights of the best validation score
            (accuracy, or mIoU for dense tasks), and the final test evaluation and the returned
            model are best.pt's: nothing is chosen on the test split. Without one they score
            the test set for watching, not for choosing.
        eval_batch_size: images per evaluation forward pass (None: batch_size).
        num_workers: DataLoader worker processes (datasets without a `batch` method).
        device: "auto", "cpu" or "cuda".
        progress: show a tqdm progress bar (main process only, and only on a terminal).
        stop_after: stop after this many steps of this run, as if killed (for tests).
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    train_limit: int | None = None
    val_images: int = 0
    eval_limit: int | None = None
    output: str = "runs/adaptok"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    seed: int = 0
    amp: str = "auto"
    augment: bool | None = None
    min_crop: float = CROP_SCALE[0]
    distill: float = 0.0
    distill_temperature: float = 2.0
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 0
    eval_batch_size: int | None = None
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    stop_after: int | None = None

    def __post_init__(self) -> None:
        if self.amp not in ("auto", "bf16", "off"):
            raise AdaptokError(f"unknown amp {self.amp!r}; choose 'auto', 'bf16' or 'off'")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise AdaptokError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("val_images", "eval_every", "warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise AdaptokError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("train_limit", "eval_limit", "stop_after", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AdaptokError(f"{name} must be at least 1 or None, got {getattr(self, name)}")
        if not (math.isfinite(self.min_crop) and 0 < self.min_crop <= 1):
            raise AdaptokError(
                f"min_crop must be a fraction of the image's area in (0, 1], got {self.min_crop}"
            )
        if not (math.isfinite(self.distill) and 0 <= self.distill <= 1):
            raise AdaptokError(
                f"distill must be a weight in [0, 1] (0: no teacher), got {self.distill}"
            )
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            raise AdaptokError(
                f"distill_temperature must be positive, got {self.distill_temperature}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AdaptokError(f"lr must be a positive learning rate, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise AdaptokError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise AdaptokError(
                f"grad_clip must be a positive gradient norm or None (no clipping), got "
                f"{self.grad_clip}"
            )

    def augment_for(self, task: str) -> bool:
        """Whether training batches of a `task` model are augmented ("auto" resolved).

        Raises:
            AdaptokError: augment=True for a dense task.
        """
        if self.augment and task == "dense":
            raise AdaptokError(
                "augment=True transforms the images but not their label maps, so a dense task "
                "would learn misaligned masks; set augment=False (or None: off for dense tasks)"
            )
        return task == "classification" if self.augment is None else self.augment


# Fields that may change between a run and its resumption (how it runs, or how long).
RESUMABLE_FIELDS = frozenset(
    {
        "output",
        "device",
        "progress",
        "num_workers",
        "stop_after",
        "eval_every",
        "checkpoint_every",
        "eval_batch_size",
        "steps",
    }
)
