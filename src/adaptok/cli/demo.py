"""`adaptok demo`: the bundled photo tokenized by every method and vectorized to SVG, and a
flat-background picture (a bundled Fashion-MNIST item) where dHT without a cap adapts."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..errors import AdaptokError
from ..io import FLAT_SAMPLE, sample_image, save_image
from ..ops import counted
from ..partitioners.registry import partition
from ..visualize import draw_boundaries, side_by_side, titled, token_picture

DEFAULT_OUTPUT = Path("adaptok-demo")

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
        default=DEFAULT_OUTPUT,
        help=f"folder for the pictures, created if missing (default: {DEFAULT_OUTPUT}/)",
    )
    parser.add_argument(
        "--size", type=int, default=512, help="side of the sample image (a multiple of 128)"
    )


def check_size(size: int) -> int:
    """The demo and bench sizes: positive multiples of 128 (so every method gets a valid
    quadtree budget of the same token count)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 128 or size % 128:
        raise AdaptokError(f"--size must be a positive multiple of 128, got {size!r}")
    return size


def run(args: argparse.Namespace) -> int:
    from ..vector import DEFAULT_METHOD, default_budget, vectorize

    size = check_size(args.size)
    args.output.mkdir(parents=True, exist_ok=True)
    image = sample_image(size)
    print(
        f"bundled sample: astronaut, {size}x{size}; every method is asked for ({size} / 32)^2 = "
        f"{(size // 32) ** 2} tokens\n(times include one-time start-up: reading the dHT weights, "
        "importing scikit-image; `adaptok bench` gives steady-state times)"
    )
    for method, options in method_options(size).items():
        start = time.perf_counter()
        with torch.no_grad():
            part = partition(image, method=method, **options)
        elapsed = 1000 * (time.perf_counter() - start)
        target = args.output / f"demo_{method}.png"
        title = f"{method} · {counted(part.num_regions, 'token')}"
        save_image(token_picture(image, part, title=title), target)
        asked = ", ".join(f"{name}={value}" for name, value in options.items())
        print(
            f"{method:>9}: {part.num_regions:4d} tokens ({asked}) in {elapsed:6.1f} ms -> {target}"
        )
    start = time.perf_counter()
    with torch.no_grad():
        svg = vectorize(image)
    target = args.output / "demo.svg"
    target.write_text(svg, encoding="utf-8")
    elapsed = 1000 * (time.perf_counter() - start)
    print(
        f"   vector: {svg.count('<path')} regions ({DEFAULT_METHOD} asked for "
        f"{default_budget(size, size)} = one per 24 pixels), {len(svg) / 1024:.0f} KiB SVG in "
        f"{elapsed:.0f} ms -> {target}"
    )
    flat_background(args.output)
    print(f"pictures and SVG in {args.output.resolve()}")
    return 0


def flat_background(output: Path, size: int = 64, zoom: int = 4) -> None:
    """A Fashion-MNIST item (bundled) at 64x64, the size of the Fashion-MNIST experiments: the grid
    spends as many tokens on the black background as on the boot; dHT without a cap spends few
    there and follows the boot. The picture is enlarged `zoom` times (nearest) to be seen."""
    item = sample_image(size, name=FLAT_SAMPLE)
    with torch.no_grad():
        grid = partition(item, method="grid", patch_size=8)
        dht = partition(item, method="dht", budget=None)
    panels = []
    for name, part in (("grid", grid), ("dht, no cap", dht)):
        # enlarged before the titles are written, so that the text stays sharp
        for panel, what in (
            (draw_boundaries(item, part), "tokens"),
            (part.mean_image(item), "colours"),
        ):
            big = panel.clamp(0, 1).repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)
            count = counted(part.num_regions, "token") if what == "tokens" else "mean colours"
            panels.append(titled(big, f"{name} · {count}"))
    target = output / "demo_flat_background.png"
    save_image(side_by_side(*panels, gap=4 * zoom), target)
    print(
        f"Fashion-MNIST item (bundled, {size}x{size}): grid {grid.num_regions} tokens | "
        f"dht without a cap {dht.num_regions} regions -> {target}"
    )
