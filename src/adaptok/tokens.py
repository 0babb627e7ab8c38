"""From a Partition to fixed-size token inputs: `Tokens` and `embed_inputs`.

Token batches follow timm NaFlex's contract where it fits (`patches`, `patch_coord`,
`patch_valid`), except that patches are flattened channel-major (`C*P*P`), the layout of a timm
ViT's patch-embedding weight `[D, C, P, P]`, so that weight applies to them as a plain matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AdaptokError
from .partition import Partition

__all__ = [
    "Tokens",
    "embed_inputs",
    "extract_squares",
    "halve",
    "is_square_partition",
    "sincos_2d",
]


@dataclass(frozen=True)
class Tokens:
    """A padded batch of per-region token inputs.

    Attributes:
        patches: [B, T, C*P*P] every region resampled to P x P, flattened channel-major.
        patch_coord: [B, T, 2] float (y, x) centre of each region's box, in units of P pixels.
        patch_valid: [B, T] bool, False for padding.
        region_index: [B, T] int64 region id in the Partition, -1 for padding.
        box: [B, T, 4] int64 region boxes (y0, x0, y1, x1) in pixels, zeros for padding.
        patch_size: P.
        mask: [B, T, P*P] soft mask of the region inside its resampled box (None when every
            region fills its box, as for grid and quadtree squares).
        position: [B, T, p*p] histogram of the region's pixel positions over a p x p grid of the
            image, summing to one (None unless requested).
        gradient: [B, T, P*P] histogram of gradient orientations (None unless requested).
    """

    patches: Tensor
    patch_coord: Tensor
    patch_valid: Tensor
    region_index: Tensor
    box: Tensor
    patch_size: int
    mask: Tensor | None = None
    position: Tensor | None = None
    gradient: Tensor | None = None

    @property
    def level(self) -> Tensor:
        """[B, T] int64 log2(box side / P) for square regions (0 for the smallest patches)."""
        side = (self.box[..., 2] - self.box[..., 0]).clamp(min=1)
        return torch.log2(side.double() / self.patch_size).round().long().clamp(min=0)

    def with_fields(self, **fields: Tensor | None) -> Tokens:
        """A copy with some fields replaced."""
        return replace(self, **fields)


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


def halve(images: Tensor) -> Tensor:
    """Means of 2 x 2 blocks: [B, C, H, W] -> [B, C, H / 2, W / 2] (H, W even).

    The same numbers as F.avg_pool2d(images, 2) up to rounding, several times faster on CPU.
    """
    batch, channels, height, width = images.shape
    rows = images.reshape(batch, channels, height // 2, 2, width)
    pairs = rows[:, :, :, 0] + rows[:, :, :, 1]
    return (pairs[..., 0::2] + pairs[..., 1::2]).mul_(0.25)


def sincos_2d(coords: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """2-D sinusoidal position embedding: half the channels encode x, half encode y.

    Each half is the standard [sin, cos] of position / temperature^(2i / (dim/2)).

    Args:
        coords: [..., 2] float (y, x) positions (fractional allowed).
        dim: embedding size, a multiple of 4.
        temperature: the frequency base.

    Returns:
        [..., dim] embedding: x's sin/cos in the first half, y's in the second.
    """
    if dim % 4:
        raise AdaptokError(f"sincos_2d needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    steps = torch.arange(quarter, device=coords.device, dtype=torch.float64)
    omega = 1.0 / temperature ** (steps / quarter)
    y = coords[..., 0:1].double() * omega
    x = coords[..., 1:2].double() * omega
    emb = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)
    return emb.to(coords.dtype if coords.is_floating_point() else torch.float32)


def embed_inputs(
    images: Tensor, part: Partition, patch_size: int = 16, **options: object
) -> Tokens:
    """Turn a Partition of a batch into padded per-region token inputs.

    Aligned squares (grid, quadtree) are area-averaged to P x P exactly; any other partition goes
    through the box extractor (bilinear resampling of each region's box with its soft mask).

    Args:
        images: [B, C, H, W] pixels (or pixel features) on the Partition's grid.
        part: the Partition.
        patch_size: P, the side of every resampled token.
        **options: options of the box extractor (`adaptok.extract.extract_regions`).

    Returns:
        Tokens, padded to the largest region count in the batch.
    """
    part._check_pixels(images)
    if is_square_partition(part, patch_size) and not options:
        patches = extract_squares(images, part, patch_size)
        return _assemble(part, patch_size, patches)
    from .extract import extract_regions  # the general, mask-aware path

    return extract_regions(images, part, patch_size=patch_size, **options)


def _assemble(part: Partition, patch_size: int, patches: Tensor, **per_region: Tensor) -> Tokens:
    """Pad per-region [N, ...] tensors into a Tokens batch."""
    box = part.box
    centre = torch.stack([box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]], 1).to(patches.dtype)
    coord = centre / (2 * patch_size)
    region = torch.arange(part.num_regions, device=part.device)
    padded_patches, valid = part.pad(patches)

    def pad(values: Tensor, fill: float = 0.0) -> Tensor:
        return part.pad(values, fill)[0]

    return Tokens(
        patches=padded_patches,
        patch_coord=pad(coord),
        patch_valid=valid,
        region_index=pad(region, fill=-1),
        box=pad(box),
        patch_size=patch_size,
        **{name: pad(value) for name, value in per_region.items()},
    )
