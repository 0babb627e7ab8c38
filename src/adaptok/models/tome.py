"""Token merging (ToMe; Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023) on a timm
ViT: the training-free baseline adaptive tokens are measured against.

ToMe keeps the ViT's grid tokenizer and shrinks the sequence inside the trunk instead. In every
block, between the attention and the MLP branch, it merges the r most similar pairs of image
tokens:

1. Bipartite soft matching on the attention keys (averaged over heads): the image tokens are
   dealt alternately into sets A (even positions) and B (odd positions); each A token finds its
   most cosine-similar B token; the r A tokens with the most similar matches are averaged into
   them. Prefix tokens (class token, registers) are never merged.
2. Merging is a size-weighted mean, and each token's size (how many patches it stands for) is
   carried along.
3. Proportional attention: log(size) is added to the attention logit of every key, so a token
   standing for k patches receives the attention the k patches would have. It is exactly zero
   until something has merged, so r = 0 is the unmodified ViT.

The block forward below is written from the timm Block's parts (norm1, attn.qkv, q_norm, k_norm,
attn.proj, ls1, norm2, mlp, ls2, drop paths); the timm model is neither modified nor patched.
"avg" pooling weighs each token by its size, so it stays the mean over patches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..errors import AdaptokError

__all__ = ["MergedTokens", "merge_schedule", "merge_tokens", "tome_features", "tome_forward"]


class MergedTokens(NamedTuple):
    """A token sequence after merging.

    Attributes:
        x: [B, prefix+T, D] tokens (prefix tokens first).
        size: [B, prefix+T] float, the patches each token stands for (1 for prefix tokens); the
            image tokens' sizes sum to the number of patches.
    """

    x: Tensor
    size: Tensor


def merge_schedule(
    num_patches: int, depth: int, *, r: int | None = None, final_tokens: int | None = None
) -> tuple[int, ...]:
    """How many tokens each block merges.

    A block merges at most half of its image tokens (every A token into B). With `r`, every
    block merges r (ToMe's constant schedule). With `final_tokens`, the N - final_tokens merges
    are spread as evenly as possible over the blocks, the remainder going to the earliest blocks
    (merging early saves the most compute), and a block merges more than its share only where
    the later blocks could not otherwise reach the target.

    Args:
        num_patches: N, the image tokens entering the first block.
        depth: the number of blocks.
        r: tokens merged per block (exclusive with final_tokens).
        final_tokens: image tokens (prefix tokens not counted) after the last block.

    Returns:
        (r_1, ..., r_depth), summing to N - final_tokens (or depth * r).
    """
    if (r is None) == (final_tokens is None):
        raise AdaptokError(
            f"pass exactly one of r (tokens merged per block) and final_tokens (tokens left after "
            f"the last block); got r={r}, final_tokens={final_tokens}"
        )
    if depth < 1 or num_patches < 1:
        raise AdaptokError(f"need depth >= 1 and num_patches >= 1, got {depth}, {num_patches}")
    if r is not None:
        if r < 0:
            raise AdaptokError(f"r must be >= 0, got {r}")
        schedule = (r,) * depth
        counts = _counts(num_patches, schedule)
        for block, (count, merges) in enumerate(zip(counts, schedule, strict=True)):
            if merges > count // 2:
                largest = max(
                    k
                    for k in range(num_patches // 2 + 1)
                    if all(c // 2 >= k for c in _counts(num_patches, (k,) * depth))
                )
                raise AdaptokError(
                    f"r={r} merges more than half of the {count} tokens reaching block {block}; "
                    f"the largest constant r for {num_patches} tokens and {depth} blocks is "
                    f"{largest} (or pass final_tokens)"
                )
        return schedule
    smallest = _fewest(num_patches, depth)
    if not smallest <= final_tokens <= num_patches:
        raise AdaptokError(
            f"final_tokens={final_tokens} is out of reach: {depth} blocks, each merging at most "
            f"half its tokens, leave between {smallest} and {num_patches} of {num_patches} tokens"
        )
    schedule_list = []
    count = num_patches
    for block in range(depth):
        left = depth - block
        merges = -(-(count - final_tokens) // left)  # ceil: the remainder goes early
        # More where the remaining blocks, halving at most, could not reach the target.
        while _fewest(count - merges, left - 1) > final_tokens:
            merges += 1
        schedule_list.append(merges)
        count -= merges
    return tuple(schedule_list)


def _counts(num_patches: int, schedule: tuple[int, ...]) -> list[int]:
    """Image tokens entering each block."""
    counts = [num_patches]
    for merges in schedule[:-1]:
        counts.append(counts[-1] - merges)
    return counts


def _fewest(count: int, blocks: int) -> int:
    """Fewest tokens `blocks` blocks can leave of `count` (each merging at most half)."""
    for _ in range(blocks):
        count -= count // 2
    return count


def merge_tokens(x: Tensor, size: Tensor, keys: Tensor, r: int, num_prefix: int) -> MergedTokens:
    """One bipartite soft matching step: merge the r most similar A -> B pairs.

    Args:
        x: [B, prefix+N, D] tokens.
        size: [B, prefix+N] float sizes.
        keys: [B, prefix+N, K] the similarity features (ToMe: attention keys, mean over heads).
        r: pairs to merge, 0 <= r <= N // 2.
        num_prefix: leading tokens that are never merged.

    Returns:
        MergedTokens with prefix+N-r tokens: prefix, the unmerged A tokens (in their order), then
        the B tokens (each the size-weighted mean of itself and the A tokens merged into it).
    """
    count = x.shape[1] - num_prefix
    if not 0 <= r <= count // 2:
        raise AdaptokError(f"r={r} must be between 0 and half the {count} image tokens")
    if r == 0:
        return MergedTokens(x, size)
    prefix, tokens = x[:, :num_prefix], x[:, num_prefix:]
    prefix_size, sizes = size[:, :num_prefix], size[:, num_prefix:]
    metric = F.normalize(keys[:, num_prefix:], dim=-1)
    similarity = metric[:, 0::2] @ metric[:, 1::2].transpose(1, 2)  # [B, |A|, |B|]
    best, match = similarity.max(dim=-1)
    order = best.argsort(dim=-1, descending=True, stable=True)
    sources = order[:, :r]  # A tokens merged away
    kept = order[:, r:].sort(dim=-1).values  # A tokens that stay, in sequence order
    targets = match.gather(1, sources)

    width = x.shape[-1]
    a_tokens, b_tokens = tokens[:, 0::2], tokens[:, 1::2]
    a_sizes, b_sizes = sizes[:, 0::2], sizes[:, 1::2]
    moved = (a_tokens * a_sizes[..., None]).gather(1, sources[..., None].expand(-1, -1, width))
    moved_sizes = a_sizes.gather(1, sources)
    b_weighted = (b_tokens * b_sizes[..., None]).scatter_add(
        1, targets[..., None].expand(-1, -1, width), moved
    )
    b_sizes = b_sizes.scatter_add(1, targets, moved_sizes)
    merged = torch.cat(
        [
            prefix,
            a_tokens.gather(1, kept[..., None].expand(-1, -1, width)),
            b_weighted / b_sizes[..., None],
        ],
        dim=1,
    )
    return MergedTokens(merged, torch.cat([prefix_size, a_sizes.gather(1, kept), b_sizes], 1))


def _block_forward(
    block: Block, state: MergedTokens, r: int, num_prefix: int, proportional: bool
) -> MergedTokens:
    """A timm Block with proportional attention, merging r tokens after its attention branch."""
    attn = block.attn
    x, size = state
    batch, count, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, count, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, heads, T, head_dim] each
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = size.log()[:, None, None, :].to(q.dtype) if proportional else None
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0
    )
    out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, count, -1))))
    x = x + block.drop_path1(block.ls1(out))
    x, size = merge_tokens(x, size, k.mean(dim=1), r, num_prefix)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return MergedTokens(x, size)


def _check_vit(vit: nn.Module) -> None:
    blocks = getattr(vit, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(
        type(block) is Block and type(block.attn) is Attention and block.attn.gate is None
        for block in blocks
    ):
        raise AdaptokError(
            f"ToMe here needs a timm VisionTransformer of plain Blocks (timm's Block and "
            f"Attention, no gating); got {type(vit).__name__}. Try vit_small_patch16_224 or "
            "deit_small_patch16_224"
        )
    if getattr(vit, "attn_pool", None) is not None or vit.global_pool not in ("token", "avg"):
        raise AdaptokError(
            f"ToMe here supports 'token' and 'avg' pooling, not {vit.global_pool!r} (or an "
            "attention-pool head); build the ViT with global_pool='token' or 'avg'"
        )
    if getattr(vit, "dist_token", None) is not None:
        raise AdaptokError("distilled ViTs (two heads) are not supported; use the plain deit_*")


def tome_features(
    vit: nn.Module, images: Tensor, *, final_tokens: int | None = None, r: int | None = None
) -> MergedTokens:
    """The ViT's trunk with token merging (arguments as `tome_forward`): embedded patches
    through every block and the final norm, as MergedTokens x [B, prefix+T, D], size
    [B, prefix+T]."""
    _check_vit(vit)
    num_prefix = int(vit.num_prefix_tokens)
    # The host's own embedding stage (patches, prefix tokens, positions, pre-norm).
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    schedule = merge_schedule(
        x.shape[1] - num_prefix, len(vit.blocks), r=r, final_tokens=final_tokens
    )
    state = MergedTokens(x, x.new_ones(x.shape[:2]))
    merged = False  # all sizes are 1 until a block merges: no bias, the plain ViT
    for block, merges in zip(vit.blocks, schedule, strict=True):
        state = _block_forward(block, state, merges, num_prefix, proportional=merged)
        merged = merged or merges > 0
    return MergedTokens(vit.norm(state.x), state.size)


def tome_forward(
    vit: nn.Module, images: Tensor, *, final_tokens: int | None = None, r: int | None = None
) -> Tensor:
    """Logits of a timm ViT run with token merging (ToMe), no training.

    Args:
        vit: a timm VisionTransformer (standard Blocks; 'token' or 'avg' pooling).
        images: [B, C, H, W] normalised as the ViT expects.
        final_tokens: image tokens left after the last block (prefix tokens not counted), the
            merges spread over the blocks by `merge_schedule`.
        r: tokens merged in every block (ToMe's constant schedule; exclusive with final_tokens).
            r=0 gives the ViT's own logits.

    Returns:
        [B, num_classes] logits.
    """
    x, size = tome_features(vit, images, final_tokens=final_tokens, r=r)
    num_prefix = int(vit.num_prefix_tokens)
    if vit.global_pool == "token":
        pooled = x[:, 0]
    else:  # "avg": the size-weighted mean, i.e. the mean over the patches the tokens stand for
        start = 0 if getattr(vit, "pool_include_prefix", False) else num_prefix
        weights = size[:, start:, None]
        pooled = (x[:, start:] * weights).sum(1) / weights.sum(1)
    return vit.head(vit.head_drop(vit.fc_norm(pooled)))
