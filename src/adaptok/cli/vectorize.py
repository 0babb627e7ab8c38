"""`adaptok vectorize IMG... -o OUT.svg`: convert images to gap-free SVG through their tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..errors import AdaptokError
from ..io import DEFAULT_MAX_PIXELS, display_name
from ..ops import counted
from ..partitioners.registry import available_methods, get_spec
from ..vector import DEFAULT_METHOD, DENSE, PIXELS_PER_REGION, check_style, render_svg, vectorize
from .outputs import add_progress_option, file_error, output_paths, progress_bar
from .tokenize import budget_help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="output NAME.svg (one image) or a folder (any name without extension; created if "
        "missing); "
        "default: IMAGE.svg in the current folder",
    )
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=available_methods(),
        help=f"partition method (default: {DEFAULT_METHOD})",
    )
    parser.add_argument(
        "--budget",
        metavar="N",
        default=None,
        help=f"regions per image, as in `adaptok tokenize`: {budget_help()}; default: one per "
        f"{PIXELS_PER_REGION} pixels (for quadtree the nearest valid budget)",
    )
    parser.add_argument(
        "--smoothness",
        type=float,
        default=1.0,
        help="0 = exact pixel outlines, 1 = smooth curves (default), more = smoother",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.3,
        help="simplification tolerance in pixels (default 0.3; larger = smaller "
        "files, coarser outlines)",
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="draw a rectangle of the image's mean colour under the shapes",
    )
    parser.add_argument(
        "--background-color",
        default=None,
        metavar="COLOR",
        help="draw a rectangle of COLOR (#rrggbb) under the shapes",
    )
    parser.add_argument(
        "--antialias",
        action="store_true",
        help="let renderers anti-alias the shapes (smoother edges, but thin seams "
        "of the background show between neighbours; combine with --background)",
    )
    parser.add_argument(
        "--preview",
        action="store_true",
        help="also write OUT.preview.png, the SVG rendered back with resvg",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS:,} pixels)",
    )
    add_progress_option(parser)


def preview_path(target: Path) -> Path:
    """NAME.preview.png beside NAME.svg (never NAME.png, which may be the input image)."""
    return target.with_name(f"{target.stem}.preview.png")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse options that would do nothing or write the wrong kind of file."""
    if args.budget is not None:
        get_spec(args.method).parse_budget(args.budget)
    # Once here, not once per image: a bad option is the same mistake for every file.
    for flag, option in (
        ("--smoothness", {"smoothness": args.smoothness}),
        ("--tolerance", {"tolerance": args.tolerance}),
        ("--background-color", {"background": args.background_color or False}),
    ):
        try:
            check_style(**option)
        except AdaptokError as error:
            raise AdaptokError(f"{flag}: {error}") from None


def run(args: argparse.Namespace) -> int:
    images: list[Path] = args.images
    check_arguments(args)
    targets = output_paths(images, args.output, suffix=".svg", reserve=len(".preview"))
    spec = get_spec(args.method)
    if args.budget is None and spec.budget is not None:
        print(
            f"{args.method}: one region per {PIXELS_PER_REGION} pixels (the default budget)",
            file=sys.stderr,
        )
    budget = DENSE if args.budget is None else spec.parse_budget(args.budget)
    background: bool | str = args.background_color or args.background
    failures = 0
    bar = progress_bar(zip(images, targets, strict=True), len(images), args)
    for source, target in bar:
        try:
            with torch.no_grad():
                svg = vectorize(
                    source,
                    args.method,
                    max_pixels=args.max_pixels,
                    budget=budget,
                    smoothness=args.smoothness,
                    tolerance=args.tolerance,
                    background=background,
                    crisp_edges=not args.antialias,
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(svg, encoding="utf-8")
            if args.preview:
                Image.fromarray(render_svg(svg)).save(preview_path(target))
        except (AdaptokError, OSError) as error:
            failures += 1
            tqdm.write(file_error(source, error), file=sys.stderr)
            continue
        regions = counted(svg.count("<path"), "region")
        line = f"{source}: {regions} ({args.method}), {len(svg):,} bytes -> {target}"
        tqdm.write(display_name(line))
    if failures:
        tqdm.write(f"{failures} of {len(images)} images failed", file=sys.stderr)
    return 1 if failures else 0
