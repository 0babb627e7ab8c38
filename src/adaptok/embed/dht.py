"""The dHT embedder: token inputs -> a ViT's token sequence (DESIGN.md 4.8-4.9).

Features of a region, with its resampled box x, soft mask M+ and M- = 1 - M+:

    (M+ + lambda M-) * x + (1 - lambda) M- * beta

lambda in (0, 1) is a learned mix (sigmoid of a logit, 0.01 at initialisation): how much of the
neighbours inside the box the token sees; beta [C, P, P] is a learned background. One linear map
over `[C*P*P | p*p | (P*P)]` (patch, position histogram, optional gradient histogram) makes the
token, so a pretrained ViT's patch-embedding weight fills the first C*P*P columns (channel-major,
timm's `patch_embed.proj.weight.flatten(1)`) and its position-embedding grid the next p*p columns
(`position_columns`). Prefix (cls) tokens come first, each with its own position vector; an
optional LayerNorm follows; padding tokens are zero and flagged invalid.

With the grid partition at the ViT's patch size and p = the ViT's grid, every mask is one and
every position histogram one-hot, so `load_timm_patch_embedding` makes this module reproduce
timm's `vit._pos_embed(vit.patch_embed(x))` exactly (to float rounding).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AdaptokError
from ..tokens import Tokens
from ..validate import check_int

__all__ = [
    "DHTEmbedder",
    "EmbeddedTokens",
    "dht_embed",
    "load_timm_patch_embedding",
    "position_columns",
    "timm_patch_embedding_state",
]


class EmbeddedTokens(NamedTuple):
    """A ViT's input sequence.

    Attributes:
        x: [B, prefix + T, D] prefix (cls) tokens, then one token per region; padding is zero.
        valid: [B, prefix + T] bool, False for padding (prefix tokens are always valid).
    """

    x: Tensor
    valid: Tensor


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


def dht_embed(
    tokens: Tokens,
    *,
    mix: Tensor,
    background: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    prefix: Tensor,
    prefix_position: Tensor,
    position_grid: int | None,
    gradient: bool,
    norm: nn.Module | None = None,
) -> EmbeddedTokens:
    """Embed token inputs (the pure function behind `DHTEmbedder`).

    Args:
        tokens: Tokens with patches [B, T, C*P*P], optional mask [B, T, P*P] (None = ones),
            position [B, T, p*p] (needed when position_grid is set), gradient [B, T, P*P]
            (needed when gradient is True).
        mix: scalar lambda in (0, 1).
        background: [C, P, P] background token beta.
        weight: [D, C*P*P + p*p + P*P] (the last two parts only when used).
        bias: [D] or None.
        prefix: [K, D] prefix (cls) tokens.
        prefix_position: [K, D] their position vectors.
        position_grid: p, or None for no position columns.
        gradient: whether the weight has gradient columns.
        norm: applied to every token (prefix included); None for none.

    Returns:
        EmbeddedTokens (x [B, K + T, D], valid [B, K + T]).
    """
    patches = tokens.patches
    batch, length, features = patches.shape
    channels, patch, _ = background.shape
    if patch != tokens.patch_size or features != channels * patch * patch:
        raise AdaptokError(
            f"tokens have patches of {features} values at patch_size {tokens.patch_size}; this "
            f"embedder expects C*P*P = {channels}*{patch}*{patch} = {channels * patch * patch}: "
            f"extract with patch_size={patch} from {channels}-channel images"
        )
    parts = []
    if tokens.mask is None:
        parts.append(patches)
    else:
        inside = tokens.mask.view(batch, length, 1, patch * patch)
        outside = 1 - inside
        pixels = patches.view(batch, length, channels, patch * patch)
        beta = background.reshape(1, 1, channels, patch * patch)
        mixed = (inside + mix * outside) * pixels + (1 - mix) * outside * beta
        parts.append(mixed.flatten(2))
    if position_grid is not None:
        expected = position_grid * position_grid
        if tokens.position is None or tokens.position.shape[-1] != expected:
            got = None if tokens.position is None else tokens.position.shape[-1]
            raise AdaptokError(
                f"this embedder needs position histograms of {expected} cells, tokens have {got}; "
                f"extract with extract_tokens(..., position_grid={position_grid})"
            )
        parts.append(tokens.position.to(patches.dtype))
    if gradient:
        if tokens.gradient is None or tokens.gradient.shape[-1] != patch * patch:
            raise AdaptokError(
                "this embedder needs gradient histograms of P*P bins; extract with "
                "extract_tokens(..., gradient=True) at the same patch_size"
            )
        parts.append(tokens.gradient.to(patches.dtype))
    inputs = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
    if inputs.shape[-1] != weight.shape[1]:
        raise AdaptokError(
            f"token features have {inputs.shape[-1]} values but the weight expects "
            f"{weight.shape[1]}"
        )
    x = F.linear(inputs, weight, bias)
    lead = (prefix + prefix_position)[None].expand(batch, -1, -1)
    x = torch.cat([lead.to(x.dtype), x], 1)
    if norm is not None:
        x = norm(x)
    valid = torch.cat([tokens.patch_valid.new_ones(batch, prefix.shape[0]), tokens.patch_valid], 1)
    return EmbeddedTokens(x * valid[..., None].to(x.dtype), valid)


class DHTEmbedder(nn.Module):
    """Learned region embedding: mask mix, background, one linear map, prefix tokens, norm.

    Args:
        in_chans: C of the images the tokens were extracted from.
        patch_size: P of the tokens.
        embed_dim: D.
        position_grid: p of the position histograms, None for no position columns.
        gradient: add P*P columns for the gradient-orientation histogram.
        num_prefix_tokens: number of cls-like tokens put first.
        norm: apply a LayerNorm to every token (turn off to reproduce a timm ViT's embedding).
        mix_init: initial lambda, in (0, 1).
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        patch_size: int = 16,
        embed_dim: int = 768,
        position_grid: int | None = 14,
        gradient: bool = False,
        num_prefix_tokens: int = 1,
        norm: bool = True,
        mix_init: float = 0.01,
    ) -> None:
        super().__init__()
        check_int("in_chans", in_chans)
        check_int("patch_size", patch_size)
        check_int("embed_dim", embed_dim)
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        if position_grid is not None:
            check_int("position_grid", position_grid, hint="or None")
        if not 0.0 < mix_init < 1.0:
            raise AdaptokError(f"mix_init must lie strictly between 0 and 1, got {mix_init!r}")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.position_grid = position_grid
        self.gradient = gradient
        self.num_prefix_tokens = num_prefix_tokens
        features = in_chans * patch_size * patch_size
        features += 0 if position_grid is None else position_grid * position_grid
        features += patch_size * patch_size if gradient else 0
        self.mix_logit = nn.Parameter(torch.tensor(math.log(mix_init / (1 - mix_init))))
        self.background = nn.Parameter(torch.zeros(in_chans, patch_size, patch_size))
        self.proj = nn.Linear(features, embed_dim)
        self.prefix = nn.Parameter(torch.zeros(num_prefix_tokens, embed_dim))
        self.prefix_position = nn.Parameter(torch.zeros(num_prefix_tokens, embed_dim))
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()
        nn.init.trunc_normal_(self.prefix, std=0.02)
        nn.init.trunc_normal_(self.prefix_position, std=0.02)

    @property
    def mix(self) -> Tensor:
        """lambda, the learned share of the box's other pixels a token sees, in (0, 1)."""
        return torch.sigmoid(self.mix_logit)

    @property
    def input_options(self) -> dict[str, int | bool | None]:
        """The `extract_tokens` options that make the Tokens this embedder reads:
        `adaptok.extract_tokens(images, part, **embedder.input_options)`."""
        return {
            "patch_size": self.patch_size,
            "position_grid": self.position_grid,
            "gradient": self.gradient,
        }

    @property
    def patch_columns(self) -> slice:
        """Columns of `proj.weight` that multiply the C*P*P patch values."""
        return slice(0, self.in_chans * self.patch_size * self.patch_size)

    @property
    def position_slice(self) -> slice:
        """Columns of `proj.weight` that multiply the p*p position histogram (empty if none)."""
        start = self.patch_columns.stop
        cells = 0 if self.position_grid is None else self.position_grid**2
        return slice(start, start + cells)

    def forward(self, tokens: Tokens) -> EmbeddedTokens:
        """Embed a padded batch of token inputs.

        Args:
            tokens: from `adaptok.extract_tokens(images, part, patch_size=P, position_grid=p,
                gradient=...)`.

        Returns:
            EmbeddedTokens (x [B, prefix + T, D], valid [B, prefix + T] bool).
        """
        return dht_embed(
            tokens,
            mix=self.mix,
            background=self.background,
            weight=self.proj.weight,
            bias=self.proj.bias,
            prefix=self.prefix,
            prefix_position=self.prefix_position,
            position_grid=self.position_grid,
            gradient=self.gradient,
            norm=self.norm,
        )

    @classmethod
    def from_timm(
        cls, vit: nn.Module, *, position_grid: int | None = None, gradient: bool = False
    ) -> DHTEmbedder:
        """An embedder initialised from a timm VisionTransformer's patch and position embedding.

        Args:
            vit: a timm `VisionTransformer` (conv patch embedding, absolute position embedding).
            position_grid: p; None uses the ViT's own patch grid (so grid tokens reproduce it).
            gradient: add gradient columns (initialised to zero, so the output is unchanged).

        Returns:
            A DHTEmbedder without LayerNorm whose output on grid tokens equals
            `vit._pos_embed(vit.patch_embed(x))`.
        """
        patch_embed = vit.patch_embed
        weight = patch_embed.proj.weight
        if position_grid is None:
            position_grid = int(patch_embed.grid_size[0])
        embedder = cls(
            in_chans=weight.shape[1],
            patch_size=weight.shape[2],
            embed_dim=weight.shape[0],
            position_grid=position_grid,
            gradient=gradient,
            num_prefix_tokens=int(vit.num_prefix_tokens),
            norm=False,
        )
        load_timm_patch_embedding(embedder, vit)
        return embedder.to(weight.device, weight.dtype)


def timm_patch_embedding_state(embedder: DHTEmbedder, vit: nn.Module) -> dict[str, Tensor]:
    """Remap a timm ViT's patch embedding, position embedding and prefix tokens to the embedder.

    `proj.weight` = [patch_embed.proj.weight.flatten(1) | position_columns(pos grid, p) |
    zeros for gradient columns], `proj.bias` = patch_embed.proj.bias, prefix = [cls_token,
    reg_token], prefix_position = the prefix entries of pos_embed (zero for ViTs whose
    position embedding skips the prefix, `no_embed_class`). lambda and beta keep the embedder's
    values (they only act on masked tokens, which a grid never has).

    Raises:
        AdaptokError: when the ViT's layout does not match the embedder (the message says which).
    """
    patch_embed = getattr(vit, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise AdaptokError(
            f"expected a timm VisionTransformer with a Conv2d patch embedding, got "
            f"{type(vit).__name__}"
        )
    if not isinstance(getattr(patch_embed, "norm", nn.Identity()), nn.Identity):
        raise AdaptokError("ViTs with a norm inside the patch embedding are not supported")
    if tuple(proj.kernel_size) != tuple(proj.stride) or proj.kernel_size[0] != proj.kernel_size[1]:
        raise AdaptokError(
            f"patch embedding must be non-overlapping square patches, got kernel "
            f"{tuple(proj.kernel_size)} stride {tuple(proj.stride)}"
        )
    out_dim, channels, patch, _ = proj.weight.shape
    expected = (embedder.embed_dim, embedder.in_chans, embedder.patch_size)
    if (out_dim, channels, patch) != expected:
        raise AdaptokError(
            f"ViT has embed_dim, in_chans, patch_size = {(out_dim, channels, patch)} but the "
            f"embedder has {expected}; build it with DHTEmbedder.from_timm(vit)"
        )
    prefix_count = int(getattr(vit, "num_prefix_tokens", 0))
    if prefix_count != embedder.num_prefix_tokens:
        raise AdaptokError(
            f"ViT has {prefix_count} prefix tokens, the embedder {embedder.num_prefix_tokens}"
        )
    if not isinstance(embedder.norm, nn.Identity):
        raise AdaptokError(
            "the embedder has a LayerNorm that a timm ViT's embedding lacks; build it with "
            "norm=False"
        )
    pos_embed = getattr(vit, "pos_embed", None)
    no_embed_class = bool(getattr(vit, "no_embed_class", False))
    columns = [proj.weight.detach().flatten(1)]
    prefix_position = proj.weight.new_zeros(prefix_count, out_dim)
    if embedder.position_grid is not None:
        if pos_embed is None:
            raise AdaptokError(
                "the ViT has no absolute position embedding; build the embedder with "
                "position_grid=None"
            )
        skip = 0 if no_embed_class else prefix_count
        grid = pos_embed.detach()[0, skip:]
        height, width = (int(s) for s in patch_embed.grid_size)
        columns.append(position_columns(grid.reshape(height, width, -1), embedder.position_grid))
        if not no_embed_class:
            prefix_position = pos_embed.detach()[0, :prefix_count]
    if embedder.gradient:
        columns.append(proj.weight.new_zeros(out_dim, patch * patch))
    prefix = [
        token.detach()[0]
        for token in (getattr(vit, "cls_token", None), getattr(vit, "reg_token", None))
        if token is not None
    ]
    prefix_tokens = torch.cat(prefix) if prefix else proj.weight.new_zeros(0, out_dim)
    bias = proj.bias.detach() if proj.bias is not None else proj.weight.new_zeros(out_dim)
    state = dict(embedder.state_dict())
    state.update(
        {
            "proj.weight": torch.cat(columns, 1),
            "proj.bias": bias,
            "prefix": prefix_tokens,
            "prefix_position": prefix_position,
        }
    )
    return state


def load_timm_patch_embedding(embedder: DHTEmbedder, vit: nn.Module) -> DHTEmbedder:
    """Load a timm ViT's patch/position embedding and prefix tokens into `embedder` (strict).

    See `timm_patch_embedding_state` for the mapping. Returns the embedder.
    """
    state = timm_patch_embedding_state(embedder, vit)
    embedder.load_state_dict(state, strict=True)
    return embedder
