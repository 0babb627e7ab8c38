"""`Tokens`: the padded batch of per-region token inputs that every embedder consumes.

Token batches follow timm NaFlex's contract where it fits (`patches`, `patch_coord`,
`patch_valid`), except that patches are flattened channel-major (`C*P*P`), the layout of a timm
ViT's patch-embedding weight `[D, C, P, P]`, so that weight applies to them as a plain matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..ops import counted
from ..regions import Partition

__all__ = ["Tokens", "assemble_tokens"]


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
        area: [B, T] float pixels of each region, 0 for padding (what size-aware attention
            weighs a token by; None only for Tokens built by hand).
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
    area: Tensor | None = None

    @property
    def level(self) -> Tensor:
        """[B, T] int64 log2(box side / P) for square regions (0 for the smallest patches)."""
        side = (self.box[..., 2] - self.box[..., 0]).clamp(min=1)
        return torch.log2(side.double() / self.patch_size).round().long().clamp(min=0)

    def __repr__(self) -> str:
        # A summary: the default dataclass repr prints every tensor.
        batch, length, width = self.patches.shape
        extras = ", ".join(
            f"{name} {list(value.shape)}"
            for name in ("mask", "position", "gradient")
            if (value := getattr(self, name)) is not None
        )
        valid = int(self.patch_valid.sum())
        return (
            f"Tokens({counted(batch, 'image')} x {length} slots ({valid} valid), "
            f"patch_size={self.patch_size}, patches [{batch}, {length}, {width}]"
            + (f", {extras}" if extras else "")
            + f", device={self.patches.device.type})"
        )

    def with_fields(self, **fields: Tensor | None) -> Tokens:
        """A copy with some fields replaced."""
        return replace(self, **fields)


def assemble_tokens(
    part: Partition,
    patch_size: int,
    patches: Tensor,
    *,
    valid: Tensor | None = None,
    **per_region: Tensor,
) -> Tokens:
    """Pad per-region [N, ...] tensors into a Tokens batch. With `valid` ([B, T] bool, as
    `part.pad` gives it), `patches` are already padded ([B, T, ...], zero where not valid)."""
    box = part.box
    centre = torch.stack([box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]], 1).to(patches.dtype)
    coord = centre / (2 * patch_size)
    region = torch.arange(part.num_regions, device=part.device)
    if valid is None:
        padded_patches, valid = part.pad(patches)
    else:
        padded_patches = patches

    def pad(values: Tensor, fill: float = 0.0) -> Tensor:
        return part.pad(values, fill)[0]

    return Tokens(
        patches=padded_patches,
        patch_coord=pad(coord),
        patch_valid=valid,
        region_index=pad(region, fill=-1),
        box=pad(box),
        patch_size=patch_size,
        area=pad(part.area.to(patches.dtype)),
        **{name: pad(value) for name, value in per_region.items()},
    )
