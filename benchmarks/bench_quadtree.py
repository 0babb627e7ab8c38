"""Quadtree (pixel-blur) tokenization speed beside the uniform-patch baseline.

Rows: 256x256 (min 16, max 64, 100 tokens) and 512x512 (min 16, max 128, 256 tokens), at batch 1
and batch 32 of real photos (scikit-image, area-resized, cycled to fill the batch). Columns, each
the median wall time of --repeats calls after a warm-up (min in brackets for the total):

* quadtree total: `quadtree_partition` + `extract_tokens` (images -> Partition -> padded Tokens of
  16x16 area-averaged patches with centres and levels), the work the Quadformer runners do;
* scoring: the pixel-blur importance maps alone; partition: `quadtree_partition` given those
  maps (`PrecomputedScorer`: validation, greedy split, leaves, label map); tokens: `extract_tokens`;
* grid: `grid_partition` + `extract_tokens` with 16-pixel patches (adaptok's uniform baseline), and
  patchify: `F.unfold` alone (a bare ViT patchify, no Partition);
* CPU ms: process CPU time of one quadtree total (all threads), which is less sensitive than wall
  time to other jobs on a shared machine.

The "Quadformer (quoted)" column holds the issue author's measurement of the authors' fastest
implementation (batch 32, 2 CPU threads, on another run): it is NOT measured here, we cannot run
their code. The target is half of it.

    nice python benchmarks/bench_quadtree.py [--threads 2] [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import adaptok
from adaptok.cli.benchmarking import machine_header
from adaptok.partitioners.quadtree import quadtree_partition
from adaptok.partitioners.scorers import PrecomputedScorer, pixel_blur_importance

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
# (image side, min patch, max patch, tokens)
CASES = ((256, 16, 64, 100), (512, 16, 128, 256))
BATCHES = (1, 32)
# Quoted from the issue (authors' fastest implementation, batch 32, 2 CPU threads): not ours.
QUOTED_MS = {(256, 32): 50.0, (512, 32): 660.0}


def photos(size: int, batch: int, device: str) -> torch.Tensor:
    """[batch, 3, size, size] scikit-image photos in [0, 1], cycled."""
    from skimage import data

    images = []
    for name in PHOTOS:
        array = getattr(data, name)()
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
        images.append(F.interpolate(image, size=(size, size), mode="area"))
    stack = torch.cat(images)
    return stack[torch.arange(batch) % len(PHOTOS)].contiguous().to(device)


def timings(
    function: Callable[[], object], repeats: int, device: str
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU milliseconds of `repeats` calls after one warm-up."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    function()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        sync()
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return wall, cpu


def row(
    size: int, min_patch: int, max_patch: int, budget: int, batch: int, repeats: int, device: str
) -> str:
    """One table row: every timing of one image size and batch."""

    def median(function: Callable[[], object]) -> float:
        return statistics.median(timings(function, repeats, device)[0])

    images = photos(size, batch, device)
    options = {"budget": budget, "min_patch": min_patch, "max_patch": max_patch}

    def total() -> object:
        part = quadtree_partition(images, **options)
        return adaptok.extract_tokens(images, part, patch_size=min_patch)

    def grid() -> object:
        part = adaptok.partition(images, method="grid", patch_size=min_patch)
        return adaptok.extract_tokens(images, part, patch_size=min_patch)

    wall, cpu = timings(total, repeats, device)
    maps = pixel_blur_importance(images, min_patch=min_patch, max_patch=max_patch)
    part = quadtree_partition(images, **options)
    scoring = median(
        lambda: pixel_blur_importance(images, min_patch=min_patch, max_patch=max_patch)
    )
    partition = median(
        lambda: quadtree_partition(images, **options, scorer=PrecomputedScorer(maps))
    )
    tokens = median(lambda: adaptok.extract_tokens(images, part, patch_size=min_patch))
    uniform = median(grid)
    patchify = median(lambda: F.unfold(images, min_patch, stride=min_patch))
    quoted = QUOTED_MS.get((size, batch))
    quoted_text = f"~{quoted:.0f}" if quoted else "—"
    target = f"≤ {quoted / 2:.0f}" if quoted else "—"
    return (
        f"| {size}x{size} | {batch} | {budget} | {statistics.median(wall):.1f} "
        f"({min(wall):.1f}) | {statistics.median(cpu):.0f} | {scoring:.1f} | {partition:.1f} | "
        f"{tokens:.1f} | {uniform:.1f} | {patchify:.1f} | {quoted_text} | {target} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_quadtree · {machine_header(device)} · load average {load:.2f}")
    print(f"# device {device} · median of {args.repeats} calls · pixel-blur scorer")
    print()
    print(
        "| image | batch | tokens | quadtree total ms (min) | CPU ms | scoring | partition "
        "| tokens | grid | patchify | Quadformer (quoted, not run here) | target |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, min_patch, max_patch, budget in CASES:
        for batch in BATCHES:
            print(row(size, min_patch, max_patch, budget, batch, args.repeats, device), flush=True)


if __name__ == "__main__":
    main()
