"""`adaptok train`: train an adaptive ViT (classification or dense prediction).

Single process:   adaptok train --dataset fashion-mnist --method quadtree --steps 500 --out runs/qt
Several (DDP):    torchrun --nproc_per_node 2 -m adaptok.cli train ... (gloo on CPU, NCCL on GPU)
Resume a killed run: the same command with --resume (with a larger --steps: extend it).
Retrofit protocol: train a grid parent, then --init-from runs/parent/best.pt --method quadtree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ..errors import AdaptokError
from ..models.config import EMBEDDERS, EncoderConfig, ModelConfig
from ..partitioners.registry import available_methods, get_spec
from ..train.config import TrainConfig
from ..train.datasets import DATASETS
from ..train.fit import TrainingInterrupted
from ..train.init_from import parent_config
from ..train.runs import train

__all__ = ["add_arguments", "configs_from_args", "run"]


def _default(config: type, name: str) -> object:
    """A field's default in ModelConfig or EncoderConfig: the one source of the model defaults."""
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


# flag name -> its default, read from the configs (--heads is EncoderConfig's num_heads)
TRUNK_DEFAULTS = {
    "patch_size": _default(ModelConfig, "patch_size"),
    "embed_dim": _default(EncoderConfig, "embed_dim"),
    "depth": _default(EncoderConfig, "depth"),
    "heads": _default(EncoderConfig, "num_heads"),
}
IMAGE_SIZE = _default(ModelConfig, "image_size")
AUGMENT = {"auto": None, "on": True, "off": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        default="fashion-mnist",
        help="fashion-mnist (Debian's idx files), folder (root/class/*.png), "
        "seg-folder (root/images + root/labels PNGs) or shapes (generated)",
    )
    data.add_argument("--data-root", default=None, help="dataset folder (default per dataset)")
    data.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"side images are resized to (default {IMAGE_SIZE}; with --init-from the parent's)",
    )
    data.add_argument("--in-chans", type=int, default=3, choices=(1, 3))
    data.add_argument("--train-limit", type=int, default=None, help="first N training images")
    data.add_argument("--eval-limit", type=int, default=None, help="first N test images")
    data.add_argument(
        "--val-images",
        type=int,
        default=0,
        help="hold out N training images (drawn with --seed) for validation: --eval-every "
        "scores them, best.pt keeps the best weights, and the final test score is best.pt's",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--method", choices=available_methods(), default="grid", help="tokenizer")
    model.add_argument(
        "--backbone", default=None, help="timm ViT name to retrofit (built with pretrained=False)"
    )
    model.add_argument(
        "--weights", default=None, help="local timm weights file of the --backbone (a state dict)"
    )
    model.add_argument(
        "--init-from",
        default=None,
        metavar="CKPT",
        help="start from the weights of an `adaptok train` checkpoint (last.pt or best.pt), "
        "e.g. a grid parent, on this run's --method (its trunk, patch and image size are kept)",
    )
    # Without a backbone these set the model; a backbone sets them itself (refused with it).
    for flag, default, what in (
        ("--patch-size", TRUNK_DEFAULTS["patch_size"], "token side P"),
        ("--embed-dim", TRUNK_DEFAULTS["embed_dim"], "trunk width"),
        ("--depth", TRUNK_DEFAULTS["depth"], "trunk blocks"),
        ("--heads", TRUNK_DEFAULTS["heads"], "attention heads"),
    ):
        model.add_argument(
            flag, type=int, default=None, help=f"{what} (default {default}; not with --backbone)"
        )
    model.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        default=None,
        help="default: dht for --method dht, patch otherwise; with --init-from, retrofit's "
        "default for the method",
    )
    model.add_argument(
        "--position",
        choices=("sincos", "learned"),
        default=None,
        help="positions of the patch embedder; default: learned with --backbone (the ViT's own "
        "table), the parent's with --init-from, sincos otherwise",
    )
    model.add_argument(
        "--budget",
        metavar="N",
        default=None,
        help="tokens per image, as in `adaptok tokenize`: "
        + "; ".join(f"{m}: {get_spec(m).describe_budget()}" for m in available_methods())
        + "; default: derived from the image and patch size (quadtree: about half the grid's "
        "tokens; slic: the grid's count; dht: its default cap; --backbone: from its patch size)",
    )
    model.add_argument("--max-patch", type=int, default=None, help="quadtree largest patch")
    model.add_argument(
        "--partition-options",
        default=None,
        help='extra partitioner options as JSON, e.g. \'{"scorer": "random"}\'',
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="optimizer steps; with --resume a larger value extends a finished run (the cosine "
        "schedule is rebuilt for the new total)",
    )
    optim.add_argument("--batch-size", type=int, default=64, help="per process")
    optim.add_argument("--lr", type=float, default=1e-3)
    optim.add_argument("--weight-decay", type=float, default=0.05)
    optim.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument(
        "--augment",
        choices=tuple(AUGMENT),
        default="auto",
        help="random-resized crops + horizontal flips of training batches; auto: on for "
        "classification from scratch, off for dense tasks and for --init-from / --weights",
    )
    optim.add_argument(
        "--distill",
        type=float,
        default=TrainConfig.distill,
        help="with --init-from: weight in [0, 1] of distillation from the parent (the loss "
        "mixes cross-entropy with the KL divergence to the parent's softened logits; "
        "default %(default)s: labels only)",
    )
    optim.add_argument(
        "--min-crop",
        type=float,
        default=TrainConfig.min_crop,
        help="smallest random-resized crop, as a fraction of the image's area (default "
        "%(default)s)",
    )
    optim.add_argument(
        "--amp",
        choices=("auto", "bf16", "off"),
        default="auto",
        help="auto: bf16 autocast on CUDA, off on CPU",
    )
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--out", default="runs/adaptok", help="output folder")
    run_group.add_argument(
        "--resume", action="store_true", help="continue the run in OUT (same options)"
    )
    run_group.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUT"
    )
    run_group.add_argument("--log-every", type=int, default=10)
    run_group.add_argument("--checkpoint-every", type=int, default=100)
    run_group.add_argument("--eval-every", type=int, default=0, help="0: only at the end")
    run_group.add_argument("--num-workers", type=int, default=0)
    run_group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _trunk(args: argparse.Namespace) -> dict[str, int]:
    """Patch size and trunk: the flags or their defaults; with a backbone or --init-from, which
    set them, any of these flags is refused rather than ignored."""
    given = {name: getattr(args, name) for name in TRUNK_DEFAULTS}
    named = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
    if args.init_from is not None:
        named += [
            flag
            for flag, value in (
                ("--image-size", args.image_size),
                ("--backbone", args.backbone),
                ("--weights", args.weights),
            )
            if value is not None
        ]
        if named:
            raise AdaptokError(
                f"--init-from {args.init_from} keeps the parent's trunk, patch and image size; "
                "drop " + ", ".join(named)
            )
    if args.backbone is not None and named:
        raise AdaptokError(
            f"--backbone {args.backbone} sets the patch size and the trunk itself; drop "
            + ", ".join(named)
        )
    return {
        name: default if given[name] is None else given[name]
        for name, default in TRUNK_DEFAULTS.items()
    }


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs an `adaptok train` command line describes."""
    if args.weights is not None and args.backbone is None:
        raise AdaptokError(
            "--weights is the weights file of a timm --backbone; name the backbone too "
            "(e.g. --backbone vit_tiny_patch16_224)"
        )
    trunk = _trunk(args)
    image_size = IMAGE_SIZE if args.image_size is None else args.image_size
    parent = parent_config(args.init_from) if args.init_from is not None else None
    if parent is not None:
        image_size, trunk["patch_size"] = parent.image_size, parent.patch_size
    given: dict[str, object] = {}
    if args.budget is not None:
        given["budget"] = get_spec(args.method).parse_budget(args.budget)
    if args.max_patch is not None:
        given["max_patch"] = args.max_patch
    if args.partition_options:
        given.update(json.loads(args.partition_options))
    # `ModelConfig` derives the options the flags leave out (with a backbone, `retrofit` does).
    if parent is not None:  # what init_from_checkpoint reads: the tokens; the rest is the parent's
        model_config = dataclasses.replace(
            parent,
            method=args.method,
            embedder=args.embedder,
            position=args.position,
            partition_options=given,
            backbone_weights=None,
        )
    else:
        model_config = ModelConfig(
            method=args.method,
            image_size=image_size,
            in_chans=args.in_chans,
            patch_size=None if args.backbone is not None else trunk["patch_size"],
            embedder=args.embedder,
            position=args.position or ("learned" if args.backbone else "sincos"),
            partition_options=given,
            encoder=EncoderConfig(
                embed_dim=trunk["embed_dim"], depth=trunk["depth"], num_heads=trunk["heads"]
            ),
            backbone=args.backbone,
            backbone_weights=args.weights,
        )
    train_config = TrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        output=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        seed=args.seed,
        amp=args.amp,
        augment=AUGMENT[args.augment],
        min_crop=args.min_crop,
        distill=args.distill,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        train_limit=args.train_limit,
        eval_limit=args.eval_limit,
        val_images=args.val_images,
        num_workers=args.num_workers,
        device=args.device,
        progress=not args.no_progress,
    )
    return model_config, train_config


def run(args: argparse.Namespace) -> int:
    model_config, train_config = configs_from_args(args)
    try:
        result = train(
            model_config,
            train_config,
            resume=args.resume,
            overwrite=args.overwrite,
            init_from=args.init_from,
        )
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":
            resume = (
                f"{stop.checkpoint} holds step {stop.saved_step}: the same command with --resume "
                "continues from there"
                if stop.saved_step is not None
                else f"no checkpoint was written yet (every {train_config.checkpoint_every} "
                "steps, --checkpoint-every): the same command with --resume starts afresh"
            )
            print(f"adaptok train: interrupted at step {stop.step}; {resume}", file=sys.stderr)
        return 130
    if result.evaluation is not None and os.environ.get("RANK", "0") == "0":
        evaluation = result.evaluation
        score = (
            f"mIoU {evaluation.miou:.4f}"
            if evaluation.miou is not None
            else f"accuracy {evaluation.accuracy:.4f}"
        )
        which = "" if result.best_step is None else f" of best.pt (step {result.best_step})"
        print(
            f"step {result.step}: test {score}{which}, loss {evaluation.loss:.4f}, "
            f"{evaluation.tokens_per_image:.1f} tokens/image, train {result.train_seconds:.1f} s; "
            f"checkpoint {result.checkpoint}"
        )
    return 0
