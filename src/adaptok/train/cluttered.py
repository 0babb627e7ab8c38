"""Cluttered Fashion-MNIST: one rescaled item at a random place on a large canvas, plus clutter.

In the spirit of the cluttered MNIST of the Spatial Transformer Networks paper: the informative
part of the image is small and can be anywhere, which is where a fixed grid of tokens should
lose to an adaptive tokenizer. Every image is generated on the fly from Fashion-MNIST and depends
only on (source split, seed, index), so the dataset is deterministic without being stored.

Layout of image `i` (all draws from a generator seeded with (seed, i)):

- the item: Fashion-MNIST image i of the source split, rescaled by a factor drawn uniformly in
  [min_scale, max_scale] (bilinear), placed at a uniform position that keeps it inside the canvas;
- clutter: `clutter` square fragments (side `fragment` source pixels) cropped at random from other
  random images of the same split, rescaled by their own factor and placed anywhere on the canvas
  (fragments may be cut by the canvas edge); the item is drawn over them (pixel-wise maximum).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import AdaptokError
from .datasets import FASHION_CLASSES, FASHION_MNIST_ROOT, DatasetInfo, FashionMNIST, normalize

__all__ = ["ClutteredFashionMNIST", "ClutteredLayout", "cluttered_canvas"]


class ClutteredLayout(NamedTuple):
    """Where everything of one cluttered image went.

    Attributes:
        label: the item's class (int).
        box: (y0, x0, y1, x1) of the rescaled item on the canvas, end-exclusive.
        scale: the item's rescaling factor.
        clutter_boxes: one (y0, x0, y1, x1) per fragment, clipped to the canvas.
    """

    label: int
    box: tuple[int, int, int, int]
    scale: float
    clutter_boxes: tuple[tuple[int, int, int, int], ...]


def _rescale(image: Tensor, side: int) -> Tensor:
    """[h, w] float -> [side, side] (bilinear, antialiased when shrinking)."""
    return F.interpolate(
        image[None, None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )[0, 0]


def _paste_max(canvas: Tensor, patch: Tensor, y: int, x: int) -> tuple[int, int, int, int]:
    """Max-composite `patch` onto `canvas` with its top-left corner at (y, x), clipping at the
    edges; returns the clipped box."""
    size = canvas.shape[-1]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + patch.shape[0], size), min(x + patch.shape[1], size)
    if y1 <= y0 or x1 <= x0:
        return (y0, x0, y0, x0)
    region = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    canvas[y0:y1, x0:x1] = torch.maximum(canvas[y0:y1, x0:x1], region)
    return (y0, x0, y1, x1)


def cluttered_canvas(
    images: Tensor,
    labels: Tensor,
    index: int,
    *,
    canvas_size: int = 128,
    min_scale: float = 1.0,
    max_scale: float = 2.5,
    clutter: int = 6,
    fragment: int = 10,
    seed: int = 0,
) -> tuple[Tensor, ClutteredLayout]:
    """Generate cluttered image `index` from a stack of Fashion-MNIST images.

    Args:
        images: [N, 28, 28] uint8 source images.
        labels: [N] int64 their classes.
        index: which image is the item (0 <= index < N).
        canvas_size: side of the square canvas.
        min_scale: smallest rescaling factor of the item.
        max_scale: largest rescaling factor (28 * max_scale must fit on the canvas).
        clutter: number of clutter fragments.
        fragment: side of a fragment in source pixels.
        seed: base seed; the image depends only on (seed, index) and the source images.

    Returns:
        (canvas [canvas_size, canvas_size] float in [0, 1], ClutteredLayout).
    """
    count, height, width = images.shape
    if not 0 <= index < count:
        raise AdaptokError(f"index {index} out of range for {count} source images")
    if not 0 < min_scale <= max_scale or round(height * max_scale) > canvas_size:
        raise AdaptokError(
            f"scales must satisfy 0 < min_scale <= max_scale and {height} * max_scale <= "
            f"canvas_size; got min_scale={min_scale}, max_scale={max_scale}, "
            f"canvas_size={canvas_size}"
        )
    if not 0 < fragment <= min(height, width):
        raise AdaptokError(f"fragment must lie in 1..{min(height, width)}, got {fragment}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    def integer(low: int, high: int) -> int:  # inclusive
        return int(torch.randint(low, high + 1, (), generator=generator))

    canvas = torch.zeros(canvas_size, canvas_size)
    clutter_boxes = []
    for _ in range(clutter):
        source = integer(0, count - 2)
        source += source >= index  # another image than the item
        top, left = integer(0, height - fragment), integer(0, width - fragment)
        piece = images[source, top : top + fragment, left : left + fragment].float() / 255
        side = max(1, round(fragment * uniform(min_scale, max_scale)))
        piece = _rescale(piece, side).clamp(0, 1)
        y, x = (
            integer(-side // 2, canvas_size - side // 2),
            integer(-side // 2, canvas_size - side // 2),
        )
        clutter_boxes.append(_paste_max(canvas, piece, y, x))
    scale = uniform(min_scale, max_scale)
    side = min(canvas_size, max(1, round(height * scale)))
    item = _rescale(images[index].float() / 255, side).clamp(0, 1)
    y, x = integer(0, canvas_size - side), integer(0, canvas_size - side)
    box = _paste_max(canvas, item, y, x)
    layout = ClutteredLayout(int(labels[index]), box, scale, tuple(clutter_boxes))
    return canvas, layout


class ClutteredFashionMNIST(Dataset):
    """Cluttered Fashion-MNIST generated deterministically from Debian's idx files.

    Yields (image [in_chans, S, S] float32 ImageNet-normalised, label int64), like `FashionMNIST`.

    Args:
        root: the Fashion-MNIST idx folder.
        split: "train" (items from the 60k train images) or "test" (from the 10k test images);
            clutter comes from the same split, so test images never show training pixels.
        image_size: canvas side S.
        in_chans: 1, or 3 (the grey canvas repeated).
        limit: keep only the first `limit` items (a fixed subset), None: all.
        seed: base seed of the layouts.
        min_scale, max_scale, clutter, fragment: see `cluttered_canvas`.
    """

    def __init__(
        self,
        root: str | Path = FASHION_MNIST_ROOT,
        *,
        split: str = "train",
        image_size: int = 128,
        in_chans: int = 3,
        limit: int | None = None,
        seed: int = 0,
        min_scale: float = 1.0,
        max_scale: float = 2.5,
        clutter: int = 6,
        fragment: int = 10,
    ) -> None:
        source = FashionMNIST(root, split=split, image_size=28, in_chans=1)
        self.images = source.images  # [N, 28, 28] uint8, all of the split (clutter sources)
        self.labels = source.labels
        self.length = len(source) if limit is None else min(limit, len(source))
        self.image_size = image_size
        self.in_chans = in_chans
        self.options = dict(
            canvas_size=image_size,
            min_scale=min_scale,
            max_scale=max_scale,
            clutter=clutter,
            fragment=fragment,
            seed=seed + (split != "train") * 7919,
        )
        cluttered_canvas(self.images, self.labels, 0, **self.options)  # validate the options now
        self.info = DatasetInfo("classification", 10, in_chans, FASHION_CLASSES)

    def __len__(self) -> int:
        return self.length

    def layout(self, index: int) -> ClutteredLayout:
        """Where the item and the clutter of image `index` are."""
        return cluttered_canvas(self.images, self.labels, index, **self.options)[1]

    def raw(self, index: int) -> Tensor:
        """[S, S] float in [0, 1], the canvas before normalisation."""
        return cluttered_canvas(self.images, self.labels, index, **self.options)[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        canvas, layout = cluttered_canvas(self.images, self.labels, index, **self.options)
        image = normalize(canvas[None].expand(self.in_chans, -1, -1))
        return image, torch.tensor(layout.label)
