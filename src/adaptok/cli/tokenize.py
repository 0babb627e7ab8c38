"""`adaptok tokenize IMG... --method M -o OUT.png`: draw the tokens of images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import AdaptokError
from ..io import load_image, pad_to_multiple, save_image
from ..partitioners.quadtree import nearest_budget
from ..partitioners.registry import available_methods, partition
from ..regions import Partition
from ..visualize import token_picture
from .outputs import output_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--method", default="quadtree", choices=available_methods())
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="tokens per image (quadtree: N0 + 3j; default: a quarter of the smallest patches; "
        "dht: an upper bound, default from the image size; slic: approximate, default 196)",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=16,
        help="grid patch size, and the quadtree's smallest patch",
    )
    parser.add_argument("--max-patch", type=int, default=64, help="the quadtree's largest patch")
    parser.add_argument("--scorer", default="pixel_blur", help="quadtree patch scorer")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output PNG (one image) or folder (several); "
        "default: IMAGE_METHOD.png in the current folder",
    )


def tokenize_image(image: Tensor, args: argparse.Namespace) -> tuple[Tensor, Partition, str]:
    """Partition one [1, C, H, W] image as the arguments say.

    Returns:
        (the image as tokenized, possibly padded; its Partition; a note on what was changed).
    """
    options: dict[str, object] = {}
    note = ""
    if args.method in ("grid", "quadtree"):
        multiple = args.patch_size if args.method == "grid" else args.max_patch
        padded = pad_to_multiple(image, multiple)
        if padded.shape != image.shape:
            (height, width), (new_height, new_width) = image.shape[2:], padded.shape[2:]
            note = (
                f"padded {height}x{width} -> {new_height}x{new_width} "
                f"(edge pixels repeated) to a multiple of {multiple}"
            )
        image = padded
    if args.method == "grid":
        options["patch_size"] = args.patch_size
    elif args.method == "quadtree":
        options.update(min_patch=args.patch_size, max_patch=args.max_patch, scorer=args.scorer)
        options["budget"] = args.budget or nearest_budget(
            image.shape[2], image.shape[3], min_patch=args.patch_size, max_patch=args.max_patch
        )
    elif args.budget is not None:
        options["budget"] = args.budget
    with torch.no_grad():
        return image, partition(image, method=args.method, **options), note


def run(args: argparse.Namespace) -> int:
    try:
        targets = output_paths(args.images, args.output, suffix=f"_{args.method}.png")
    except (AdaptokError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failures = 0
    files = tqdm(args.images, unit="image", disable=len(args.images) < 2)
    for source, target in zip(files, targets, strict=True):
        try:
            image, part, note = tokenize_image(load_image(source), args)
            save_image(token_picture(image, part), target)
        except AdaptokError as error:
            failures += 1
            tqdm.write(f"error: {source}: {error}", file=sys.stderr)
            continue
        message = f"{source}: {part.num_regions} tokens ({args.method}) -> {target}"
        tqdm.write(message + (f"; {note}" if note else ""))
    if failures:
        tqdm.write(f"{failures} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failures else 0
