"""Raster to vector: adaptok.vectorize against vtracer on the scikit-image photos.

Every SVG is rendered back with resvg (resvg-py) at the image's own size and compared with the
input. Columns: wall time (median of --repeats runs; ours includes the partition), SVG size,
number of <path> elements, PSNR (dB, 0-255, the render composited over black against the input)
and the fraction of the canvas the shapes cover (rendered alpha = 255 on a transparent canvas).

    nice python benchmarks/bench_vectorize.py                   # slic partitions, 224 and 512
    nice python benchmarks/bench_vectorize.py --method dht      # the default method
    nice python benchmarks/bench_vectorize.py --method quadtree --option min_patch=1 \
        --option max_patch=32 --pixels-per-region 16

Needs: pip install resvg-py vtracer
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import adaptok
from adaptok.cli.benchmarking import machine_header
from adaptok.vector import render_svg, vectorize

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
# vtracer presets: its defaults, and a coarse one (fewer colours, bigger speckles dropped).
VTRACER_PRESETS = {
    "vtracer default": {},
    "vtracer coarse": {"filter_speckle": 8, "color_precision": 5, "layer_difference": 32},
}
# Our presets: (smoothness, tolerance); smooth = the defaults, polygon = exact pixel outlines.
OUR_PRESETS = {"smooth": (1.0, 0.3), "polygon": (0.0, 0.3)}


def load_photo(name: str, size: int) -> torch.Tensor:
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    image = torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=(size, size), mode="area").clamp(0, 1)


def to_rgb8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def measure(svg: str, reference: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB against the reference, covered fraction) of the SVG rendered back."""
    rendered = render_svg(svg).astype(np.float64)
    alpha = rendered[..., 3:] / 255
    mse = np.mean((rendered[..., :3] * alpha - reference.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12)), float(np.mean(rendered[..., 3] == 255))


def timed(function: Callable[[], str], repeats: int) -> tuple[str, float]:
    result, times = function(), []  # warm-up: imports, caches, weights
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(1000 * (time.perf_counter() - start))
    return result, statistics.median(times)


def _parse_option(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            pass
    return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dht", help="partition method (dht, slic, ...)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--photos", nargs="+", default=PHOTOS)
    parser.add_argument(
        "--pixels-per-region",
        type=float,
        default=None,
        help="budget = H*W / this (default: vectorize's own default budget)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="partition option, e.g. --option min_patch=1 (repeatable)",
    )
    parser.add_argument(
        "--untrained-dht",
        action="store_true",
        help="with --method dht: a freshly initialised tokenizer (seed 0) instead "
        "of the bundled weights, to exercise the path before weights exist",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = dict(_parse_option(text) for text in args.option)
    if args.untrained_dht:
        from adaptok.partitioners.dht import DHTTokenizer

        torch.manual_seed(0)
        options["tokenizer"] = DHTTokenizer().eval()
    import vtracer

    shown = {k: ("untrained, seed 0" if k == "tokenizer" else v) for k, v in options.items()}
    print(
        f"# adaptok.vectorize vs vtracer · method={args.method} {shown or ''} · budget: "
        f"{'H*W/' + str(args.pixels_per_region) if args.pixels_per_region else 'default'}"
    )
    print(f"# {machine_header()}")
    print(
        f"# adaptok {adaptok.__version__} · vtracer {version('vtracer')} · resvg-py "
        f"{version('resvg-py')} · numpy {np.__version__}"
    )
    header = (
        f"{'photo':22s} {'size':>4s} {'tool':18s} {'ms':>8s} {'KiB':>8s} {'paths':>6s} "
        f"{'PSNR':>6s} {'cover':>7s}"
    )
    print(header)
    print("-" * len(header))
    rows: list[tuple[int, str, float, float, int, float, float]] = []
    for size in args.sizes:
        for name in args.photos:
            image = load_photo(name, size)
            reference = to_rgb8(image)
            buffer = io.BytesIO()
            Image.fromarray(reference).save(buffer, format="PNG")
            png = buffer.getvalue()
            budget: int | str = "auto"  # vectorize's default: one region per 24 pixels
            if args.pixels_per_region:
                budget = round(size * size / args.pixels_per_region)
            tools: dict[str, Callable[[], str]] = {}
            for preset, (smoothness, tolerance) in OUR_PRESETS.items():
                tools[f"adaptok {preset}"] = lambda s=smoothness, t=tolerance, x=image, b=budget: (
                    vectorize(x, args.method, budget=b, smoothness=s, tolerance=t, **options)
                )
            for preset, settings in VTRACER_PRESETS.items():
                tools[preset] = lambda o=settings, p=png: vtracer.convert_raw_image_to_svg(
                    p, img_format="png", colormode="color", **o
                )
            for tool, function in tools.items():
                with torch.no_grad():
                    svg, ms = timed(function, args.repeats)
                psnr, cover = measure(svg, reference)
                paths = svg.count("<path")
                kib = len(svg.encode()) / 1024
                rows.append((size, tool, ms, kib, paths, psnr, cover))
                print(
                    f"{name:22s} {size:4d} {tool:18s} {ms:8.1f} {kib:8.1f} {paths:6d} "
                    f"{psnr:6.2f} {100 * cover:6.2f}%",
                    flush=True,
                )
    print()
    print("Means over the photos")
    print(
        f"{'size':>4s} {'tool':18s} {'ms':>8s} {'KiB':>8s} {'paths':>7s} {'PSNR':>6s} {'cover':>7s}"
    )
    for size in args.sizes:
        for tool in dict.fromkeys(row[1] for row in rows):
            chosen = [row for row in rows if row[0] == size and row[1] == tool]
            mean = [statistics.mean(row[i] for row in chosen) for i in range(2, 7)]
            print(
                f"{size:4d} {tool:18s} {mean[0]:8.1f} {mean[1]:8.1f} {mean[2]:7.0f} "
                f"{mean[3]:6.2f} {100 * mean[4]:6.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
