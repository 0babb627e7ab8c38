"""`adaptok eval`: evaluate a checkpoint written by `adaptok train` on a dataset split."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import AdaptokError
from ..models import model_from_checkpoint
from ..train.checkpoint import load_checkpoint
from ..train.datasets import DATASETS, build_dataset
from ..train.distributed import cleanup_distributed, init_distributed
from ..train.loop import evaluate
from ..train.metrics import CsvLog

__all__ = ["add_arguments", "check_compatible", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="last.pt written by `adaptok train`")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="default: the dataset the model was trained on",
    )
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N images of the split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--csv", default=None, help="append the metrics to this CSV file")


def check_compatible(config, info, dataset_name: str) -> None:
    """Refuse to score a model on a dataset it cannot predict (task or class count differ)."""
    if config.task != info.task:
        raise AdaptokError(
            f"the checkpoint is a {config.task} model but {dataset_name} is a {info.task} "
            "dataset; evaluate it on a dataset of its task"
        )
    if config.num_classes != info.num_classes:
        raise AdaptokError(
            f"the checkpoint predicts {config.num_classes} classes but {dataset_name} has "
            f"{info.num_classes}; evaluate it on the dataset it was trained for"
        )


def run(args: argparse.Namespace) -> int:
    info = init_distributed(args.device)
    try:
        state = load_checkpoint(args.checkpoint, map_location="cpu")
        model = model_from_checkpoint(state, source=args.checkpoint).to(info.device)
        config = model.config
        trained_on = state.get("train_config", {})
        name = args.dataset or trained_on.get("dataset", "fashion-mnist")
        root = args.data_root or (trained_on.get("data_root") if args.dataset is None else None)
        dataset = build_dataset(
            name,
            root=root,
            split=args.split,
            image_size=config.image_size,
            in_chans=config.in_chans,
            limit=args.limit,
            seed=trained_on.get("seed", 0),
        )
        check_compatible(config, dataset.info, name)
        result = evaluate(
            model,
            dataset,
            batch_size=args.batch_size,
            device=info.device,
            amp=args.amp,
            dist_info=info,
            progress=info.is_main,
        )
        if info.is_main:
            row = {
                "checkpoint": args.checkpoint,
                "step": state.get("step"),
                "dataset": name,
                "split": args.split,
                **dataclasses.asdict(result),
            }
            print(json.dumps(row, indent=2))
            if args.csv:
                append = 10**12 if Path(args.csv).is_file() else None  # keep earlier rows
                CsvLog(args.csv, list(row), resume_step=append).write(row)
    finally:
        cleanup_distributed()
    return 0
