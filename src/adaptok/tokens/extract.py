"""From a Partition to fixed-size token inputs: `extract_tokens`.

Aligned squares (grid, quadtree) are area-averaged to P x P exactly; every other partition goes
through the box extractor (`boxes.extract_regions`: bilinear resampling with a soft mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..regions import Partition
from .boxes import extract_regions
from .core import Tokens, assemble_tokens
from .ops import halve

__all__ = ["extract_squares", "extract_tokens", "is_square_partition"]


def is_square_partition(part: Partition, patch_size: int) -> bool:
    """True when every region fills its box, which is a square whose side is a multiple of
    `patch_size` and aligned to its own side (grid and quadtree partitions)."""
    height = part.box[:, 2] - part.box[:, 0]
    width = part.box[:, 3] - part.box[:, 1]
    return bool(
        (height == width).all()
        and (height * width == part.area).all()
        and (height % patch_size == 0).all()
        and (part.box[:, 0] % height == 0).all()
        and (part.box[:, 1] % width == 0).all()
    )


def extract_squares(images: Tensor, part: Partition, patch_size: int) -> Tensor:
    """Resample aligned square regions to P x P by area averaging.

    One area-averaged image per distinct region size (a handful; power-of-two factors are built
    as a pyramid of 2 x 2 means), then a gather: no loop over regions.

    Args:
        images: [B, C, H, W].
        part: a Partition whose regions are aligned squares (see `is_square_partition`).
        patch_size: P.

    Returns:
        [N, C*P*P] one flattened patch per region, channel-major.
    """
    channels = images.shape[1]
    side = part.box[:, 2] - part.box[:, 0]
    out = images.new_empty(part.num_regions, channels * patch_size * patch_size)
    pyramid = {1: images}  # factor -> images area-averaged over factor x factor blocks
    for size in torch.unique(side).tolist():
        factor = size // patch_size
        if factor & (factor - 1) == 0:
            while max(pyramid) < factor:
                pyramid[2 * max(pyramid)] = halve(pyramid[max(pyramid)])
            pooled = pyramid[factor]
        else:
            pooled = F.avg_pool2d(images, factor)
        # [B, C, H/size, W/size, P, P]: the P x P block of every size-aligned square.
        blocks = pooled.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)
        chosen = torch.nonzero(side == size).flatten()
        rows = part.box[chosen, 0] // size
        cols = part.box[chosen, 1] // size
        picked = blocks[part.batch_index[chosen], :, rows, cols]  # [n, C, P, P]
        out[chosen] = picked.reshape(chosen.numel(), -1)
    return out


def extract_tokens(
    images: Tensor, part: Partition, patch_size: int = 16, **options: object
) -> Tokens:
    """Turn a Partition of a batch into padded per-region token inputs.

    Aligned squares (grid, quadtree) are area-averaged to P x P exactly; any other partition goes
    through the box extractor (bilinear resampling of each region's box with its soft mask).

    Args:
        images: [B, C, H, W] pixels (or pixel features) on the Partition's grid.
        part: the Partition.
        patch_size: P, the side of every resampled token.
        **options: options of the box extractor (`adaptok.tokens.extract_regions`).

    Returns:
        Tokens, padded to the largest region count in the batch.
    """
    part._check_pixels(images)
    if is_square_partition(part, patch_size) and not options:
        patches = extract_squares(images, part, patch_size)
        return assemble_tokens(part, patch_size, patches)

    return extract_regions(images, part, patch_size=patch_size, **options)
