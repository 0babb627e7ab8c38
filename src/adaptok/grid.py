"""The plain ViT grid: every image cut into P x P squares (the baseline tokenizer)."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import AdaptokError, check_images
from .partition import Partition

__all__ = ["grid_labels", "grid_partition"]


def grid_labels(batch: int, height: int, width: int, patch_size: int, device=None) -> Tensor:
    """[B, H, W] int64 labels of a P x P grid, row-major within each image, images in order."""
    rows, cols = height // patch_size, width // patch_size
    cell = (torch.arange(height, device=device) // patch_size)[:, None] * cols + (
        torch.arange(width, device=device) // patch_size
    )[None, :]
    first = torch.arange(batch, device=device).view(batch, 1, 1) * rows * cols
    return first + cell


def grid_partition(images: Tensor, *, patch_size: int = 16) -> Partition:
    """Partition every image into the regular grid of `patch_size` squares.

    Args:
        images: [B, C, H, W] float images; H and W must be multiples of patch_size.
        patch_size: side of each square patch, in pixels.

    Returns:
        Partition with (H / P) * (W / P) square regions per image, in row-major order.
    """
    if not isinstance(patch_size, int) or patch_size < 1:
        raise AdaptokError(f"patch_size must be a positive integer, got {patch_size!r}")
    check_images(images, min_size=patch_size)
    batch, _, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise AdaptokError(
            f"image size {height}x{width} is not a multiple of patch_size {patch_size}; "
            f"resize or pad to {_round_up(height, patch_size)}x{_round_up(width, patch_size)} "
            f"(adaptok.io.pad_to_multiple) or crop to "
            f"{height // patch_size * patch_size}x{width // patch_size * patch_size}"
        )
    labels = grid_labels(batch, height, width, patch_size, device=images.device)
    return Partition._derive(labels)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
