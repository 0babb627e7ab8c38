"""A ViT encoder over padded token batches: timm `Block`s driven with a key-padding mask.

The blocks are timm's own (`timm.models.vision_transformer.Block`); their attention runs PyTorch
scaled-dot-product attention with the boolean mask `[B, 1, 1, T]` built from the validity mask,
so padding tokens are never attended to and a padded batch gives every image exactly the result
it would get alone. Size-aware attention passes an additive float mask instead: log(area / P^2)
on every real key, -inf on padding (docs/design.md, "Retrofitting").
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import get_act_layer
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..errors import AdaptokError
from .config import EncoderConfig

__all__ = ["MaskedEncoder", "key_padding_mask", "token_size_bias"]


def token_size_bias(area: Tensor, patch_size: int, valid: Tensor, num_prefix_tokens: int) -> Tensor:
    """Size-aware attention's key bias: log(area / P^2) per token, 0 for prefix tokens and padding.

    Args:
        area: [B, T] pixels of each (non-prefix) token.
        patch_size: P.
        valid: [B, T] bool, False for padding.
        num_prefix_tokens: prefix tokens (one patch each) put in front.

    Returns:
        [B, num_prefix_tokens + T] float.
    """
    size = area.clamp(min=1).to(torch.float32) / float(patch_size * patch_size)
    bias = torch.where(valid, size.log(), 0.0)
    return torch.nn.functional.pad(bias, (num_prefix_tokens, 0))


def key_padding_mask(valid: Tensor) -> Tensor:
    """[B, T] bool validity -> [B, 1, 1, T] bool attention mask (True: may be attended to)."""
    return valid[:, None, None, :]


class MaskedEncoder(nn.Module):
    """Transformer trunk over a padded token batch.

    Args:
        config: the trunk's hyper-parameters.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.embed_dim % config.num_heads:
            raise AdaptokError(
                f"embed_dim {config.embed_dim} is not divisible by num_heads {config.num_heads}; "
                "choose num_heads among the divisors of embed_dim"
            )
        if config.depth < 1:
            raise AdaptokError(f"depth must be at least 1, got {config.depth}")
        self.config = config
        norm_layer = partial(nn.LayerNorm, eps=config.norm_eps)
        act_layer = get_act_layer(config.act_layer)
        rates = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.norm_pre = norm_layer(config.embed_dim) if config.pre_norm else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                Block(
                    dim=config.embed_dim,
                    num_heads=config.num_heads,
                    mlp_ratio=config.mlp_ratio,
                    qkv_bias=config.qkv_bias,
                    qk_norm=config.qk_norm,
                    init_values=config.init_values,
                    drop_path=rate,
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                )
                for rate in rates
            ]
        )
        self.norm = norm_layer(config.embed_dim) if config.final_norm else nn.Identity()

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(
        self, x: Tensor, valid: Tensor | None = None, key_bias: Tensor | None = None
    ) -> Tensor:
        """Run the blocks and the final norm.

        Args:
            x: [B, T, D] token embeddings (prefix tokens included).
            valid: [B, T] bool, False for padding (None: every token is real).
            key_bias: [B, T] float added to every query's attention logit for each key, in every
                block (size-aware attention: `token_size_bias`); None or all zero: none.

        Returns:
            [B, T, D] encoded tokens; rows of padding tokens hold finite values that no real
            token has seen (ignore them).
        """
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise AdaptokError(
                f"encoder input must be [B, T, embed_dim={self.embed_dim}], got {tuple(x.shape)}"
            )
        mask = None
        if valid is not None:
            if valid.shape != x.shape[:2] or valid.dtype != torch.bool:
                raise AdaptokError(
                    f"valid must be a [B, T] = {tuple(x.shape[:2])} bool tensor, "
                    f"got {tuple(valid.shape)} {valid.dtype}"
                )
            # A full batch takes the unmasked (fastest) SDPA kernel.
            if not bool(valid.all()):
                mask = key_padding_mask(valid)
        if key_bias is not None:
            if key_bias.shape != x.shape[:2]:
                raise AdaptokError(
                    f"key_bias must be [B, T] = {tuple(x.shape[:2])}, got {tuple(key_bias.shape)}"
                )
            if bool(key_bias.any()):
                # An additive float mask: the bias on real keys, -inf on padding.
                bias = key_bias.to(x.dtype)
                if valid is not None:
                    bias = bias.masked_fill(~valid, float("-inf"))
                mask = bias[:, None, None, :]
        x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        return self.norm(x)
