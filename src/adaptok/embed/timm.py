"""The one remap of a timm ViT's embedding into adaptok's embedders.

`read_timm_embedding` reads what every embedder needs from a timm `VisionTransformer`, handling
timm's variants in one place: cls and register (prefix) tokens, `no_embed_class` models whose
position table skips the prefix, the patch position grid, the patch-embedding norm. The two
state builders lay those tensors out for `PatchEmbedder` and `DHTEmbedder` (loaded with
strict=True); on grid tokens at the ViT's patch size both then reproduce
`vit._pos_embed(vit.patch_embed(x))`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AdaptokError
from ..validate import check_int

if TYPE_CHECKING:
    from .dht import DHTEmbedder

__all__ = [
    "TimmEmbedding",
    "dht_embedder_from_timm",
    "dht_embedder_state",
    "patch_embedder_state",
    "position_columns",
    "read_timm_embedding",
]


class TimmEmbedding(NamedTuple):
    """A timm ViT's token embedding, in adaptok's layout.

    Attributes:
        weight: [D, C*P*P] the patch projection, flattened channel-major.
        bias: [D] its bias (zeros when the ViT has none).
        position: [gh, gw, D] the patch position grid, or None without an absolute table.
        prefix: [prefix, D] the cls and register tokens (prefix may be 0).
        prefix_position: [prefix, D] their position embedding (zeros for `no_embed_class`).
        norm: the patch embedding's norm module (nn.Identity for most ViTs).
        patch_size: P.
    """

    weight: Tensor
    bias: Tensor
    position: Tensor | None
    prefix: Tensor
    prefix_position: Tensor
    norm: nn.Module
    patch_size: int


def read_timm_embedding(vit: nn.Module) -> TimmEmbedding:
    """Read a timm VisionTransformer's patch embedding, position table and prefix tokens.

    Raises:
        AdaptokError: not a ViT with a non-overlapping square Conv2d patch embedding.
    """
    patch_embed = getattr(vit, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise AdaptokError(
            f"expected a timm VisionTransformer with a Conv2d patch embedding, got "
            f"{type(vit).__name__}"
        )
    if tuple(proj.kernel_size) != tuple(proj.stride) or proj.kernel_size[0] != proj.kernel_size[1]:
        raise AdaptokError(
            f"patch embedding must be non-overlapping square patches, got kernel "
            f"{tuple(proj.kernel_size)} stride {tuple(proj.stride)}"
        )
    weight = proj.weight.detach()
    dim = weight.shape[0]
    prefix_count = int(getattr(vit, "num_prefix_tokens", 0))
    no_embed_class = bool(getattr(vit, "no_embed_class", False))
    pos_embed = getattr(vit, "pos_embed", None)
    position = None
    prefix_position = weight.new_zeros(prefix_count, dim)
    if pos_embed is not None:
        table = pos_embed.detach()[0]
        skip = 0 if no_embed_class else prefix_count
        rows, cols = (int(s) for s in patch_embed.grid_size)
        position = table[skip:].reshape(rows, cols, dim)
        if not no_embed_class:
            prefix_position = table[:prefix_count]
    tokens = [
        token.detach()[0]
        for token in (getattr(vit, "cls_token", None), getattr(vit, "reg_token", None))
        if token is not None
    ]
    prefix = torch.cat(tokens) if tokens else weight.new_zeros(0, dim)
    if prefix.shape[0] != prefix_count:
        raise AdaptokError(
            f"the ViT declares {prefix_count} prefix tokens but holds {prefix.shape[0]}"
        )
    return TimmEmbedding(
        weight=weight.flatten(1),
        bias=proj.bias.detach() if proj.bias is not None else weight.new_zeros(dim),
        position=position,
        prefix=prefix,
        prefix_position=prefix_position,
        norm=getattr(patch_embed, "norm", nn.Identity()),
        patch_size=int(proj.kernel_size[0]),
    )


def patch_embedder_state(vit: nn.Module) -> dict[str, Tensor]:
    """A timm ViT's embedding as a `PatchEmbedder` state dict.

    Build the embedder with position="learned", position_grid=vit.patch_embed.grid_size,
    num_prefix_tokens=vit.num_prefix_tokens (and norm_layer matching vit.patch_embed.norm),
    then `embedder.load_state_dict(patch_embedder_state(vit), strict=True)`.
    """
    embedding = read_timm_embedding(vit)
    if embedding.position is None:
        raise AdaptokError("the ViT has no absolute position embedding to remap")
    state = {
        "proj.weight": embedding.weight,
        "proj.bias": embedding.bias,
        "pos_embed": embedding.position.flatten(0, 1)[None],
    }
    if embedding.prefix.shape[0]:
        # timm adds the prefix's own position once, a constant: fold it into the tokens.
        state["prefix_tokens"] = (embedding.prefix + embedding.prefix_position)[None]
    for name, value in embedding.norm.state_dict().items():
        state[f"norm.{name}"] = value
    return state


def position_columns(pos_embed_grid: Tensor, grid: int) -> Tensor:
    """A ViT's position-embedding grid as the p*p position columns of the embedding matrix.

    Resized bicubically when p differs from the ViT's grid, exactly as timm's
    `resample_abs_pos_embed` does (align_corners=False, antialias=True), so a model retrofitted
    here matches one resized by timm.

    Args:
        pos_embed_grid: the patch position embeddings without prefix tokens: [g*g, D] or
            [1, g*g, D] (timm's layout, square grid) or [gh, gw, D].
        grid: p, the position-histogram grid.

    Returns:
        [D, p*p] columns, cell (r, c) in column r * p + c.
    """
    check_int("grid", grid)
    table = pos_embed_grid
    if table.ndim == 3 and table.shape[0] == 1:
        table = table[0]
    if table.ndim == 2:
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0]:
            raise AdaptokError(
                f"pos_embed_grid of shape {tuple(pos_embed_grid.shape)} has {table.shape[0]} "
                "entries, not a square grid; drop the prefix (cls) entries first "
                "(pos_embed[:, num_prefix_tokens:]) or pass it as [gh, gw, D]"
            )
        table = table.reshape(side, side, -1)
    if table.ndim != 3:
        raise AdaptokError(
            f"pos_embed_grid must be [g*g, D], [1, g*g, D] or [gh, gw, D], "
            f"got {tuple(pos_embed_grid.shape)}"
        )
    image = table.permute(2, 0, 1)[None]  # [1, D, gh, gw]
    if image.shape[-2:] != (grid, grid):
        dtype = image.dtype
        image = F.interpolate(
            image.float(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=True
        ).to(dtype)
    return image[0].flatten(1)


def dht_embedder_state(embedder: DHTEmbedder, vit: nn.Module) -> dict[str, Tensor]:
    """A timm ViT's embedding as a `DHTEmbedder` state dict.

    `proj.weight` = [patch columns | position_columns(position grid, p) | zeros for gradient
    columns], `proj.bias` = the ViT's bias, prefix = [cls_token, reg_token], prefix_position = the
    prefix entries of pos_embed. lambda and beta keep the embedder's values (they act only on
    masked tokens, which a grid never has).

    Raises:
        AdaptokError: when the ViT's layout does not match the embedder (the message says which).
    """
    embedding = read_timm_embedding(vit)
    if not isinstance(embedding.norm, nn.Identity):
        raise AdaptokError("ViTs with a norm inside the patch embedding are not supported")
    dim = embedding.weight.shape[0]
    channels = embedding.weight.shape[1] // embedding.patch_size**2
    found = (dim, channels, embedding.patch_size)
    expected = (embedder.embed_dim, embedder.in_chans, embedder.patch_size)
    if found != expected:
        raise AdaptokError(
            f"ViT has embed_dim, in_chans, patch_size = {found} but the embedder has "
            f"{expected}; build it with dht_embedder_from_timm(vit)"
        )
    if embedding.prefix.shape[0] != embedder.num_prefix_tokens:
        raise AdaptokError(
            f"ViT has {embedding.prefix.shape[0]} prefix tokens, the embedder "
            f"{embedder.num_prefix_tokens}"
        )
    if not isinstance(embedder.norm, nn.Identity):
        raise AdaptokError(
            "the embedder has a LayerNorm that a timm ViT's embedding lacks; build it with "
            "norm=False"
        )
    columns = [embedding.weight]
    prefix_position = embedding.prefix_position
    if embedder.position_grid is not None:
        if embedding.position is None:
            raise AdaptokError(
                "the ViT has no absolute position embedding; build the embedder with "
                "position_grid=None"
            )
        columns.append(position_columns(embedding.position, embedder.position_grid))
    else:
        prefix_position = torch.zeros_like(prefix_position)
    if embedder.gradient:
        columns.append(embedding.weight.new_zeros(dim, embedding.patch_size**2))
    state = dict(embedder.state_dict())
    state.update(
        {
            "proj.weight": torch.cat(columns, 1),
            "proj.bias": embedding.bias,
            "prefix": embedding.prefix,
            "prefix_position": prefix_position,
        }
    )
    return state


def dht_embedder_from_timm(
    vit: nn.Module, *, position_grid: int | None = None, gradient: bool = False
) -> DHTEmbedder:
    """A DHTEmbedder initialised from a timm ViT's patch and position embedding.

    Args:
        vit: a timm `VisionTransformer` (conv patch embedding, absolute position embedding).
        position_grid: p; None uses the ViT's own patch grid (so grid tokens reproduce it).
        gradient: add gradient columns (initialised to zero, so the output is unchanged).

    Returns:
        A DHTEmbedder without LayerNorm whose output on grid tokens equals
        `vit._pos_embed(vit.patch_embed(x))`.
    """
    from .dht import DHTEmbedder

    embedding = read_timm_embedding(vit)
    if position_grid is None:
        position_grid = int(vit.patch_embed.grid_size[0])
    embedder = DHTEmbedder(
        in_chans=embedding.weight.shape[1] // embedding.patch_size**2,
        patch_size=embedding.patch_size,
        embed_dim=embedding.weight.shape[0],
        position_grid=position_grid,
        gradient=gradient,
        num_prefix_tokens=embedding.prefix.shape[0],
        norm=False,
    )
    embedder.load_state_dict(dht_embedder_state(embedder, vit), strict=True)
    return embedder.to(embedding.weight.device, embedding.weight.dtype)
