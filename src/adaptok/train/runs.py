"""`train(model_config, train_config)`: the datasets and the model that two configs describe,
handed to `fit` (what `adaptok train` runs).

Everything that can be refused is checked before anything is written: the output folder, the
datasets, the model (a budget it cannot reach is refused by a forward pass on one training
image) and the checkpoint to start from.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import AdaptokError
from ..models import AdaptiveViT, ModelConfig, build_model, load_model
from .config import TrainConfig
from .datasets import build_dataset, holdout
from .distributed import cleanup_distributed, init_distributed
from .fit import TrainResult, check_output, fit
from .init_from import init_from_model

__all__ = ["check_split_folders", "datasets_for", "train"]


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


def datasets_for(
    model_config: ModelConfig, config: TrainConfig
) -> tuple[Dataset, Dataset | None, Dataset]:
    """The training, validation (None without) and test datasets a run asks for (folders
    checked first); validation is `val_images` of the training samples (`holdout`, seeded)."""
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
    training, validation = holdout(train_set, config.val_images, seed=config.seed)
    return training, validation, test_set


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seed the legacy global generator too)
    torch.manual_seed(seed)


def _check_forward(model: nn.Module, dataset: Dataset, device: torch.device) -> None:
    """One training image through the model, without gradient: options that fail only on
    images (an unreachable budget) are refused before the run writes anything."""
    image, _ = dataset[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(image[None].to(device))
    model.train(was_training)


def train(
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Build the datasets and the model, then `fit` it.

    Args:
        model_config: the model (task, classes and channels are taken from the dataset).
        config: how to train, and on which data.
        resume: continue from `config.output/last.pt` (see `fit`).
        overwrite: start afresh in an output folder that already holds a run.
        init_from: a checkpoint written by `train` (last.pt or best.pt) whose weights the model
            starts from, even with another tokenizer (`init_from_model`); the trunk, patch
            size and image size are the checkpoint's. A resumed run reads last.pt instead. With
            `config.distill` > 0 the checkpoint's model is also the teacher.

    Returns:
        TrainResult (on every process; files are written by the main process).
    """
    info = init_distributed(config.device)
    try:
        check_output(Path(config.output), resume=resume, overwrite=overwrite)
        train_set, val_set, test_set = datasets_for(model_config, config)
        data = train_set.info  # type: ignore[attr-defined]
        model_config = dataclasses.replace(
            model_config, task=data.task, num_classes=data.num_classes, in_chans=data.in_chans
        )
        _seed_everything(config.seed)
        model: AdaptiveViT
        parent = None
        if init_from is not None:
            # Read once: the child copies its weights, and a distilling run's teacher is it.
            parent = load_model(init_from)
            model = init_from_model(
                parent,
                model_config.method,
                partition_options=model_config.partition_options or None,
                embedder=model_config.embedder,
                position=model_config.position,
                position_grid=model_config.position_grid,
                source=str(init_from),
            )
            model_config = model.config  # type: ignore[assignment]
        else:
            model = build_model(model_config)
        model.to(info.device)
        _check_forward(model, train_set, info.device)
        if config.augment is None:  # "auto": on for classification from scratch
            trained = init_from is not None or model_config.backbone_weights is not None
            augment = data.task == "classification" and not trained
            config = dataclasses.replace(config, augment=augment)
        teacher = parent if config.distill else None
        return fit(
            model, train_set, val_set, config, test_set=test_set, teacher=teacher,
            resume=resume, overwrite=overwrite, model_config=model_config,
        )  # fmt: skip
    finally:
        cleanup_distributed()
