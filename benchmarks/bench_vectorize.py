"""Raster to vector: adaptok.vectorize against vtracer on the scikit-image photos.

Every SVG is rendered back with resvg (resvg-py) at the image's own size and compared with the
input. Columns: wall time (median of --repeats runs; ours includes the partition), SVG size,
number of <path> elements, PSNR (dB, 0-255, the render composited over black against the input)
and the fraction of the canvas the shapes cover (rendered alpha = 255 on a transparent canvas).

    nice python benchmarks/bench_vectorize.py                   # dht (the default), 224 and 512
    nice python benchmarks/bench_vectorize.py --method slic     # slic partitions
    nice python benchmarks/bench_vectorize.py --method quadtree --option min_patch=1 \
        --option max_patch=32 --pixels-per-region 16

With --stages: where adaptok.vectorize's time goes (partition, region colours, boundary tracing,
simplification, Béziers, SVG writing) beside vtracer's defaults, the tools timed in turn within
every repeat (medians over repeats, then means over the photos), as elapsed time and as the
calling thread's CPU time (everything runs in that thread on one torch thread; CPU time leaves
out the other processes of a busy machine). --baseline DIR adds an older copy
of src/adaptok/vector (e.g. `git archive COMMIT src/adaptok/vector | tar -x -C /tmp/old`) timed in
the same loop, and checks that it writes the same SVG text:

    nice python benchmarks/bench_vectorize.py --stages --repeats 7 \
        --baseline /tmp/old/src/adaptok/vector

Needs: pip install resvg-py vtracer
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import adaptok
from adaptok.cli.benchmarking import machine_header
from adaptok.vector import DENSE, render_svg, vectorize

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
    parser.add_argument(
        "--stages", action="store_true", help="time the stages of vectorize beside vtracer"
    )
    parser.add_argument(
        "--baseline", type=Path, default=None, help="with --stages: an older src/adaptok/vector"
    )
    args = parser.parse_args()
    if args.stages:
        torch.set_num_threads(args.threads)
        return stages(args)
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
            budget: int | str = DENSE  # vectorize's default: one region per 24 pixels
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


# Stage -> the names vectorize's module calls for it (wrapped with a timer in --stages).
STAGES = {
    "partition": ["partition"],
    "trace": ["trace_boundaries"],
    "simplify": ["refine_chains", "smooth_chains", "douglas_peucker"],
    "bezier": ["fit_beziers"],
    "svg": ["write_svg"],
}


class StageTimer:
    """Wraps the stage functions that `vectorize`'s own module looks up, summing their times."""

    def __init__(self, vectorize_function: Callable[..., str]) -> None:
        self.module = sys.modules[vectorize_function.__module__]
        self.spent = dict.fromkeys(STAGES, 0.0)
        for stage, names in STAGES.items():
            for name in names:
                setattr(self.module, name, self._timed(stage, getattr(self.module, name)))

    def _timed(self, stage: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.spent[stage] += time.thread_time() - start

        return wrapper

    def run(self, *args, **kwargs) -> tuple[str, dict[str, float]]:
        """(SVG, ms per stage plus "cpu" and "wall" totals) of one call of the module's
        vectorize; stages and "cpu" count this thread's CPU time."""
        self.spent = dict.fromkeys(STAGES, 0.0)
        with clocks() as spent:
            svg = self.module.vectorize(*args, **kwargs)
        return svg, {**{k: 1000 * v for k, v in self.spent.items()}, **spent}


@contextlib.contextmanager
def clocks() -> Iterator[dict[str, float]]:
    """Fills {"wall": ms, "cpu": ms of this thread} for the block (torch on one thread, numpy
    and vtracer all run in the calling thread, so CPU time leaves out other processes' load)."""
    spent: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.thread_time()
    yield spent
    spent["wall"] = 1000 * (time.perf_counter() - wall)
    spent["cpu"] = 1000 * (time.thread_time() - cpu)


def load_baseline(path: Path) -> ModuleType:
    """An older copy of adaptok/vector imported as adaptok._baseline_vector (its relative
    imports reach the current adaptok for everything outside vector/)."""
    spec = importlib.util.spec_from_file_location(
        "adaptok._baseline_vector", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stages(args: argparse.Namespace) -> int:
    import vtracer

    options = dict(_parse_option(text) for text in args.option)
    timers = {"adaptok": StageTimer(vectorize)}
    if args.baseline is not None:
        timers = {"adaptok before": StageTimer(load_baseline(args.baseline).vectorize), **timers}
    print(f"# adaptok.vectorize stages vs vtracer defaults · method={args.method} · its defaults")
    print(f"# {machine_header()}")
    print(
        f"# adaptok {adaptok.__version__} · vtracer {version('vtracer')} · numpy {np.__version__}"
    )
    tools = ["vtracer default", *timers]
    for size in args.sizes:
        inputs = {}
        for name in args.photos:
            image = load_photo(name, size)
            buffer = io.BytesIO()
            Image.fromarray(to_rgb8(image)).save(buffer, format="PNG")
            inputs[name] = (image, buffer.getvalue())
        times: dict[tuple[str, str], list[dict[str, float]]] = {}
        last: dict[tuple[str, str], str] = {}
        loads = []
        for repeat in range(args.repeats + 1):  # repeat 0 warms up (imports, caches, weights)
            loads.append(os.getloadavg()[0])
            for name, (image, png) in inputs.items():
                for tool in tools:  # in turn, so a burst of load hits every tool alike
                    with torch.no_grad():
                        if tool == "vtracer default":
                            with clocks() as spent:
                                svg = vtracer.convert_raw_image_to_svg(
                                    png, img_format="png", colormode="color"
                                )
                        else:
                            svg, spent = timers[tool].run(image, args.method, **options)
                    if repeat:
                        times.setdefault((name, tool), []).append(spent)
                    last[(name, tool)] = svg
        if args.baseline is not None:
            differ = [n for n in inputs if last[(n, "adaptok")] != last[(n, "adaptok before")]]
            print(f"\n{size}x{size}: SVG text identical before/after: {not differ} {differ or ''}")
        print(
            f"\n{size}x{size}, {len(inputs)} photos, {args.repeats} repeats, 1-minute load "
            f"{min(loads):.1f}..{max(loads):.1f} on {os.cpu_count()} cores; ms = mean over the "
            "photos of each photo's median; wall = elapsed, the rest = this thread's CPU time"
        )
        columns = ["wall", "cpu", *STAGES, "rest"]
        print(f"{'tool':16s} " + " ".join(f"{c:>9s}" for c in columns) + "      KiB   PSNR")
        for tool in tools:
            row, nan = [], float("nan")
            for column in columns:
                per_photo = []
                for name in inputs:
                    runs = times[(name, tool)]
                    if column == "rest":  # region colours, option checks, image conversion
                        values = [r["cpu"] - sum(r.get(k, nan) for k in STAGES) for r in runs]
                    else:
                        values = [r.get(column, nan) for r in runs]
                    per_photo.append(statistics.median(values))
                row.append(statistics.mean(per_photo))
            quality = [measure(last[(n, tool)], to_rgb8(inputs[n][0])) for n in inputs]
            kib = statistics.mean(len(last[(n, tool)].encode()) / 1024 for n in inputs)
            psnr = statistics.mean(q[0] for q in quality)
            cells = " ".join("        -" if v != v else f"{v:9.1f}" for v in row)
            print(f"{tool:16s} {cells} {kib:8.1f} {psnr:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
