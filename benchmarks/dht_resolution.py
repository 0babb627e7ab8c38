"""dHT at a working resolution below full size: quality and cost under a token cap.

Chooses `PATCH_PIXELS` (`adaptok.partitioners.dht`: a ViT's dHT runs at 8 working pixels per
patch side, resolution 8 / P) on held-out photos that no other benchmark reports: scikit-image's
retina, stereo_motorcycle (left), colorwheel and logo (RGB), and camera, brick, grass, gravel,
moon and cell (grey, repeated to RGB), area-resized to S x S and rounded to 8-bit. For each cap
and resolution it prints the regions per image, the partition's thread CPU time per image (batch
of the ten, one thread) and the PSNR (dB, 0-255 RGB) of the full-size image rebuilt from each
region's mean colour. Images left with fewer regions than the cap at the working size are
partitioned at full size (the library's rule), and the "fell back" column counts them.

    python benchmarks/dht_resolution.py [--size 224] [--budgets 49 98 196] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data

import adaptok
from adaptok.cli.benchmarking import machine_header
from adaptok.partitioners.dht.tokenizer import working_size

HELD_OUT = (
    "retina", "stereo_motorcycle", "colorwheel", "logo", "camera", "brick", "grass", "gravel",
    "moon", "cell",
)  # fmt: skip
RESOLUTIONS = (1.0, 0.75, 0.5, 0.375, 0.25)


def load(size: int) -> torch.Tensor:
    """[10, 3, S, S] the held-out photos in [0, 1], 8-bit levels."""
    images = []
    for name in HELD_OUT:
        array = getattr(data, name)()
        array = array[0] if isinstance(array, tuple) else array  # stereo pair: the left view
        if array.ndim == 2:
            array = np.stack([array] * 3, -1)
        image = torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
        images.append((F.interpolate(image, size=(size, size), mode="area") * 255).round() / 255)
    return torch.cat(images)


def psnr(part: adaptok.Partition, images: torch.Tensor) -> float:
    """Mean over images of the mean-colour rebuild's PSNR (dB, 0-255 RGB)."""
    error = (part.mean_image(images) - images).square().flatten(1).mean(1)
    return float((10 * torch.log10(1 / error)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budgets", type=int, nargs="+", default=[49, 98, 196])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load(args.size)
    print(f"{machine_header()}; held-out photos at {args.size}x{args.size}, batch {len(images)}")
    print()
    print(
        "| cap | resolution | working size | regions / image | fell back | ms / image | PSNR (dB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for budget in args.budgets:
        for resolution in RESOLUTIONS:
            adaptok.partition(images[:2], "dht", budget=budget, resolution=resolution)  # warm
            tick = time.thread_time()
            part = adaptok.partition(images, "dht", budget=budget, resolution=resolution)
            per_image = 1000 * (time.thread_time() - tick) / len(images)
            side = working_size(args.size, args.size, resolution)[0]
            fell = _fell_back(images, budget, resolution)
            print(
                f"| {budget} | {resolution} | {side} | {float(part.counts.float().mean()):.1f} | "
                f"{fell} | {per_image:.1f} | {psnr(part, images):.2f} |",
                flush=True,
            )
    return 0


def _fell_back(images: torch.Tensor, budget: int, resolution: float) -> int:
    """Images with fewer regions than the cap at the working size (partitioned at full size)."""
    if resolution == 1:
        return 0
    size = working_size(*images.shape[-2:], resolution)
    small = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    return int((adaptok.partition(small, "dht", budget=budget).counts < budget).sum())


if __name__ == "__main__":
    raise SystemExit(main())
