"""The plain ViT grid: every image cut into P x P squares (the baseline tokenizer)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import AdaptokError, check_images
from ..ops import round_up
from ..regions import Partition
from ..validate import check_int
from .spec import PartitionerSpec

__all__ = ["PATCH_SIZE", "SPEC", "grid_partition", "square_partition"]

PATCH_SIZE = 16  # the default patch side


def square_partition(leaf_level: Tensor, cell: int) -> Partition:
    """The Partition of aligned squares described by a grid of cells (grid and quadtree leaves).

    Args:
        leaf_level: [B, rows, cols] int64 for every cell of side `cell`, the level k of the square
            that covers it (side cell * 2^k, aligned to its own side); all zeros is the plain grid.
        cell: side of a cell in pixels.

    Returns:
        Partition of B images of size (rows * cell) x (cols * cell), regions numbered per image in
        raster order of their top-left corner (the numbering of Partition.from_labels). Built
        directly from the cells, without a pass over every pixel.
    """
    batch, rows, cols = leaf_level.shape
    device = leaf_level.device
    row = torch.arange(rows, device=device).view(1, rows, 1)
    col = torch.arange(cols, device=device).view(1, 1, cols)
    anchor_row = (row >> leaf_level) << leaf_level  # top-left cell of each cell's square
    anchor_col = (col >> leaf_level) << leaf_level
    is_anchor = (anchor_row == row) & (anchor_col == col)
    region_id = (is_anchor.flatten().cumsum(0) - 1).view(batch, rows * cols)
    cell_label = region_id.gather(1, (anchor_row * cols + anchor_col).view(batch, -1))
    labels = (
        cell_label.view(batch, rows, 1, cols, 1)
        .expand(batch, rows, cell, cols, cell)
        .reshape(batch, rows * cell, cols * cell)
    )
    image, top, left = is_anchor.nonzero(as_tuple=True)  # row-major: the region id order
    side = cell << leaf_level[image, top, left]
    y0, x0 = top * cell, left * cell
    box = torch.stack([y0, x0, y0 + side, x0 + side], 1)
    return Partition(labels=labels, batch_index=image, box=box, area=side * side)


def grid_partition(images: Tensor, *, patch_size: int = PATCH_SIZE) -> Partition:
    """Partition every image into the regular grid of `patch_size` squares.

    Args:
        images: [B, C, H, W] float images; H and W must be multiples of patch_size.
        patch_size: side of each square patch, in pixels.

    Returns:
        Partition with (H / P) * (W / P) square regions per image, in row-major order.
    """
    check_int("patch_size", patch_size)
    check_images(images, min_size=patch_size)
    batch, _, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise AdaptokError(
            f"image size {height}x{width} is not a multiple of patch_size {patch_size}; "
            f"resize or pad to {round_up(height, patch_size)}x{round_up(width, patch_size)} "
            f"(adaptok.io.pad_to_multiple) or crop to "
            f"{height // patch_size * patch_size}x{width // patch_size * patch_size}"
        )
    cells = (batch, height // patch_size, width // patch_size)
    return square_partition(torch.zeros(cells, dtype=torch.long, device=images.device), patch_size)


def grid_size_policy(height: int, width: int, options: dict[str, object]) -> int:
    """Any-size policy (see `partition`): pad to a multiple of the patch size."""
    return check_int("patch_size", options.get("patch_size", PATCH_SIZE))


def derive_options(
    image_size: int, patch_size: int, given: Mapping[str, object]
) -> dict[str, object]:
    """A model's grid: patches of the model's patch size (unless given)."""
    return {"patch_size": patch_size, **given}


SPEC = PartitionerSpec(
    name="grid",
    function=grid_partition,
    budget=None,
    none_means=None,
    default=f"one token per {PATCH_SIZE}x{PATCH_SIZE} patch",
    derive=derive_options,
    size_policy=grid_size_policy,
)
