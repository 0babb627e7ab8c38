"""`adaptok demo`: the bundled photo tokenized by every method, and vectorized to SVG."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..io import sample_image, save_image
from ..partitioners.registry import partition
from ..visualize import token_picture

METHODS = ("grid", "quadtree", "dht", "slic")


def method_options(size: int) -> dict[str, dict[str, object]]:
    """Options giving every method the same token count, (size / 32)^2, on a size x size image
    (size a multiple of 128; the count is a valid quadtree budget: N0 + 15 N0)."""
    tokens = (size // 32) ** 2
    return {
        "grid": {"patch_size": 32},
        "quadtree": {"budget": tokens, "min_patch": 16, "max_patch": 128},
        "dht": {"budget": tokens},
        "slic": {"budget": tokens},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("."),
        help="folder for the pictures (default: the current folder)",
    )
    parser.add_argument(
        "--size", type=int, default=512, help="side of the sample image (a multiple of 128)"
    )


def run(args: argparse.Namespace) -> int:
    from ..vector import vectorize

    args.output.mkdir(parents=True, exist_ok=True)
    image = sample_image(args.size)
    print(f"bundled sample: astronaut, {args.size}x{args.size}")
    if args.size % 128 or args.size < 128:
        raise SystemExit(f"--size must be a positive multiple of 128, got {args.size}")
    for method, options in method_options(args.size).items():
        start = time.perf_counter()
        with torch.no_grad():
            part = partition(image, method=method, **options)
        elapsed = 1000 * (time.perf_counter() - start)
        target = args.output / f"demo_{method}.png"
        save_image(token_picture(image, part), target)
        print(f"{method:>9}: {part.num_regions:4d} tokens in {elapsed:6.1f} ms -> {target}")
    start = time.perf_counter()
    svg = vectorize(image)
    target = args.output / "demo.svg"
    target.write_text(svg)
    elapsed = 1000 * (time.perf_counter() - start)
    print(f"   vector: {len(svg) / 1024:.0f} KiB SVG in {elapsed:.0f} ms -> {target}")
    return 0
