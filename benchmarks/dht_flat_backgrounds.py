"""dHT on objects on flat grounds: where region borders cut exactly flat areas (issue 20).

Partitions a few objects on flat grounds with the bundled dHT weights (no cap, and the default
cap) and counts the region borders between 4-adjacent pixels whose receptive fields are one colour
(`merge.flat_edges`: for the bundled weights, whose encoder reads each pixel alone, two pixels of
exactly equal colour). The images: the bundled Fashion-MNIST boot and Fashion-MNIST test items 1
and 2 at 128x128 (bilinear), text drawn with Pillow's default font on white (96x256), and a
logo-like disc, ring and bar on white, drawn 4x larger and area-averaged (160x224).

    python benchmarks/dht_flat_backgrounds.py partitions OUT.pt
    python benchmarks/dht_flat_backgrounds.py picture BEFORE.pt AFTER.pt OUT.png

`partitions` uses whichever adaptok is importable (run it once with the old code on PYTHONPATH for
the "before"); `picture` draws both, before on top, after below (magenta borders), enlarged
twice.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

import adaptok
from adaptok.io import FLAT_SAMPLE, sample_image, save_image
from adaptok.train.datasets import FASHION_MNIST_ROOT, FashionMNIST
from adaptok.visualize import draw_boundaries, side_by_side


def _drawn(width: int, height: int, draw: object, smooth: int = 1) -> torch.Tensor:
    """A drawing on white, drawn `smooth` times larger and area-averaged (smooth edges)."""
    canvas = Image.new("RGB", (width * smooth, height * smooth), "white")
    draw(ImageDraw.Draw(canvas))
    image = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float().div(255)[None]
    return F.avg_pool2d(image, smooth)


def images() -> dict[str, torch.Tensor]:
    """The objects on flat grounds, each [1, 3, H, W] in [0, 1]."""
    items = FashionMNIST(FASHION_MNIST_ROOT, split="test", limit=3).images[1:3]
    fashion = F.interpolate(
        items.float().div(255)[:, None], size=(128, 128), mode="bilinear", align_corners=False
    )
    font = ImageFont.load_default(size=44)
    return {
        "boot": sample_image(128, name=FLAT_SAMPLE),
        "pullover": fashion[0:1].clamp(0, 1).expand(-1, 3, -1, -1),
        "trousers": fashion[1:2].clamp(0, 1).expand(-1, 3, -1, -1),
        "text": _drawn(
            256, 96, lambda d: d.text((12, 18), "adaptok", fill=(20, 30, 90), font=font)
        ),
        "logo": _drawn(
            224,
            160,
            lambda d: (
                d.ellipse((120, 120, 520, 520), fill=(220, 60, 40)),
                d.ellipse((600, 200, 800, 400), outline=(40, 90, 200), width=24),
                d.rectangle((80, 562, 840, 594), fill=(30, 30, 30)),
            ),
            smooth=4,
        ),
    }


def flat_cuts(image: torch.Tensor, labels: torch.Tensor) -> int:
    """Region borders between pixels whose receptive fields are one colour."""
    # Imported here: the partitions command also runs on the code before issue 20, without it.
    from adaptok.partitioners.dht import load_default_tokenizer
    from adaptok.partitioners.dht.merge import flat_edges

    height, width = image.shape[-2:]
    flat = flat_edges(image, *load_default_tokenizer().encoder.receptive_field(height, width))
    cut = torch.cat(
        [
            (labels[:, :, 1:] != labels[:, :, :-1]).flatten(),
            (labels[:, 1:, :] != labels[:, :-1, :]).flatten(),
        ]
    )
    return int((flat & cut).sum())


def partitions(path: str) -> None:
    result = {}
    for name, image in images().items():
        for budget in (None, "auto"):
            part = adaptok.partition(image, method="dht", budget=budget)
            result[(name, budget)] = part.labels
            print(f"{name:9s} budget={budget!s:5s} {part.num_regions:4d} regions")
    torch.save(result, path)


def picture(before_path: str, after_path: str, path: str, zoom: int = 2) -> None:
    saved = {"before": torch.load(before_path), "after": torch.load(after_path)}
    shapes = images()
    height = max(image.shape[-2] for image in shapes.values())
    rows = []
    for when, labels in saved.items():
        panels = []
        for name, image in shapes.items():
            part = adaptok.Partition.from_labels(labels[(name, None)])
            print(f"{when:6s} {name:9s} no cap: {part.num_regions:4d} regions", end="")
            print(f", {flat_cuts(image, part.labels):4d} borders inside flat areas", end="")
            print(f"; default cap: {flat_cuts(image, labels[(name, 'auto')]):4d}")
            drawn = draw_boundaries(image, part, color=(1.0, 0.0, 1.0))
            panels.append(F.pad(drawn, (0, 0, 0, height - image.shape[-2]), value=1.0))
        rows += [side_by_side(*panels, gap=8), torch.ones(1, 3, 8, 1)]
    width = max(row.shape[-1] for row in rows)
    rows = [row.expand(-1, -1, -1, width) if row.shape[-1] == 1 else row for row in rows[:-1]]
    grid = torch.cat(rows, 2)
    save_image(grid.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3), path)
    print(f"-> {path} (top: before, bottom: after; magenta: region borders)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("partitions").add_argument("output")
    drawing = commands.add_parser("picture")
    drawing.add_argument("before")
    drawing.add_argument("after")
    drawing.add_argument("output")
    args = parser.parse_args()
    if args.command == "partitions":
        partitions(args.output)
    else:
        picture(args.before, args.after, args.output)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
