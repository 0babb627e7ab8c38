"""`fit`: train a built model on datasets (single process, or DDP under torchrun).

`fit(model, train_set, val_set, config)` trains for `config.steps` optimiser steps with AdamW
and a warm-up + cosine schedule (`optim`), clips gradients, augments classification batches
(`augment`), distils from a teacher when given one (`TrainConfig.distill`), logs metrics to
CSV, validates every `eval_every` steps (and at step 0), keeps the best-validation weights in
best.pt and writes last.pt atomically every `checkpoint_every` steps.
With `resume=True` it continues from last.pt: model, optimizer, scheduler, step, epoch, position
in the epoch, random generators and the validation curve are restored, so the loss curve
continues as if the run had never stopped (bitwise on the CPU).

The model may be any `nn.Module` mapping images to logits: an `AdaptiveViT` from `build_model`,
`retrofit` or `load_model`, one whose tokenizer caches partitions, or a plain CNN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler
from tqdm.auto import tqdm

from ..errors import AdaptokError
from ..models import ModelConfig
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RESUMABLE_FIELDS, TrainConfig
from .distributed import DistInfo, ResumableSampler, cleanup_distributed, init_distributed
from .loop import (
    EVAL_FIELDS,
    TRAIN_FIELDS,
    Distillation,
    EvalResult,
    MetricWindow,
    batches,
    evaluate,
    train_step,
)
from .metrics import CsvLog
from .optim import make_optimizer

__all__ = [
    "BEST_FILE",
    "LAST_FILE",
    "TrainResult",
    "TrainingInterrupted",
    "check_output",
    "check_resumable",
    "fit",
]

LAST_FILE, BEST_FILE = "last.pt", "best.pt"
# TrainConfig fields whose default changed meaning since runs without them were saved: what
# those runs did (they trained without augmentation, and the first augmented runs cropped down
# to a quarter of the image).
OLDER_RUNS = {"augment": False, "min_crop": 0.25}
RUN_FILES = (LAST_FILE, BEST_FILE, "train_metrics.csv", "eval_metrics.csv")


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        step: the last step reached.
        losses: training loss of every step this call executed (main process).
        train_seconds: wall time of the training steps over the whole run (resumed parts
            included; validation and checkpoints excluded).
        tokens_per_image: mean tokens per training image in this call (None for a model that
            does not report them).
        curve: the validation curve: (step, score, loss) of every validation, step 0 first
            (score: accuracy, or mIoU for dense tasks); empty without a validation set.
        best_step: the step of best.pt (None without a validation set).
        best_score: its validation score (None without a validation set).
        evaluation: the final evaluation on the test set (of best.pt's weights with a
            validation set; None without a test set or when stopped early by stop_after).
        checkpoint: path of last.pt.
        config: the TrainConfig the run used, `augment` resolved (what the checkpoints store).
        model_config: the config the model was built from (None for a model without one).
        model: the trained model (unwrapped from DDP), holding best.pt's weights when there
            was a validation set.
    """

    step: int
    losses: list[float]
    train_seconds: float
    tokens_per_image: float | None
    curve: list[tuple[int, float, float]]
    best_step: int | None
    best_score: float | None
    evaluation: EvalResult | None
    checkpoint: Path
    config: TrainConfig = field(repr=False)
    model_config: ModelConfig | None = field(repr=False)
    model: nn.Module = field(repr=False)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: says which step the run reached and which one last.pt holds.

    Attributes:
        step: the step reached.
        saved_step: the step of last.pt (None: no checkpoint yet, a resume starts afresh).
        checkpoint: path of last.pt.
    """

    def __init__(self, step: int, saved_step: int | None, checkpoint: Path) -> None:
        self.step, self.saved_step, self.checkpoint = step, saved_step, checkpoint
        saved = (
            f"{checkpoint} holds step {saved_step}"
            if saved_step is not None
            else "no checkpoint was written yet"
        )
        super().__init__(f"interrupted at step {step}; {saved}")


@dataclass
class RunState:
    """Where a run is: what last.pt stores besides the weights and optimiser."""

    step: int = 0
    epoch: int = 0
    seen_in_epoch: int = 0
    train_seconds: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class _Best:
    """The best validation score so far: its step, score, loss and weights."""

    step: int
    score: float
    loss: float
    weights: dict[str, Tensor]

    def beaten_by(self, result: EvalResult) -> bool:
        # Equal scores (a small split saturates) go to the lower validation loss.
        return (result.score, -result.loss) > (self.score, -self.loss)


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


def check_resumable(
    state: dict[str, Any], model_config: ModelConfig | None, config: TrainConfig
) -> None:
    """Refuse to continue a run with another configuration (listing the differing fields).

    Fields in RESUMABLE_FIELDS (how the run runs, and `steps`) may differ.
    """
    if "train_config" not in state or "optimizer" not in state:
        raise AdaptokError(
            "cannot resume: the checkpoint holds no training state (written by another "
            "program, e.g. an older benchmark); start a new run with --overwrite or another --out"
        )
    saved_model = state.get("model_config") or {}
    if saved_model:  # fields added since the run started take the values they stand for
        saved_model = ModelConfig.from_dict(saved_model).to_dict()
    ours_model = model_config.to_dict() if model_config is not None else {}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved_train = {**defaults, **OLDER_RUNS, **state["train_config"]}
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


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    *,
    test_set: Dataset | None = None,
    teacher: nn.Module | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_config: ModelConfig | None = None,
) -> TrainResult:
    """Train a built model; see the module docstring.

    Args:
        model: any module mapping images [B, C, H, W] to logits [B, K] or [B, K, H, W]; moved
            to the run's device and trained in place.
        train_set: yields (image, target) (a `batch(index)` method is used when present).
        val_set: the validation split that chooses best.pt (None: no validation; the data
            fields of `config` are not read here, so hold it out yourself, e.g. with
            `adaptok.train.datasets.holdout`).
        config: how to train (its data fields are recorded, not read).
        test_set: scored once at the end, with best.pt's weights when there is a validation
            set (None: no test evaluation).
        teacher: the model to distil from when `config.distill` > 0 (e.g. the parent a
            retrofit starts from), a classifier of the same images; moved to the run's device
            and used in eval mode, never trained. Not saved: a resumed run needs it again.
        resume: continue from `config.output/last.pt` (it must hold the same configuration,
            `steps` and the fields of RESUMABLE_FIELDS excepted); without a checkpoint a new
            run starts.
        overwrite: start afresh in an output folder that already holds a run. Without `resume`
            or `overwrite`, such a folder is refused (before anything is written).
        model_config: what the checkpoints record to rebuild the model (`load_model`); None:
            `model.config` when the model has one (AdaptiveViT), else nothing.

    Returns:
        TrainResult (on every process; files are written by the main process).

    Raises:
        TrainingInterrupted: on Ctrl-C, naming the step last.pt holds.
    """
    initialised = dist.is_available() and dist.is_initialized()
    info = init_distributed(config.device)
    try:
        return _fit(
            model, train_set, val_set, config, test_set=test_set, teacher=teacher,
            resume=resume, overwrite=overwrite, model_config=model_config, info=info,
        )  # fmt: skip
    finally:
        if not initialised:  # the caller's process group is the caller's to close
            cleanup_distributed()


def train_sampler(train_set: Dataset, config: TrainConfig, info: DistInfo) -> ResumableSampler:
    """This process's shuffled, resumable share of the training set (epoch order seeded).

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
    return sampler


def _task(model: nn.Module, train_set: Dataset) -> str:
    """ "classification" or "dense": the model's task, else the dataset's."""
    task = getattr(model, "task", None)
    if task is None:
        task = getattr(getattr(train_set, "info", None), "task", "classification")
    return task


def _restore(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    model_config: ModelConfig | None,
    config: TrainConfig,
) -> RunState:
    """Load a run's last.pt into the model, optimizer, scheduler and random generators.

    Raises:
        AdaptokError: the checkpoint was trained with another configuration.
    """
    # On the CPU: random-generator states must stay CPU tensors; load_state_dict moves the
    # weights and optimizer state to the model's device.
    state = load_checkpoint(path, map_location="cpu")
    check_resumable(state, model_config, config)
    model.load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    # The schedule is rebuilt for config.steps (resuming with more steps extends the run).
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return RunState(
        step=state["step"],
        epoch=state["epoch"],
        seen_in_epoch=state["seen_in_epoch"],
        train_seconds=state.get("train_seconds", 0.0),
        curve=[tuple(point) for point in state.get("curve", [])],
    )


def _read_best(path: Path) -> _Best | None:
    """best.pt of a resumed run (it may be from a later step than last.pt: its weights were
    really scored then), or None when the run had not validated yet."""
    if not path.is_file():
        return None
    state = load_checkpoint(path, map_location="cpu")
    return _Best(
        step=state["step"], score=state["score"], loss=state["loss"], weights=state["model"]
    )


def _record(model_config: ModelConfig | None, config: TrainConfig) -> dict[str, Any]:
    """The configs every checkpoint stores."""
    record: dict[str, Any] = {"train_config": dataclasses.asdict(config)}
    if model_config is not None:
        record["model_config"] = model_config.to_dict()
    return record


@dataclass
class _Run:
    """What the steps of one `fit` call share (the pieces `_fit` hands its helpers)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    config: TrainConfig
    model_config: ModelConfig | None
    info: DistInfo
    output: Path
    state: RunState
    best: _Best | None
    eval_log: CsvLog | None
    distillation: Distillation | None
    saved_step: int | None = None

    def evaluate(self, dataset: Dataset, *, progress: bool = False) -> EvalResult:
        return evaluate(
            self.net,
            dataset,
            batch_size=self.config.eval_batch_size or self.config.batch_size,
            device=self.info.device,
            amp=self.config.amp,
            dist_info=self.info,
            progress=progress,
        )

    def validate(self, val_set: Dataset) -> None:
        """Score the validation split; keep the weights when they are the best so far."""
        step = self.state.step
        result = self.evaluate(val_set)
        self.state.curve.append((step, result.score, result.loss))
        if self.eval_log is not None:
            self.eval_log.write(result.row(step, "val"))
        if self.best is not None and not self.best.beaten_by(result):
            return
        weights = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self.best = _Best(step=step, score=result.score, loss=result.loss, weights=weights)
        if self.info.is_main:
            save_checkpoint(
                {
                    "model": weights,
                    "step": step,
                    "score": result.score,
                    "loss": result.loss,
                    "metric": "accuracy" if result.miou is None else "miou",
                    **_record(self.model_config, self.config),
                },
                self.output / BEST_FILE,
            )

    def save_last(self) -> None:
        """last.pt: everything a resumed run needs to continue bitwise."""
        state = self.state
        if self.info.is_main:
            save_checkpoint(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "step": state.step,
                    "epoch": state.epoch,
                    "seen_in_epoch": state.seen_in_epoch,
                    "train_seconds": state.train_seconds,
                    "curve": [list(point) for point in state.curve],
                    "rng": rng_state(),
                    **_record(self.model_config, self.config),
                },
                self.output / LAST_FILE,
            )
        self.saved_step = state.step
        if self.info.distributed:
            torch.distributed.barrier()


def _fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    *,
    test_set: Dataset | None,
    teacher: nn.Module | None,
    resume: bool,
    overwrite: bool,
    model_config: ModelConfig | None,
    info: DistInfo,
) -> TrainResult:
    output = Path(config.output)
    check_output(output, resume=resume, overwrite=overwrite)
    task = _task(model, train_set)
    distillation = _distillation(teacher, config, task, info.device)
    augment = config.augment_for(task)
    config = dataclasses.replace(config, augment=augment)
    model_config = model_config if model_config is not None else getattr(model, "config", None)
    sampler = train_sampler(train_set, config, info)
    model.to(info.device).train()
    optimizer, scheduler = make_optimizer(
        model, lr=config.lr, weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps, steps=config.steps,
    )  # fmt: skip
    last = output / LAST_FILE
    resumed = resume and last.is_file()
    state = RunState()
    if resumed:
        state = _restore(last, model, optimizer, scheduler, model_config, config)
        if info.is_main:
            print(f"resumed from step {state.step} of {config.steps} ({last})", flush=True)
    elif info.is_main:
        if resume:
            print(f"no checkpoint in {output} yet: starting a new run", flush=True)
        for name in RUN_FILES:  # overwrite (or the leftovers of a run killed before step 1)
            (output / name).unlink(missing_ok=True)
    best = _read_best(output / BEST_FILE) if resumed and val_set is not None else None
    net: nn.Module = model
    if info.distributed:
        # Every parameter gets a gradient every step (train_step's every_parameter).
        net = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    train_log = eval_log = None
    if info.is_main:
        output.mkdir(parents=True, exist_ok=True)
        at = state.step if resumed else None
        train_log = CsvLog(output / "train_metrics.csv", TRAIN_FIELDS, at)
        eval_log = CsvLog(output / "eval_metrics.csv", EVAL_FIELDS, at)
    run = _Run(model, net, optimizer, scheduler, config, model_config, info, output, state, best,
               eval_log, distillation, saved_step=state.step if resumed else None)  # fmt: skip
    if val_set is not None and not resumed:
        run.validate(val_set)  # step 0: the starting weights are a candidate too
    losses: list[float] = []
    totals = MetricWindow()  # this call's steps, this process
    try:
        stopped = _train_steps(run, train_set, val_set, test_set, sampler, train_log, losses,
                               totals)  # fmt: skip
    except KeyboardInterrupt:
        raise TrainingInterrupted(run.state.step, run.saved_step, last) from None
    evaluation = None
    if run.best is not None and not stopped:
        model.load_state_dict(run.best.weights)  # the test split scores the best weights
    if test_set is not None and not stopped:
        evaluation = run.evaluate(test_set, progress=config.progress and info.is_main)
        if eval_log is not None:
            eval_log.write(evaluation.row(run.state.step, "test"))
    return TrainResult(
        step=run.state.step,
        losses=losses,
        train_seconds=run.state.train_seconds,
        tokens_per_image=totals.tokens / max(1, totals.images) if totals.tokens else None,
        curve=list(run.state.curve),
        best_step=None if run.best is None else run.best.step,
        best_score=None if run.best is None else run.best.score,
        evaluation=evaluation,
        checkpoint=last,
        config=config,
        model_config=model_config,
        model=model,
    )


def _distillation(
    teacher: nn.Module | None, config: TrainConfig, task: str, device: torch.device
) -> Distillation | None:
    """The teacher term of the loss (None without one), checked against the config.

    Raises:
        AdaptokError: a teacher without `distill`, `distill` without a teacher, or a dense task.
    """
    if teacher is None and config.distill == 0:
        return None
    if teacher is None:
        raise AdaptokError(
            f"distill={config.distill} needs a teacher: pass fit(..., teacher=model) (on the "
            "command line, --distill takes the --init-from parent as its teacher)"
        )
    if config.distill == 0:
        raise AdaptokError(
            "a teacher was given but distill is 0, so it would not be used; set distill to its "
            "weight in (0, 1] or leave the teacher out"
        )
    if task != "classification":
        raise AdaptokError(
            "distill matches a teacher's class probabilities per image: classification only; "
            "train a dense model with distill=0"
        )
    return Distillation(teacher.to(device).eval(), config.distill, config.distill_temperature)


def _train_steps(
    run: _Run,
    train_set: Dataset,
    val_set: Dataset | None,
    test_set: Dataset | None,
    sampler: ResumableSampler,
    train_log: CsvLog | None,
    losses: list[float],
    totals: MetricWindow,
) -> bool:
    """Train until config.steps (or stop_after); returns whether stop_after stopped it."""
    config, state, info = run.config, run.state, run.info
    start_step = state.step
    window = MetricWindow()  # since the last log row
    progress = tqdm(
        total=config.steps,
        initial=state.step,
        desc="train",
        # None: tqdm draws only on a terminal (no carriage-return lines in a log file).
        disable=None if config.progress and info.is_main else True,
    )
    every_parameter = (
        [p for p in run.model.parameters() if p.requires_grad] if info.distributed else None
    )
    stopped = False
    while state.step < config.steps and not stopped:
        sampler.set_epoch(state.epoch, skip=state.seen_in_epoch)
        finished_epoch = True
        loader = batches(
            train_set, sampler, config.batch_size, drop_last=True,
            num_workers=config.num_workers, pin_memory=info.device.type == "cuda",
        )  # fmt: skip
        for images, target in loader:
            stats = train_step(
                run.net, run.optimizer, run.scheduler, images, target,
                step=state.step, device=info.device, amp=config.amp, grad_clip=config.grad_clip,
                augment_seed=config.seed if config.augment else None, min_crop=config.min_crop,
                distillation=run.distillation, rank=info.rank,
                every_parameter=every_parameter,
            )  # fmt: skip
            state.step += 1
            state.seen_in_epoch += images.shape[0]
            state.train_seconds += stats["seconds"]
            losses.append(stats["loss"])
            window.add(**stats)
            totals.add(**stats)
            progress.update(1)
            step = state.step
            if step % config.log_every == 0 or step == config.steps:
                row = window.row(
                    step=step,
                    epoch=state.epoch,
                    lr=run.scheduler.get_last_lr()[0],
                    world_size=info.world_size,
                )
                progress.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
                if train_log is not None:
                    train_log.write(row)
                window = MetricWindow()
            periodic = config.eval_every and step % config.eval_every == 0
            if val_set is not None and (periodic or step == config.steps):
                run.validate(val_set)
            elif periodic and step < config.steps and test_set is not None:
                if run.eval_log is not None:  # for watching only: nothing is chosen on it
                    run.eval_log.write(run.evaluate(test_set).row(step, "test"))
                else:
                    run.evaluate(test_set)  # every process takes part in the sums
            if step % config.checkpoint_every == 0 or step == config.steps:
                run.save_last()
            if config.stop_after is not None and step - start_step >= config.stop_after:
                stopped = True
            if step >= config.steps or stopped:
                finished_epoch = False
                break
        if finished_epoch:
            state.epoch += 1
            state.seen_in_epoch = 0
    progress.close()
    return stopped
