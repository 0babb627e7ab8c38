"""Heads over encoded tokens: image classification (cls token or mean of tokens) and dense
prediction (one logit vector per token, spread back to the pixels of its region)."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import AdaptokError
from ..regions import Partition
from ..tokens import Tokens

__all__ = ["ClassificationHead", "DenseHead", "region_logits"]


class ClassificationHead(nn.Module):
    """Pool the encoded tokens to one vector per image and classify it.

    Args:
        embed_dim: token width D.
        num_classes: K.
        pool: "token" (the first prefix token, the cls token) or "avg" (mean of the valid
            non-prefix tokens).
        num_prefix_tokens: how many leading tokens are cls/register tokens.
        fc_norm: LayerNorm after pooling (timm's `fc_norm`, used with "avg" pooling).
        norm_eps: epsilon of that LayerNorm.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_classes: int,
        pool: str = "token",
        num_prefix_tokens: int = 1,
        fc_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if pool not in ("token", "avg"):
            raise AdaptokError(f"unknown pool {pool!r}; known: 'token', 'avg'")
        if pool == "token" and num_prefix_tokens < 1:
            raise AdaptokError("pool='token' needs a cls token (num_prefix_tokens >= 1)")
        if num_classes < 1:
            raise AdaptokError(f"num_classes must be positive, got {num_classes}")
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """Args:
            x: [B, prefix+T, D] encoded tokens.
            valid: [B, prefix+T] bool.

        Returns:
            [B, K] logits.
        """
        if self.pool == "token":
            pooled = x[:, 0]
        else:
            weight = valid[:, self.num_prefix_tokens :, None].to(x.dtype)
            tokens = x[:, self.num_prefix_tokens :]
            pooled = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1)
        return self.fc(self.fc_norm(pooled))


def region_logits(token_logits: Tensor, tokens: Tokens, num_regions: int) -> Tensor:
    """Gather per-token values into region order.

    Args:
        token_logits: [B, T, K] one vector per (non-prefix) token.
        tokens: the Tokens the model consumed (gives region_index and patch_valid).
        num_regions: N, regions in the Partition.

    Returns:
        [N, K] the vector of every region of the Partition.
    """
    valid = tokens.patch_valid
    values = token_logits[valid]
    out = token_logits.new_zeros(num_regions, token_logits.shape[-1])
    return out.index_copy(0, tokens.region_index[valid], values)


class DenseHead(nn.Module):
    """Per-token logits spread to pixels through the Partition (every pixel takes its region's).

    Args:
        embed_dim: token width D.
        num_classes: K.
        num_prefix_tokens: leading cls/register tokens to skip.
    """

    def __init__(self, *, embed_dim: int, num_classes: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if num_classes < 1:
            raise AdaptokError(f"num_classes must be positive, got {num_classes}")
        self.num_prefix_tokens = num_prefix_tokens
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor, tokens: Tokens, partition: Partition) -> Tensor:
        """Args:
            x: [B, prefix+T, D] encoded tokens.
            tokens: the Tokens of the batch (region_index, patch_valid: [B, T]).
            partition: the Partition the tokens come from.

        Returns:
            [B, K, H, W] per-pixel logits.
        """
        logits = self.fc(x[:, self.num_prefix_tokens :])
        per_region = region_logits(logits, tokens, partition.num_regions)
        return partition.scatter(per_region)
