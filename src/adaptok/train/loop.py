"""The training and evaluation loops (single process, or DDP under torchrun).

`train(model_config, train_config)` builds the datasets and the model, trains for a fixed number
of optimizer steps with AdamW and a warm-up + cosine schedule, logs metrics to CSV, evaluates,
and writes `last.pt` atomically every `checkpoint_every` steps. With `resume=True` it continues
from `last.pt`: model, optimizer, scheduler, step, epoch, position in the epoch and random
generators are restored, so the loss curve continues as if the run had never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from ..errors import AdaptokError
from ..models import AdaptiveViT, ModelConfig, build_model
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .datasets import IGNORE_INDEX, build_dataset
from .distributed import (
    DistInfo,
    ResumableSampler,
    ShardSampler,
    all_reduce_sum,
    cleanup_distributed,
    init_distributed,
)
from .metrics import ConfusionMatrix, CsvLog

__all__ = ["EvalResult", "TrainConfig", "TrainResult", "evaluate", "train"]

TRAIN_FIELDS = ["step", "epoch", "loss", "accuracy", "tokens_per_image", "images_per_second", "lr"]
EVAL_FIELDS = [
    "step",
    "split",
    "loss",
    "accuracy",
    "miou",
    "tokens_per_image",
    "images_per_second",
    "images",
]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        dataset: "fashion-mnist", "folder", "seg-folder" or "shapes".
        data_root: the dataset's folder (None: the dataset's default).
        output: folder for last.pt, train_metrics.csv, eval_metrics.csv.
        steps: optimizer steps in total.
        batch_size: images per step and process.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not applied to norms, biases, tokens, positions).
        warmup_steps: linear warm-up steps before the cosine decay.
        grad_clip: max gradient norm (None: no clipping).
        seed: seeds the model's initialisation, the data order and every random generator.
        amp: "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off".
        log_every: steps between rows of train_metrics.csv.
        checkpoint_every: steps between checkpoints (and one at the end).
        eval_every: steps between evaluations (0: only at the end).
        train_limit: use the first N training samples (None: all).
        val_images: hold out N of those training samples (drawn with `seed`) as a validation
            split, never trained on. The evaluations every `eval_every` steps (and one at the end)
            then score it instead of the test split, best.pt keeps the weights of the best
            validation score (accuracy, or mIoU for dense tasks), and the final test evaluation
            and the returned model are best.pt's: nothing is chosen on the test split. 0: no
            validation split (the periodic test scores are for watching, not for choosing).
        eval_limit: evaluate on the first N test samples (None: all).
        num_workers: DataLoader worker processes.
        device: "auto", "cpu" or "cuda".
        progress: show a tqdm progress bar (main process only).
        stop_after: stop after this many steps of this run, as if killed (for tests).
    """

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    output: str = "runs/adaptok"
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    seed: int = 0
    amp: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 0
    train_limit: int | None = None
    val_images: int = 0
    eval_limit: int | None = None
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
        for name in ("train_limit", "eval_limit", "stop_after"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise AdaptokError(f"{name} must be at least 1 or None, got {getattr(self, name)}")
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


@dataclass(frozen=True)
class EvalResult:
    """Evaluation metrics over a whole split.

    Attributes:
        loss: mean cross-entropy (per image for classification, per scored pixel for dense).
        accuracy: top-1 accuracy (classification) or pixel accuracy (dense).
        miou: mean IoU (dense; None for classification).
        tokens_per_image: mean number of tokens (regions) per image.
        images_per_second: throughput of the evaluation forward passes.
        images: images evaluated.
    """

    loss: float
    accuracy: float
    miou: float | None
    tokens_per_image: float
    images_per_second: float
    images: int


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        step: the last step reached.
        losses: training loss of every step this run executed (main process).
        train_seconds: wall time spent in training steps (this run).
        tokens_per_image: mean tokens per training image (this run).
        evaluation: the final evaluation on the test split (of best.pt's weights with a
            validation split; None when stopped early by stop_after).
        checkpoint: path of last.pt.
        best_step: the step of best.pt (None without a validation split).
        model_config: the config the model was built from (dataset-derived fields filled in).
        model: the trained model (unwrapped from DDP).
    """

    step: int
    losses: list[float]
    train_seconds: float
    tokens_per_image: float
    evaluation: EvalResult | None
    checkpoint: Path
    model_config: ModelConfig = field(repr=False)
    model: AdaptiveViT | None = field(default=None, repr=False)
    best_step: int | None = None


def autocast_context(device: torch.device, amp: str):
    """bf16 autocast: on CUDA for amp="auto", on any device for "bf16", never for "off"."""
    enabled = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if device.type == "cuda" and enabled and not torch.cuda.is_bf16_supported():
        enabled = False
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seed the legacy global generator too)
    torch.manual_seed(seed)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: no decay for norms, biases, scalars, cls/prefix tokens, positions."""
    decay, no_decay = [], []
    skip_words = ("prefix", "cls", "pos", "background", "mix")
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if parameter.ndim <= 1 or any(word in leaf for word in skip_words):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def compute_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy for [B, K] or [B, K, H, W] logits (dense: pixels labelled 255 ignored)."""
    if logits.ndim == 4:
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits.float(), target)


def _fill_from_dataset(model_config: ModelConfig, dataset: Dataset) -> ModelConfig:
    info = dataset.info  # type: ignore[attr-defined]
    return dataclasses.replace(
        model_config, task=info.task, num_classes=info.num_classes, in_chans=info.in_chans
    )


def _unwrap(model: nn.Module) -> AdaptiveViT:
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore


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
        model: an AdaptiveViT (or DDP-wrapped one); put in eval mode here and restored after.
        dataset: yields (image, target) as `build_dataset` does.
        batch_size: images per forward pass.
        device: where to compute.
        amp: autocast policy (see TrainConfig.amp).
        dist_info: the process group layout (None: single process).
        progress: show a progress bar.

    Returns:
        EvalResult summed over every process.
    """
    net = _unwrap(model)
    device = torch.device(device)
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), rank, world)
    )
    was_training = net.training
    net.eval()
    dense = net.task == "dense"
    num_classes = net.head.fc.out_features
    confusion = ConfusionMatrix(num_classes) if dense else None
    sums = torch.zeros(5, dtype=torch.float64)  # loss, correct, images, tokens, scored units
    start = time.perf_counter()
    for images, target in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images, target = images.to(device), target.to(device)
        with autocast_context(device, amp):
            logits, counts = net(images, return_counts=True)
        loss = compute_loss(logits, target)
        prediction = logits.argmax(1)
        if dense:
            confusion.update(prediction, target)
            scored = int((target != IGNORE_INDEX).sum())
            correct = int(((prediction == target) & (target != IGNORE_INDEX)).sum())
        else:
            scored = images.shape[0]
            correct = int((prediction == target).sum())
        sums += torch.tensor(
            [float(loss) * scored, correct, images.shape[0], float(counts.sum()), scored],
            dtype=torch.float64,
        )
    elapsed = time.perf_counter() - start
    sums = all_reduce_sum(sums)
    miou = None
    if confusion is not None:
        confusion.matrix = all_reduce_sum(confusion.matrix)
        miou = confusion.miou
    elapsed = float(all_reduce_sum(torch.tensor([elapsed], dtype=torch.float64))[0]) / world
    net.train(was_training)
    images_done = int(sums[2])
    return EvalResult(
        loss=float(sums[0] / sums[4].clamp(min=1)),
        accuracy=float(sums[1] / sums[4].clamp(min=1)),
        miou=miou,
        tokens_per_image=float(sums[3] / max(images_done, 1)),
        images_per_second=images_done / max(elapsed, 1e-9),
        images=images_done,
    )


def _eval_row(step: int, result: EvalResult, split: str = "test") -> dict[str, object]:
    row = dataclasses.asdict(result)
    row.update(step=step, split=split, miou="" if result.miou is None else result.miou)
    return row


# Fields that may change between a run and its resumption (how it runs, not what it trains).
RESUMABLE_FIELDS = frozenset(
    {"output", "device", "progress", "num_workers", "stop_after", "eval_every", "checkpoint_every"}
)


def train(
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train a model; see the module docstring.

    Args:
        model_config: the model (task, classes and channels are taken from the dataset).
        config: how to train.
        resume: continue from `config.output/last.pt` (it must exist and hold the same
            configuration; differing fields are listed in the error).
        overwrite: start afresh in an output folder that already holds a run (its checkpoint
            and metrics are replaced). Without `resume` or `overwrite`, such a folder is refused.

    Returns:
        TrainResult (on every process; metrics files are written by the main process).
    """
    info = init_distributed(config.device)
    try:
        return _train(model_config, config, resume=resume, overwrite=overwrite, info=info)
    finally:
        cleanup_distributed()


def check_output(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to destroy a finished or running run by accident.

    `resume` without a checkpoint starts a new run (so one command can launch a run and
    relaunch it after a kill).

    Raises:
        AdaptokError: `resume` and `overwrite` together, or an output folder holding a run
            without either.
    """
    if resume and overwrite:
        raise AdaptokError("choose one of resume (continue the run) and overwrite (start over)")
    existing = [name for name in RUN_FILES if (output / name).exists()]
    if existing and not (resume or overwrite):
        raise AdaptokError(
            f"{output} already holds a run ({', '.join(existing)}); pass --resume to continue "
            "it or --overwrite to replace it, or choose another --out"
        )


def check_resumable(state: dict, model_config: ModelConfig, config: TrainConfig) -> None:
    """Refuse to continue a run with another configuration (listing the differing fields)."""
    saved_model = state.get("model_config", {})
    saved_train = state.get("train_config", {})
    ours_model = model_config.to_dict()
    ours_train = dataclasses.asdict(config)
    differing = [
        f"model.{name}: {saved_model.get(name)!r} -> {value!r}"
        for name, value in ours_model.items()
        if saved_model.get(name) != value
    ] + [
        f"{name}: {saved_train.get(name)!r} -> {value!r}"
        for name, value in ours_train.items()
        if name not in RESUMABLE_FIELDS and saved_train.get(name) != value
    ]
    if differing:
        raise AdaptokError(
            "cannot resume: the checkpoint was trained with another configuration ("
            + "; ".join(differing)
            + "); rerun with the original options, or start a new run with --overwrite or "
            "another --out"
        )


LAST_FILE, BEST_FILE = "last.pt", "best.pt"
RUN_FILES = (LAST_FILE, BEST_FILE, "train_metrics.csv", "eval_metrics.csv")


def check_split_folders(root: Path) -> None:
    """A folder dataset must hold separate train/ and test/ images, or "test accuracy" would
    be measured on the training images."""
    missing = [split for split in ("train", "test") if not (root / split).is_dir()]
    if missing:
        raise AdaptokError(
            f"{root} has no {' and no '.join(s + '/' for s in missing)} sub-folder; training "
            "needs root/train/... and root/test/... so that the test score is measured on "
            "images the model did not train on (move a fixed share of each class to test/)"
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


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    model_config: ModelConfig,
    config: TrainConfig,
) -> tuple[int, int, int]:
    """Load a run's checkpoint into the model, optimizer, scheduler and random generators.

    Returns:
        (step, epoch, images seen in that epoch).

    Raises:
        AdaptokError: the checkpoint was trained with another configuration.
    """
    # On the CPU: random-generator states must stay CPU tensors; load_state_dict moves the
    # weights and optimizer state to the model's device.
    state = load_checkpoint(path, map_location="cpu")
    check_resumable(state, model_config, config)
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["step"], state["epoch"], state["seen_in_epoch"]


def _train_loader(
    train_set: Dataset, config: TrainConfig, info: DistInfo
) -> tuple[ResumableSampler, DataLoader]:
    """This process's shuffled, resumable share of the training set, in batches.

    Raises:
        AdaptokError: the share is smaller than one batch.
    """
    sampler = ResumableSampler(
        DistributedSampler(
            train_set,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=config.seed,
            drop_last=True,
        )
    )
    if len(sampler.sampler) < config.batch_size:
        raise AdaptokError(
            f"each process gets {len(sampler.sampler)} training images, fewer than batch_size "
            f"{config.batch_size}; lower --batch-size or use more data"
        )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        # A private generator: creating an iterator must not consume the global RNG, or a
        # resumed run would draw different random numbers from an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed),
        persistent_workers=False,
    )
    return sampler, loader


def _datasets(
    model_config: ModelConfig, config: TrainConfig
) -> tuple[Dataset, Dataset | None, Dataset]:
    """The training, validation (None without) and test datasets a run asks for (folders
    checked first); validation is `val_images` of the training samples, drawn with the seed."""
    if config.dataset in ("folder", "seg-folder") and config.data_root is not None:
        check_split_folders(Path(config.data_root))
    common = dict(
        root=config.data_root, image_size=model_config.image_size, in_chans=model_config.in_chans
    )
    train_set, test_set = (
        build_dataset(config.dataset, split=split, limit=limit, seed=config.seed, **common)
        for split, limit in (("train", config.train_limit), ("test", config.eval_limit))
    )
    if not config.val_images:
        return train_set, None, test_set
    if config.val_images >= len(train_set):
        raise AdaptokError(
            f"val_images {config.val_images} leaves none of the {len(train_set)} training "
            "samples to train on; hold out fewer"
        )
    # A seeded draw, not the last N: folder datasets list their samples class by class.
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))
    held = order[: config.val_images].sort().values.tolist()
    kept = order[config.val_images :].sort().values.tolist()
    validation, training = Subset(train_set, held), Subset(train_set, kept)
    training.info = validation.info = train_set.info  # type: ignore[attr-defined]
    return training, validation, test_set


def _step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: Tensor,
    target: Tensor,
    config: TrainConfig,
    device: torch.device,
    step: int,
) -> dict[str, float | int]:
    """One optimiser step on a batch; returns the `MetricWindow` statistics of the batch."""
    tick = time.perf_counter()
    images = images.to(device, non_blocking=True)
    target = target.to(device, non_blocking=True)
    with autocast_context(device, config.amp):
        logits, counts = net(images, return_counts=True)
    loss = compute_loss(logits, target)
    if not torch.isfinite(loss):
        raise AdaptokError(
            f"loss became {float(loss)} at step {step}; lower --lr (now {config.lr})"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    elapsed = time.perf_counter() - tick
    with torch.no_grad():
        prediction = logits.detach().argmax(1)
        keep = (
            target != IGNORE_INDEX
            if logits.ndim == 4
            else torch.ones_like(target, dtype=torch.bool)
        )
        return dict(
            loss=float(loss.detach()),
            correct=float(((prediction == target) & keep).sum()),
            scored=float(keep.sum()),
            tokens=float(counts.sum()),
            images=images.shape[0],
            seconds=elapsed,
        )


def _train(
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    resume: bool,
    overwrite: bool,
    info: DistInfo,
) -> TrainResult:
    device = info.device
    output = Path(config.output)
    checkpoint_path = output / LAST_FILE
    check_output(output, resume=resume, overwrite=overwrite)
    train_set, val_set, test_set = _datasets(model_config, config)
    model_config = _fill_from_dataset(model_config, train_set)

    _seed_everything(config.seed)
    model = build_model(model_config).to(device)
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.steps)
    )
    step, epoch, seen_in_epoch = 0, 0, 0
    resumed = resume and checkpoint_path.is_file()
    if resumed:
        step, epoch, seen_in_epoch = _restore(
            checkpoint_path, model, optimizer, scheduler, model_config, config
        )
        if info.is_main:
            print(f"resumed from step {step} of {config.steps} ({checkpoint_path})", flush=True)
    best = _read_best(output / BEST_FILE) if resumed and val_set is not None else None
    if not resumed and info.is_main:
        if resume:
            print(f"no checkpoint in {output} yet: starting a new run", flush=True)
        for name in RUN_FILES:  # overwrite (or the leftovers of a run killed before step 1)
            (output / name).unlink(missing_ok=True)

    net: nn.Module = model
    if info.distributed:
        # Some parameters (e.g. the dHT background token on square regions) may get no
        # gradient in a step; DDP must not wait for them.
        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    sampler, loader = _train_loader(train_set, config, info)
    train_log = eval_log = None
    if info.is_main:
        output.mkdir(parents=True, exist_ok=True)
        train_log = CsvLog(output / "train_metrics.csv", TRAIN_FIELDS, step if resumed else None)
        eval_log = CsvLog(output / "eval_metrics.csv", EVAL_FIELDS, step if resumed else None)

    def validate() -> None:
        """Score the validation split; keep the weights when they are the best so far."""
        nonlocal best
        result = evaluate(
            net, val_set, batch_size=config.batch_size, device=device, amp=config.amp,
            dist_info=info,
        )  # fmt: skip
        if eval_log is not None:
            eval_log.write(_eval_row(step, result, split="val"))
        score = result.miou if result.miou is not None else result.accuracy
        # Equal scores (a small split saturates) go to the lower validation loss.
        if best is None or (score, -result.loss) > (best.score, -best.loss):
            weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
            best = _Best(step=step, score=score, loss=result.loss, weights=weights)
            if info.is_main:
                save_checkpoint(
                    {
                        "model": weights,
                        "step": step,
                        "score": score,
                        "loss": result.loss,
                        "metric": "miou" if result.miou is not None else "accuracy",
                        "model_config": model_config.to_dict(),
                        "train_config": dataclasses.asdict(config),
                    },
                    output / BEST_FILE,
                )

    def checkpoint() -> None:
        if info.is_main:
            save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "seen_in_epoch": seen_in_epoch,
                    "rng": rng_state(),
                    "model_config": model_config.to_dict(),
                    "train_config": dataclasses.asdict(config),
                },
                checkpoint_path,
            )
        if info.distributed:
            torch.distributed.barrier()

    losses: list[float] = []
    window, totals = MetricWindow(), MetricWindow()  # since the last log row; this process's run
    start_step = step
    progress = tqdm(
        total=config.steps,
        initial=step,
        desc="train",
        disable=not (config.progress and info.is_main),
    )
    stopped = False
    while step < config.steps and not stopped:
        sampler.set_epoch(epoch, skip=seen_in_epoch)
        finished_epoch = True
        for images, target in loader:
            stats = _step(net, optimizer, scheduler, images, target, config, device, step)
            step += 1
            seen_in_epoch += images.shape[0]
            losses.append(stats["loss"])
            window.add(**stats)
            totals.add(**stats)
            progress.update(1)
            if step % config.log_every == 0 or step == config.steps:
                row = window.row(
                    step=step,
                    epoch=epoch,
                    lr=scheduler.get_last_lr()[0],
                    world_size=info.world_size,
                )
                progress.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
                if train_log is not None:
                    train_log.write(row)
                window = MetricWindow()
            periodic = config.eval_every and step % config.eval_every == 0
            if val_set is not None and (periodic or step == config.steps):
                validate()
            elif periodic and step < config.steps:
                result = evaluate(
                    net,
                    test_set,
                    batch_size=config.batch_size,
                    device=device,
                    amp=config.amp,
                    dist_info=info,
                )
                if eval_log is not None:
                    eval_log.write(_eval_row(step, result))
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint()
            if config.stop_after is not None and step - start_step >= config.stop_after:
                stopped = True
            if step >= config.steps or stopped:
                finished_epoch = False
                break
        if finished_epoch:
            epoch += 1
            seen_in_epoch = 0
    progress.close()
    evaluation = None
    if best is not None and not stopped:
        model.load_state_dict(best.weights)  # the test split scores the best-validation weights
    if not stopped:
        evaluation = evaluate(
            net,
            test_set,
            batch_size=config.batch_size,
            device=device,
            amp=config.amp,
            dist_info=info,
            progress=config.progress and info.is_main,
        )
        if eval_log is not None:
            eval_log.write(_eval_row(step, evaluation))
    return TrainResult(
        step=step,
        losses=losses,
        train_seconds=totals.seconds,
        tokens_per_image=totals.tokens / max(1, totals.images),
        evaluation=evaluation,
        checkpoint=checkpoint_path,
        model_config=model_config,
        model=model,
        best_step=None if best is None else best.step,
    )


@dataclass(frozen=True)
class _Best:
    """The best validation score so far: its step, score, loss and weights."""

    step: int
    score: float
    loss: float
    weights: dict[str, Tensor]


def _read_best(path: Path) -> _Best | None:
    """best.pt of a resumed run (it may be from a later step than last.pt: its weights were
    really scored then), or None when the run had not validated yet."""
    if not path.is_file():
        return None
    state = load_checkpoint(path, map_location="cpu")
    return _Best(
        step=state["step"], score=state["score"], loss=state["loss"], weights=state["model"]
    )
