"""Tokenizer quality and speed at matched token counts: dht, slic, quadtree, grid.

For the scikit-image photos astronaut, coffee, chelsea, rocket, immunohistochemistry and
hubble_deep_field, area-resized to S x S and rounded to 8-bit RGB, print per method: tokens per
image, wall time per image at batch 1 and batch 8, and the PSNR (dB, 0-255 RGB) of the image rebuilt
by filling every region with its mean colour (`Partition.mean_image`).

dht (bundled weights, default budget) sets the target count of each image; the others follow it:
slic gets n_segments = dht's count (its actual count comes out lower; "slic (matched)" re-runs
SLIC with n_segments rescaled by target / count, up to 3 times, and keeps the closest: the time
shown is that of the final run alone), quadtree the nearest valid budget N0 + 3j, grid the patch
size (a divisor of S) whose count is closest. Batch 8 is the six photos plus the first two again,
with one budget for the whole batch (the rounded mean target).

The last column quotes the figures the issue gives for the authors' release (published weights,
2 CPU threads, on another machine): they are NOT measured here.

Adaptivity (dht, bundled weights, budget=None: no cap): regions of flat colour images (one
colour, two halves, four quadrants, a 16-px two-colour checkerboard) at 224x224, of a smooth
gradient and white noise, of the six photos at 224x224 and of the first 32 Fashion-MNIST test
images upsampled to 64x64 (bilinear), with the share of pixels in thin regions (a bounding box
narrower than 3 px on either side), beside the authors' figures quoted in issue 8 (NOT measured
here).

    nice python benchmarks/bench_tokenizers.py [--sizes 224 512] [--threads 2] [--device cpu]
        [--sections speed adaptivity]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data

from adaptok import Partition
from adaptok.cli.benchmarking import machine_header, median_ms
from adaptok.partitioners.grid import grid_partition

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")

# Quoted from issue 8 (the authors' release, no cap, 224x224); not ours.
QUOTED_ADAPTIVITY = {
    "flat": "1",
    "halves": "6",
    "quadrants": "19",
    "checkerboard": "499",
    "fashion-mnist": "14% thin",
}
# Quoted from issue 3 (the authors' release measured on 2 CPU threads elsewhere); not ours.
QUOTED = {
    224: {"dht": "~388 tok, 25.4 dB, 90 ms", "slic": "23.2 dB at ~388 tok"},
    512: {"dht": "~917 tok, 26.1 dB, 390 ms", "slic": "23.9 dB at ~917 tok"},
}
# The authors' mean region count at each size (quoted above): dHT also runs capped at it, so its
# PSNR is compared at no more regions than theirs whatever the default cap gives.
AUTHORS_COUNT = {224: 388, 512: 917}


def load_photos(size: int, device: str) -> torch.Tensor:
    """[6, 3, S, S] the photos area-resized to S x S and rounded to 8-bit levels, in [0, 1]."""
    images = []
    for name in PHOTOS:
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, -1)
        image = torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
        image = F.interpolate(image, size=(size, size), mode="area")
        images.append((image * 255).round().clamp(0, 255) / 255)
    return torch.cat(images).to(device)


def psnr(part: Partition, images: torch.Tensor) -> list[float]:
    """PSNR in dB (0-255 RGB) of each image's mean-colour rebuild."""
    rebuilt = part.mean_image(images)
    mse = ((rebuilt - images) * 255).double().square().flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse)).tolist()


def try_import(entry: str) -> Callable[..., Partition] | str:
    """The partitioner, or the reason it cannot be used."""
    module_name, function_name = entry.split(":")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        return f"{type(error).__name__}: {error}"


@dataclass
class Row:
    method: str
    setting: str
    counts: list[int]
    ms_batch1: float
    ms_batch8: float
    psnr: float
    quoted: str = ""


def quadtree_budget(target: float, size: int, min_patch: int, max_patch: int) -> int:
    base = (size // max_patch) ** 2
    finest = (size // min_patch) ** 2
    steps = round((target - base) / 3)
    return int(min(max(base + 3 * steps, base), finest - (finest - base) % 3))


def grid_patch(target: float, size: int) -> int:
    divisors = [p for p in range(2, size + 1) if size % p == 0]
    return min(divisors, key=lambda p: (abs((size // p) ** 2 - target), p))


def measure(
    name: str,
    setting: str,
    per_image: Callable[[int], Callable[[torch.Tensor], Partition]],
    batched: Callable[[torch.Tensor], Partition],
    images: torch.Tensor,
    batch8: torch.Tensor,
    device: str,
    repeats: int,
) -> Row:
    """Time batch 1 (every image with its own setting) and batch 8; PSNR per image at batch 1."""
    counts, scores, times = [], [], []
    for index in range(images.shape[0]):
        image = images[index : index + 1]
        function = per_image(index)
        part = function(image)
        counts.append(int(part.counts[0]))
        scores.extend(psnr(part, image))
        times.append(median_ms(lambda f=function, x=image: f(x), repeats=repeats, device=device))
    ms8 = median_ms(lambda: batched(batch8), repeats=max(1, repeats // 2), device=device) / 8
    return Row(name, setting, counts, statistics.mean(times), ms8, statistics.mean(scores))


def dht_method(weights: str | None, device: str) -> Callable[..., Partition] | str:
    """dht_partition with the bundled weights, or with a weights file (`--dht-weights`)."""
    dht = try_import("adaptok.partitioners.dht:dht_partition")
    if isinstance(dht, str) or weights is None:
        return dht
    from adaptok.partitioners.dht import load_tokenizer

    tokenizer = load_tokenizer(weights, device=device)
    return lambda images, **options: dht(images, tokenizer=tokenizer, **options)


def run_size(size: int, device: str, repeats: int, dht_weights: str | None = None) -> list[Row]:
    images = load_photos(size, device)
    batch8 = torch.cat([images, images[:2]])
    rows: list[Row] = []
    quoted = QUOTED.get(size, {})

    dht = dht_method(dht_weights, device)
    targets: list[float]
    if isinstance(dht, str):
        print(f"  [skip] dht at {size}: cannot import ({dht})")
        targets = []
    else:
        try:
            rows.append(
                measure(
                    "dht", "default budget", lambda i: dht, dht, images, batch8, device, repeats
                )
            )
            rows[-1].quoted = quoted.get("dht", "")
            targets = [float(c) for c in rows[-1].counts]
            if size in AUTHORS_COUNT:
                cap = AUTHORS_COUNT[size]
                rows.append(
                    measure(
                        "dht",
                        f"budget {cap} (the authors' mean count)",
                        lambda i: lambda x: dht(x, budget=cap),
                        lambda x: dht(x, budget=cap),
                        images,
                        batch8,
                        device,
                        repeats,
                    )
                )
        except Exception as error:  # report and go on with the other methods
            print(f"  [skip] dht at {size}: {type(error).__name__}: {error}")
            targets = []
    if not targets:
        fallback = round(math.sqrt(size * size) / 0.56)  # dht's default budget
        print(f"  no dht counts at {size}: using dht's default budget {fallback} as the target")
        targets = [float(fallback)] * images.shape[0]
    mean_target = statistics.mean(targets)

    slic = try_import("adaptok.partitioners.slic:slic_partition")
    if isinstance(slic, str):
        print(f"  [skip] slic: {slic}")
    else:
        rows.append(
            measure(
                "slic",
                "n_segments = target",
                lambda i: lambda x: slic(x, budget=round(targets[i])),
                lambda x: slic(x, budget=round(mean_target)),
                images,
                batch8,
                device,
                repeats,
            )
        )
        rows[-1].quoted = quoted.get("slic", "")
        matched = [matched_slic_budget(slic, images[i : i + 1], targets[i]) for i in range(6)]
        batch_budget = matched_slic_budget(slic, batch8, mean_target)
        rows.append(
            measure(
                "slic (matched)",
                "n_segments rescaled",
                lambda i: lambda x: slic(x, budget=matched[i]),
                lambda x: slic(x, budget=batch_budget),
                images,
                batch8,
                device,
                repeats,
            )
        )

    quadtree = try_import("adaptok.partitioners.quadtree:quadtree_partition")
    if isinstance(quadtree, str):
        print(f"  [skip] quadtree: {quadtree}")
    else:
        max_patch = 64 if size % 64 == 0 else 32
        min_patch = 8

        def quadtree_with(budget: int) -> Callable[[torch.Tensor], Partition]:
            return lambda x: quadtree(
                x, budget=budget, min_patch=min_patch, max_patch=max_patch, scorer="pixel_blur"
            )

        rows.append(
            measure(
                "quadtree",
                f"pixel_blur, {min_patch}..{max_patch} px",
                lambda i: quadtree_with(quadtree_budget(targets[i], size, min_patch, max_patch)),
                quadtree_with(quadtree_budget(mean_target, size, min_patch, max_patch)),
                images,
                batch8,
                device,
                repeats,
            )
        )

    patch = grid_patch(mean_target, size)
    rows.append(
        measure(
            "grid",
            f"patch {patch}",
            lambda i: lambda x: grid_partition(x, patch_size=grid_patch(targets[i], size)),
            lambda x: grid_partition(x, patch_size=patch),
            images,
            batch8,
            device,
            repeats,
        )
    )
    return rows


def matched_slic_budget(
    slic: Callable[..., Partition], images: torch.Tensor, target: float, rounds: int = 3
) -> int:
    """n_segments whose mean SLIC count over `images` is closest to `target` (secant-like)."""
    budget = max(1, round(target))
    best = (math.inf, budget)
    for _ in range(rounds):
        count = float(slic(images, budget=budget).counts.float().mean())
        best = min(best, (abs(count - target), budget))
        if count == target:
            break
        budget = max(1, round(budget * target / max(count, 1.0)))
    return best[1]


def print_table(size: int, rows: list[Row]) -> None:
    print(f"\n### {size}x{size} — {len(PHOTOS)} photos, mean over images")
    print(
        "| method | setting | tokens/img mean (min-max) | ms/img batch 1 | ms/img batch 8 | "
        "PSNR dB | authors' release (QUOTED from issue 3, not measured here) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        counts = f"{statistics.mean(row.counts):.0f} ({min(row.counts)}-{max(row.counts)})"
        print(
            f"| {row.method} | {row.setting} | {counts} | {row.ms_batch1:.1f} | "
            f"{row.ms_batch8:.1f} | {row.psnr:.2f} | {row.quoted} |"
        )


def crafted_image(kind: str, size: int) -> torch.Tensor:
    """[3, S, S] in [0, 1]: flat colours (one, halves, quadrants, 16-px checkerboard), a smooth
    gradient or white noise."""
    colours = torch.tensor([[0.2, 0.5, 0.7], [0.9, 0.3, 0.1], [0.1, 0.1, 0.6], [0.6, 0.8, 0.2]])
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    if kind == "gradient":
        y, x = ys / (size - 1), xs / (size - 1)
        return torch.stack([y, x, (y + x) / 2])
    if kind == "noise":
        return torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    index = {
        "flat": torch.zeros_like(ys),
        "halves": (xs >= size // 2).long(),
        "quadrants": (xs >= size // 2).long() + 2 * (ys >= size // 2).long(),
        "checkerboard": (ys // 16 + xs // 16) % 2,
    }[kind]
    return colours[index].permute(2, 0, 1)


def thin_share(part: Partition) -> list[float]:
    """Per image, the share of pixels in regions whose box is narrower than 3 px."""
    sides = part.box[:, 2:] - part.box[:, :2]
    thin = (sides.amin(1) < 3).long() * part.area
    per_image = torch.zeros(part.batch_size, dtype=torch.long).index_add(
        0, part.batch_index.cpu(), thin.cpu()
    )
    height, width = part.image_size
    return (per_image.double() / (height * width)).tolist()


def fashion_mnist(count: int, size: int, device: str) -> torch.Tensor | str:
    """[count, 3, S, S] the first Fashion-MNIST test images upsampled (bilinear), or why not."""
    try:
        from adaptok.train.datasets import FashionMNIST

        dataset = FashionMNIST(split="test", limit=count)
    except Exception as error:  # missing files or extras: report and skip
        return f"{type(error).__name__}: {error}"
    images = dataset.images.float()[:, None] / 255
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).expand(-1, 3, -1, -1).to(device)


def adaptivity(device: str, dht_weights: str | None) -> None:
    """Regions without a cap and the thin-region share: crafted images, photos, Fashion-MNIST."""
    dht = dht_method(dht_weights, device)
    if isinstance(dht, str):
        print(f"  [skip] adaptivity: cannot import dht ({dht})")
        return
    rows = []
    kinds = ("flat", "halves", "quadrants", "checkerboard", "gradient", "noise")
    crafted = torch.stack([crafted_image(kind, 224) for kind in kinds]).to(device)
    part = dht(crafted, budget=None)
    for kind, count, thin in zip(kinds, part.counts.tolist(), thin_share(part), strict=True):
        rows.append(
            (f"{kind} 224x224", f"{count}", f"{100 * thin:.1f}%", QUOTED_ADAPTIVITY.get(kind, ""))
        )
    photos = load_photos(224, device)
    part = dht(photos, budget=None)
    counts, thin = part.counts.tolist(), thin_share(part)
    rows.append(
        (
            "6 photos 224x224",
            f"{statistics.mean(counts):.0f} ({min(counts)}-{max(counts)})",
            f"{100 * statistics.mean(thin):.1f}%",
            "",
        )
    )
    items = fashion_mnist(32, 64, device)
    if isinstance(items, str):
        print(f"  [skip] Fashion-MNIST: {items}")
    else:
        part = dht(items, budget=None)
        counts, thin = part.counts.tolist(), thin_share(part)
        rows.append(
            (
                "Fashion-MNIST 64x64 (32 test images)",
                f"{statistics.mean(counts):.1f} ({min(counts)}-{max(counts)})",
                f"{100 * statistics.mean(thin):.1f}%",
                QUOTED_ADAPTIVITY["fashion-mnist"],
            )
        )
    print("\n### dht adaptivity — bundled weights, no cap (budget=None)")
    print(
        "| image | regions mean (min-max) | pixels in thin regions (box < 3 px) | "
        "authors' release (QUOTED from issue 8, not measured here) |"
    )
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dht-weights", default=None, help="a dHT weights file (default: the bundled weights)"
    )
    parser.add_argument(
        "--sections", nargs="+", choices=("speed", "adaptivity"), default=["speed", "adaptivity"]
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    print(f"# bench_tokenizers — {machine_header(args.device)}")
    if args.dht_weights:
        print(f"dht weights: {args.dht_weights}")
    print(
        "slic runs on the CPU (scikit-image) whatever --device says. The CPU is shared: load "
        "average at start {:.1f} {:.1f} {:.1f} (1/5/15 min).".format(*os.getloadavg())
    )
    if "speed" in args.sections:
        for size in args.sizes:
            with torch.no_grad():
                rows = run_size(size, args.device, args.repeats, args.dht_weights)
            print_table(size, rows)
    if "adaptivity" in args.sections:
        with torch.no_grad():
            adaptivity(args.device, args.dht_weights)
    print("\nload average at end {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
