"""From a Partition to fixed-size token inputs: `extract_tokens`.

Aligned squares (grid, quadtree) are area-averaged to P x P exactly; every other partition goes
through the box extractor (`boxes.extract_regions`: bilinear resampling with a soft mask).
Pooled tokens (`pooled=True`, `pool_patches`) resample nothing: each region's token is the
coverage-weighted mean of the P x P grid patches it overlaps (docs/design.md, "Retrofitting").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AdaptokError
from ..io import ImageLike, as_images
from ..ops import halve
from ..regions import Partition
from ..validate import check_int
from .boxes import (
    cell_owners,
    extract_regions,
    gradient_histogram,
    owner_histogram,
    position_histogram,
)
from .core import Tokens, assemble_tokens

__all__ = ["extract_squares", "extract_tokens", "is_square_partition", "pool_patches"]


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


def pool_patches(
    images: Tensor, part: Partition, patch_size: int, *, region_colors: Tensor | None = None
) -> Tokens:
    """Pooled tokens: every region's token is the mean of the P x P grid patches it overlaps,
    each weighted by the share of the region inside it.

    Weights are the region's position histogram on the P-patch grid (`position_histogram`), kept
    as `Tokens.position`; a linear patch embedding of a pooled token is the same mean of the
    patch embeddings, and the histogram times the ViT's position table the same mean of their
    positions. On the grid partition at P every region is one patch, so the tokens are the
    patches themselves. Where every patch lies in one region (grid, quadtree, whole-cell dHT) a
    token is the mean of its patches (one sum over the patches); otherwise one [T, G] x
    [G, C*P*P] product per image (batched). No resampling; gradients reach `images` (e.g. dHT's
    mean-injected pixels), not the (discrete) weights.

    With `region_colors` the tokens are those of `part.inject_means(images, region_colors)`
    (dHT's mean injection). Where every region is whole patches its mean is its token's mean, so
    the colours are injected on the tokens: no injected image is made.

    Args:
        images: [B, C, H, W] with H and W multiples of P.
        part: the Partition.
        patch_size: P.
        region_colors: [N, C] every region's mean after injection, or None.

    Returns:
        Tokens with patches [B, T, C*P*P], position [B, T, (H/P)*(W/P)] (the weights), no mask.
    """
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise AdaptokError(
            f"pooled tokens need images whose sides are multiples of patch_size {patch_size}, got "
            f"{height}x{width}; pad or resize them (e.g. to "
            f"{-(-height // patch_size) * patch_size}x{-(-width // patch_size) * patch_size})"
        )
    owner = cell_owners(part, patch_size, patch_size)
    if owner is None and region_colors is not None:
        images, region_colors = part.inject_means(images, region_colors), None
    rows, cols = height // patch_size, width // patch_size
    grid_patches = (
        images.reshape(batch, channels, rows, patch_size, cols, patch_size)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(batch * rows * cols, channels * patch_size * patch_size)
    )
    if owner is None:  # regions share patches: the [T, G] x [G, C*P*P] product per image
        weights = position_histogram(part, (rows, cols)).to(images.dtype)  # [N, G]
        padded_weights, valid = part.pad(weights)  # [B, T, G]
        grid_patches = grid_patches.view(batch, rows * cols, -1)
        patches = torch.bmm(padded_weights, grid_patches)  # [B, T, C*P*P], zero where padded
        return assemble_tokens(part, patch_size, patches, valid=valid, position=weights)
    # Every patch lies in one region (grid, quadtree, whole-cell dHT): a region's token is the
    # mean of its own patches, a sum over the B*G patches rather than a product with weights
    # that are mostly zero.
    weights = owner_histogram(part, owner).to(images.dtype)
    owner = owner.reshape(-1)
    region = torch.arange(part.num_regions, device=owner.device)
    if owner.numel() == part.num_regions and bool((owner == region).all()):
        # The grid at P, in the Partition's region order: the patches are the tokens.
        patches = _inject_on_tokens(grid_patches, region_colors, channels)
        return assemble_tokens(part, patch_size, patches, position=weights)
    # Each region is whole patches here, so its area counts them. The sums go straight to
    # their padded rows (the same additions in the same order as summing per region first).
    slots, longest = part.padded_rows()
    cells, valid = part.pad((part.area // (patch_size * patch_size)).to(images.dtype), fill=1.0)
    patches = grid_patches.new_zeros(batch * longest, grid_patches.shape[1])
    patches.index_add_(0, slots.index_select(0, owner), grid_patches)
    patches = patches.view(batch, longest, -1).div_(cells[..., None])
    if region_colors is not None:
        patches = _inject_on_tokens(patches, part.pad(region_colors)[0], channels)
    return assemble_tokens(part, patch_size, patches, valid=valid, position=weights)


def _inject_on_tokens(patches: Tensor, colors: Tensor | None, channels: int) -> Tensor:
    """[..., C*P*P] pooled tokens with each one's per-channel mean moved to colors [..., C]."""
    if colors is None:
        return patches
    pixels = patches.unflatten(-1, (channels, -1))
    return (pixels + (colors - pixels.mean(-1))[..., None]).flatten(-2)


def extract_tokens(
    images: ImageLike,
    part: Partition,
    patch_size: int = 16,
    *,
    position_grid: int | None = None,
    gradient: bool = False,
    samples: int = 2,
    pooled: bool = False,
    region_colors: Tensor | None = None,
) -> Tokens:
    """Turn a Partition of a batch into padded per-region token inputs.

    The resampler is chosen by the partition alone: aligned squares (grid, quadtree) are
    area-averaged to P x P exactly, whatever else is asked for; any other partition goes through
    the box extractor (bilinear resampling of each region's box with its soft mask).

    Args:
        images: [B, C, H, W] (or [C, H, W]) pixels or pixel features on the Partition's grid,
            as a float tensor (any values), or any image form `adaptok.partition` takes (uint8
            tensors, numpy arrays, PIL images, paths: converted by `adaptok.io.as_images`).
        part: the Partition.
        patch_size: P, the side of every resampled token.
        position_grid: p; when given, `Tokens.position` holds each region's p x p histogram of
            pixel positions (what the dHT embedder reads).
        gradient: when True, `Tokens.gradient` holds a P*P-bin gradient-orientation histogram.
        samples: anti-aliasing samples per cell and axis of the box extractor (non-square
            partitions only).
        pooled: pool the P x P grid patches over each region instead of resampling it
            (`pool_patches`); `Tokens.position` then holds the pooling weights on the P-patch
            grid, so position_grid must be None.
        region_colors: [N, C] or None; the tokens of `part.inject_means(images, region_colors)`
            (dHT's mean injection: each region's mean moved to its colour). Pooled tokens of
            regions made of whole patches take the colours on the tokens, without an injected
            image.

    Returns:
        Tokens, padded to the largest region count in the batch.
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        images = as_images(images)  # what partition was given: numpy, PIL, uint8, a path
    elif images.ndim == 3:
        images = images[None]
    part._check_pixels(images)
    patch_size = check_int("patch_size", patch_size)
    if region_colors is not None:
        expected = (part.num_regions, images.shape[1])
        if not isinstance(region_colors, Tensor) or tuple(region_colors.shape) != expected:
            got = tuple(region_colors.shape) if isinstance(region_colors, Tensor) else region_colors
            raise AdaptokError(
                f"region_colors must be one colour per region, a {list(expected)} tensor, got {got}"
            )
        if not pooled or gradient:  # read from the injected image itself
            images, region_colors = part.inject_means(images, region_colors), None
    if pooled:
        if position_grid is not None:
            raise AdaptokError(
                "pooled tokens carry their pooling weights on the P-patch grid as positions; "
                "drop position_grid"
            )
        tokens = pool_patches(images, part, patch_size, region_colors=region_colors)
        if gradient:
            tokens = tokens.with_fields(
                gradient=part.pad(gradient_histogram(images, part, patch_size * patch_size))[0]
            )
        return tokens
    if not is_square_partition(part, patch_size):
        return extract_regions(
            images,
            part,
            patch_size=patch_size,
            position_grid=position_grid,
            gradient=gradient,
            samples=samples,
        )
    check_int("samples", samples, hint="(1 = no anti-aliasing)")
    per_region: dict[str, Tensor] = {}
    if position_grid is not None:
        per_region["position"] = position_histogram(part, position_grid).to(images.dtype)
    if gradient:
        per_region["gradient"] = gradient_histogram(images, part, patch_size * patch_size)
    patches = extract_squares(images, part, patch_size)
    return assemble_tokens(part, patch_size, patches, **per_region)
