"""Training and evaluation: datasets, the loop (single process or DDP), checkpoints, metrics."""

from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import (
    DatasetInfo,
    FashionMNIST,
    ImageFolder,
    SegmentationFolder,
    ShapesDataset,
    build_dataset,
)
from .distributed import DistInfo, init_distributed
from .loop import EvalResult, TrainConfig, TrainResult, evaluate, train
from .metrics import ConfusionMatrix, CsvLog

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
    "TrainConfig",
    "TrainResult",
    "build_dataset",
    "evaluate",
    "init_distributed",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
