"""The dHT embedder: token inputs -> a ViT's token sequence (docs/design.md, "dHT").

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
every position histogram one-hot, so `adaptok.embed.timm.dht_embedder_from_timm` reproduces
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

__all__ = ["DHTEmbedder", "EmbeddedTokens", "dht_embed"]


class EmbeddedTokens(NamedTuple):
    """A ViT's input sequence.

    Attributes:
        x: [B, prefix + T, D] prefix (cls) tokens, then one token per region; padding is zero.
        valid: [B, prefix + T] bool, False for padding (prefix tokens are always valid).
    """

    x: Tensor
    valid: Tensor


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

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay (timm's convention): the λ mix, the background
        token and the prefix tokens with their positions."""
        return {"mix_logit", "background", "prefix", "prefix_position"}

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
