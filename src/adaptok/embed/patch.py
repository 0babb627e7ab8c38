"""ViT patch embedding for square tokens (grid, quadtree): `PatchEmbedder`, `embed_patches`.

Interface (consumed by `adaptok.models`):

    embedder = PatchEmbedder(patch_size=16, in_chans=3, embed_dim=192, num_prefix_tokens=1,
                             position="sincos" | "learned" | "none", position_grid=(14, 14))
    x, valid = embedder(tokens)     # tokens: adaptok.Tokens from extract_tokens(images, part, P)
    # x: [B, prefix + T, D] prefix tokens first, then one embedding per token (zeros at padding)
    # valid: [B, prefix + T] bool, True for the prefix tokens and the real tokens

Parameters are laid out like a timm ViT's, so pretrained weights map over without reshaping
(`timm_vit_state` does it, to be loaded with strict=True):

* `proj`: nn.Linear with weight [D, C*P*P] = timm `patch_embed.proj.weight.flatten(1)` (the patches
  of `Tokens` are flattened channel-major, the layout of that conv weight), bias = timm's bias;
* `norm`: timm's `patch_embed.norm` (applied after the projection, before positions);
* `prefix_tokens`: [1, prefix, D], the cls (and register) tokens with their own position
  embedding already added (timm adds `pos_embed[:, :prefix]` to them, a constant);
* `pos_embed` ("learned" only): [1, gh*gw, D], timm's patch position grid. It is sampled bilinearly
  at every token's centre (in units of P), so a grid patch (centre i + 0.5, j + 0.5) reads cell
  (i, j) exactly and a big quadtree patch reads the mean of the cells it covers (for 2P) or a blend.
  Centres beyond the grid would read its border, so `AdaptiveViT` refuses images larger than the
  grid covers (`max_image_size`; resample the grid, e.g. with timm's `resample_abs_pos_embed`,
  for images of another size).

"sincos" uses `adaptok.ops.sincos_2d` of the centre (docs/design.md, "Quadtree"); no parameters.
"histogram" reads each token's position histogram over the same grid (`Tokens.position`) and
takes that mix of the table: for pooled tokens (`extract_tokens(..., pooled=True)`) the mean of
the positions of the patches the token pools, one cell exactly for a grid patch.

`shape_branch=True` adds a zero-initialised residual `shape_proj` of four box descriptors
(log2 of height / P, width / P, area / P^2 and area / box area, all zero for a P x P patch, and
no bias), so a retrofit starts as the ViT, grid tokens stay exact after any training, and
fine-tuning can learn what pooling loses about a region's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AdaptokError
from ..ops import sincos_2d
from ..tokens import Tokens
from ..validate import check_choice, check_int

__all__ = ["PatchEmbedder", "embed_patches", "sample_position_grid", "shape_features"]

Position = Literal["sincos", "learned", "histogram", "none"]
POSITIONS = ("sincos", "learned", "histogram", "none")
SHAPE_FEATURES = 4


def sample_position_grid(
    pos_embed: Tensor, position_grid: tuple[int, int], coords: Tensor
) -> Tensor:
    """Bilinearly sample a learned position grid at fractional token centres.

    Args:
        pos_embed: [1, gh*gw, D] (or [gh*gw, D]) grid, row-major like timm's pos_embed.
        position_grid: (gh, gw).
        coords: [..., 2] (y, x) centres in units of P: cell (i, j) has centre (i + 0.5, j + 0.5).

    Returns:
        [..., D] position embeddings; a centre on a cell centre returns that cell exactly, and
        centres outside the grid are clamped to its border.
    """
    rows, cols = position_grid
    table = pos_embed.reshape(rows * cols, -1)
    y = (coords[..., 0] - 0.5).clamp(0, rows - 1)
    x = (coords[..., 1] - 0.5).clamp(0, cols - 1)
    y0, x0 = y.floor(), x.floor()
    wy, wx = (y - y0)[..., None].to(table.dtype), (x - x0)[..., None].to(table.dtype)
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp(max=rows - 1), (x0 + 1).clamp(max=cols - 1)
    top = table[y0 * cols + x0] * (1 - wx) + table[y0 * cols + x1] * wx
    bottom = table[y1 * cols + x0] * (1 - wx) + table[y1 * cols + x1] * wx
    return top * (1 - wy) + bottom * wy


def shape_features(tokens: Tokens) -> Tensor:
    """[B, T, 4] box descriptors of every token: log2 of its box height / P, width / P, area /
    P^2 and area / box area. All zero for a P x P patch (and for padding).

    Raises:
        AdaptokError: Tokens built by hand without `area`.
    """
    if tokens.area is None:
        raise AdaptokError("shape features need Tokens.area; build tokens with extract_tokens")
    box = tokens.box.to(tokens.patches.dtype)
    height = (box[..., 2] - box[..., 0]).clamp(min=1)
    width = (box[..., 3] - box[..., 1]).clamp(min=1)
    area = tokens.area.to(box.dtype).clamp(min=1)
    side = float(tokens.patch_size)
    features = torch.stack(
        [height / side, width / side, area / (side * side), area / (height * width)], -1
    ).log2()
    return torch.where(tokens.patch_valid[..., None], features, 0.0)


def embed_patches(
    tokens: Tokens,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    prefix: Tensor | None = None,
    position: Position = "sincos",
    pos_embed: Tensor | None = None,
    position_grid: tuple[int, int] | None = None,
    norm: Callable[[Tensor], Tensor] | None = None,
    shape_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Embed square tokens like a ViT: project, add positions, prepend prefix tokens.

    Args:
        tokens: Tokens with patches [B, T, C*P*P] (channel-major) and patch_coord [B, T, 2].
        weight: [D, C*P*P] projection (timm `patch_embed.proj.weight.flatten(1)`).
        bias: [D] or None.
        prefix: [1, prefix, D] tokens prepended to every image (cls, registers), or None.
        position: "sincos" (2-D sinusoids of the centre), "learned" (sample `pos_embed`),
            "histogram" (`tokens.position` times `pos_embed`) or "none".
        pos_embed: [1, gh*gw, D] learned grid, for position="learned" or "histogram".
        position_grid: (gh, gw) of pos_embed.
        norm: applied to the projected tokens before positions are added (timm's patch norm).
        shape_weight: [D, 4] projection of `shape_features`, added to every token (None: none).

    Returns:
        (x [B, prefix + T, D], valid [B, prefix + T] bool); padding rows of x are zero.
    """
    if position not in POSITIONS:
        raise AdaptokError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    patches = tokens.patches
    if patches.shape[-1] != weight.shape[1]:
        raise AdaptokError(
            f"tokens have {patches.shape[-1]} values per patch but the projection expects "
            f"{weight.shape[1]} (C*P*P); build the tokens with the embedder's patch_size"
        )
    x = F.linear(patches.to(weight.dtype), weight, bias)
    if norm is not None:
        x = norm(x)
    if position == "sincos":
        x = x + sincos_2d(tokens.patch_coord.to(x.dtype), x.shape[-1])
    elif position == "learned":
        if pos_embed is None or position_grid is None:
            raise AdaptokError("position='learned' needs pos_embed and position_grid")
        x = x + sample_position_grid(pos_embed, position_grid, tokens.patch_coord)
    elif position == "histogram":
        if pos_embed is None or position_grid is None:
            raise AdaptokError("position='histogram' needs pos_embed and position_grid")
        cells = position_grid[0] * position_grid[1]
        if tokens.position is None or tokens.position.shape[-1] != cells:
            got = None if tokens.position is None else tokens.position.shape[-1]
            raise AdaptokError(
                f"position='histogram' reads histograms over the {position_grid[0]}x"
                f"{position_grid[1]} patch grid ({cells} cells), tokens have {got}: extract "
                "with extract_tokens(..., pooled=True) from images of exactly that many patches"
            )
        x = x + tokens.position.to(x.dtype) @ pos_embed.reshape(cells, -1).to(x.dtype)
    if shape_weight is not None:
        x = x + F.linear(shape_features(tokens).to(x.dtype), shape_weight)
    valid = tokens.patch_valid
    x = torch.where(valid[..., None], x, 0.0)
    if prefix is not None and prefix.shape[1]:
        batch = x.shape[0]
        x = torch.cat([prefix.to(x.dtype).expand(batch, -1, -1), x], 1)
        valid = torch.cat([valid.new_ones(batch, prefix.shape[1]), valid], 1)
    return x, valid


class PatchEmbedder(nn.Module):
    """Patch embedding for grid and quadtree tokens, laid out like a timm ViT's (see module doc).

    Args:
        patch_size: P, the side of every (resampled) token.
        in_chans: C.
        embed_dim: D.
        num_prefix_tokens: learned tokens prepended to every image (1 = cls; 0 = none).
        position: "sincos", "learned", "histogram" (both need position_grid) or "none".
        position_grid: (gh, gw) (or one int for a square) of the learned position grid; the model's
            image size / P. Ignored for "sincos" and "none".
        norm_layer: e.g. nn.LayerNorm, built as norm_layer(D) and applied after the projection.
        shape_branch: add the zero-initialised `shape_proj` of `shape_features` (module doc).
    """

    def __init__(
        self,
        *,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_prefix_tokens: int = 1,
        position: Position = "sincos",
        position_grid: int | tuple[int, int] | None = None,
        norm_layer: Callable[[int], nn.Module] | None = None,
        shape_branch: bool = False,
    ) -> None:
        super().__init__()
        check_int("patch_size", patch_size)
        check_int("in_chans", in_chans)
        check_int("embed_dim", embed_dim)
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        check_choice("position", position, POSITIONS)
        if position == "sincos" and embed_dim % 4:
            raise AdaptokError(f"position='sincos' needs embed_dim divisible by 4, got {embed_dim}")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.position = position
        self.proj = nn.Linear(in_chans * patch_size * patch_size, embed_dim)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()
        self.prefix_tokens = (
            nn.Parameter(torch.randn(1, num_prefix_tokens, embed_dim) * 1e-6)
            if num_prefix_tokens
            else None
        )
        self.shape_proj = nn.Linear(SHAPE_FEATURES, embed_dim, bias=False) if shape_branch else None
        if self.shape_proj is not None:
            nn.init.zeros_(self.shape_proj.weight)
        self.position_grid: tuple[int, int] | None = None
        self.pos_embed: nn.Parameter | None = None
        if position in ("learned", "histogram"):
            if position_grid is None:
                raise AdaptokError(
                    f"position={position!r} needs position_grid (image size / patch_size, e.g. 14 "
                    "for a 224 ViT with 16-pixel patches)"
                )
            if isinstance(position_grid, int):
                position_grid = (position_grid, position_grid)
            rows, cols = position_grid
            self.position_grid = (int(rows), int(cols))
            self.pos_embed = nn.Parameter(torch.randn(1, rows * cols, embed_dim) * 0.02)

    @property
    def max_image_size(self) -> tuple[int, int] | None:
        """(H, W) the learned position table covers (larger images would read its border
        for every token beyond it); None for positions that take any size."""
        if self.position not in ("learned", "histogram") or self.position_grid is None:
            return None
        rows, cols = self.position_grid
        return rows * self.patch_size, cols * self.patch_size

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay (timm's convention): the prefix tokens and the
        learned position table."""
        return {name for name in ("prefix_tokens", "pos_embed") if getattr(self, name) is not None}

    def forward(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        """Tokens -> (x [B, prefix + T, D], valid [B, prefix + T] bool)."""
        if tokens.patch_size != self.patch_size:
            raise AdaptokError(
                f"tokens were resampled to {tokens.patch_size} pixels but the embedder expects "
                f"patch_size={self.patch_size}; call extract_tokens(..., patch_size="
                f"{self.patch_size})"
            )
        return embed_patches(
            tokens,
            self.proj.weight,
            self.proj.bias,
            prefix=self.prefix_tokens,
            position=self.position,
            pos_embed=self.pos_embed,
            position_grid=self.position_grid,
            norm=None if isinstance(self.norm, nn.Identity) else self.norm,
            shape_weight=None if self.shape_proj is None else self.shape_proj.weight,
        )

    def extra_repr(self) -> str:
        return (
            f"patch_size={self.patch_size}, in_chans={self.in_chans}, "
            f"embed_dim={self.embed_dim}, num_prefix_tokens={self.num_prefix_tokens}, "
            f"position={self.position!r}, position_grid={self.position_grid}, "
            f"shape_branch={self.shape_proj is not None}"
        )
