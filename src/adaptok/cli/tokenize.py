"""`adaptok tokenize IMG... --method M -o OUT.png`: draw the tokens of images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import AdaptokError
from ..io import DEFAULT_MAX_PIXELS, as_images, save_image
from ..ops import counted
from ..partitioners.registry import available_methods, get_spec, padded_size, partition
from ..regions import Partition
from ..validate import check_int
from ..visualize import token_picture
from .outputs import add_progress_option, file_error, output_paths, progress_bar

# Flags of the command line other than --budget, and the methods that take each (others refuse
# them); --budget goes to the methods whose spec declares a budget.
METHOD_OPTIONS = {
    "patch_size": ("grid", "quadtree"),
    "max_patch": ("quadtree",),
    "scorer": ("quadtree",),
    "scorer_weights": ("quadtree",),
    "resolution": ("dht",),
    "cell": ("dht",),
}


def budget_help() -> str:
    """What --budget means for each method and its default, read from the specs (shared by
    `tokenize` and `vectorize`)."""
    return "; ".join(
        f"{method}: {get_spec(method).describe_budget()}" for method in available_methods()
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--method", default="quadtree", choices=available_methods())
    parser.add_argument(
        "--budget",
        metavar="N",
        default=None,
        help="tokens per image, checked as the Python API checks it (a quadtree budget that is "
        f"not N0 + 3j is refused naming the nearest valid ones): {budget_help()}; defaults: "
        + "; ".join(f"{m}: {get_spec(m).default}" for m in available_methods()),
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="grid patch size, and the quadtree's smallest patch (default 16)",
    )
    parser.add_argument(
        "--max-patch", type=int, default=None, help="the quadtree's largest patch (default 64)"
    )
    parser.add_argument(
        "--scorer",
        default=None,
        help="quadtree patch scorer: pixel_blur (default), pooling (what a pooled token "
        "loses), random, or feature (needs --scorer-weights)",
    )
    parser.add_argument(
        "--scorer-weights",
        type=Path,
        default=None,
        help="local weights of the feature scorer's ResNet-18 (a timm state dict)",
    )
    parser.add_argument(
        "--resolution",
        type=float,
        default=None,
        help="dht: fraction of the image's side at which its hierarchy runs (default 1: full "
        "size; 0.5 is faster and keeps truer regions under a tight --budget)",
    )
    parser.add_argument(
        "--cell",
        type=int,
        default=None,
        help="dht: make every region whole CELL x CELL blocks (a ViT's patch side: the tokens a "
        "retrofitted ViT reads); default: pixel-precise regions",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output NAME.png (one image) or a folder (any name without extension; created if "
        "missing); "
        "default: IMAGE_METHOD.png in the current folder",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse larger images (width x height)",
    )
    add_progress_option(parser)


def partition_options(args: argparse.Namespace) -> dict[str, object]:
    """The partitioner options the command line asks for; options the method does not take
    are refused, never ignored."""
    given = {name: getattr(args, name) for name in METHOD_OPTIONS}
    given = {name: value for name, value in given.items() if value is not None}
    refused = [name for name in given if args.method not in METHOD_OPTIONS[name]]
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise AdaptokError(f"--method {args.method} does not take {flags}; drop it")
    spec = get_spec(args.method)
    options: dict[str, object] = {}
    if args.budget is not None:
        options["budget"] = spec.parse_budget(args.budget)
    if "resolution" in given:
        from ..partitioners.dht.tokenizer import check_resolution

        options["resolution"] = check_resolution(given["resolution"])  # once, not per file
    if "cell" in given:  # whole at each image's working size: checked per image
        options["cell"] = check_int("--cell", given["cell"])
    if args.method == "grid" and "patch_size" in given:
        options["patch_size"] = check_int("--patch-size", given["patch_size"])
    elif args.method == "quadtree":
        defaults = spec.defaults
        options["min_patch"] = check_int(
            "--patch-size", given.get("patch_size", defaults["min_patch"])
        )
        options["max_patch"] = check_int(
            "--max-patch", given.get("max_patch", defaults["max_patch"])
        )
        scorer = given.get("scorer", defaults["scorer"])
        if "scorer_weights" in given:
            if scorer != "feature":
                raise AdaptokError("--scorer-weights is for --scorer feature")
            from ..partitioners.scorers import FeatureScorer

            scorer = FeatureScorer(weights=given["scorer_weights"])
        elif scorer == "feature":
            raise AdaptokError(
                "--scorer feature needs --scorer-weights PATH (a local ResNet-18 state dict); "
                "without weights it would score with random features"
            )
        options["scorer"] = scorer
        # Checked once here: a bad pair or scorer name is the same mistake for every file.
        from ..partitioners.quadtree import check_patch_sizes
        from ..partitioners.scorers import get_scorer

        check_patch_sizes(options["min_patch"], options["max_patch"])
        if isinstance(scorer, str):
            get_scorer(scorer)
    return options


def tokenize_image(image: Tensor, method: str, options: dict[str, object]) -> tuple[Partition, str]:
    """Partition one [1, C, H, W] image of any size (`partition`'s size policy: a quadtree
    budget must be valid for the padded size, as in the Python API), and a note saying how it
    was padded ("" when it was not)."""
    height, width = image.shape[2:]
    with torch.no_grad():
        part = partition(image, method, **options)
    padded = padded_size(method, height, width, options)
    if padded == (height, width):
        return part, ""
    return part, (
        f"; padded {height}x{width} -> {padded[0]}x{padded[1]} and cropped back (edge pixels "
        "repeated)"
    )


def run(args: argparse.Namespace) -> int:
    options = partition_options(args)
    targets = output_paths(args.images, args.output, suffix=f"_{args.method}.png")
    if args.budget is None:
        print(f"{args.method}: {get_spec(args.method).default} (the default)", file=sys.stderr)
    failures = 0
    files = progress_bar(args.images, len(args.images), args)
    for source, target in zip(files, targets, strict=True):
        try:
            image = as_images(source, max_pixels=args.max_pixels)
            part, note = tokenize_image(image, args.method, options)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_image(token_picture(image, part), target)
        except (AdaptokError, OSError) as error:
            failures += 1
            tqdm.write(file_error(source, error), file=sys.stderr)
            continue
        tokens = counted(part.num_regions, "token")
        tqdm.write(f"{source}: {tokens} ({args.method}) -> {target}{note}")
    if failures:
        tqdm.write(f"{failures} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failures else 0
