"""Training and evaluation: `fit` (a built model on datasets), `train` (models and datasets
from configs, then `fit`), evaluation, datasets, augmentation, checkpoints, metrics, DDP."""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .datasets import (
    DatasetInfo,
    FashionMNIST,
    ImageFolder,
    SegmentationFolder,
    ShapesDataset,
    TensorImages,
    build_dataset,
    holdout,
)
from .distributed import DistInfo, init_distributed
from .fit import TrainingInterrupted, TrainResult, fit
from .init_from import init_from_checkpoint, init_from_model
from .loop import EvalResult, evaluate
from .metrics import ConfusionMatrix, CsvLog
from .runs import train

__all__ = [
    "ConfusionMatrix",
    "CsvLog",
    "DatasetInfo",
    "DistInfo",
    "EvalResult",
    "FashionMNIST",
    "ImageFolder",
    "SegmentationFolder",
    "ShapesDataset",
    "TensorImages",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_dataset",
    "evaluate",
    "fit",
    "holdout",
    "init_distributed",
    "init_from_checkpoint",
    "init_from_model",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
