"""Mixed-resolution quadtree tokenization (Quadformer, Ronen et al., CVPRW 2023).

The algorithm and its choices: docs/design.md, "Quadtree".

An image is first cut into the grid of S x S patches (S = max_patch). Splitting a patch replaces
it by its four children and adds 3 tokens, so a budget of N tokens means (N - N0) / 3 splits. The
greedy rule: always split the currently unsplit patch of highest importance; patches of the
smallest size s = min_patch never split; a patch can only split after its parent.

Levels: a patch of side s * 2^j is on level j (0 = smallest, k = log2(S / s) = largest). Only
levels 1..k can split; their importance comes from a scorer (see `adaptok.partitioners.scorers`)
as one map per level, `importance[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)]`.

Ties. Patches are compared by importance; equal importances are broken by size (the larger patch
first), then by raster order of the top-left corner (top row first, then left first). With this
total order every patch has a distinct rank (0 = split first if it were available).

How the greedy order is computed without splitting one patch at a time. Write rank(p) for the
patch's rank in the total order above and path(p) for the chain from its level-k ancestor down to
p. The greedy pops p when everything "more urgent" is gone; that urgency is decided by the worst
(highest) rank on path(p) -- a child can never be split before its parent, so it inherits the
parent's delay: effective(p) = max(rank(p), effective(parent)), a cumulative maximum down the tree.
Proof sketch: for any threshold t, the set A_t = {p : effective(p) < t} is closed under taking
parents, and while part of A_t is unsplit, some patch of A_t is available (its parent is split) with
rank < t, whereas every available patch outside A_t has rank >= t (its parent is in A_t, so its own
rank is what exceeds t). So the greedy splits all of A_t before anything else, for every t.
Patches with equal effective rank share the ancestor q that attains it; the greedy splits q, then
its descendants of that group in the same greedy order recursively (they all rank better than q).
So the greedy order is the lexicographic order of the sequence of "records" along path(p):
q1 = the worst-ranked patch on the path, q2 = the worst-ranked patch below q1, ..., ending with p
(ranks strictly decreasing), a shorter sequence (an ancestor) coming first. Sorting by those
sequences (k stable sorts) and taking the first (N - N0) / 3 patches gives exactly the greedy's
split set, in the greedy's order, for every image at once. `tests/test_quadtree.py` checks this
against a heap that splits one patch at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import AdaptokError, check_images
from ..ops import round_up
from ..regions import Partition
from ..validate import as_int, check_int
from .grid import square_partition
from .scorers import QuadtreeScorer, check_importance_maps, get_scorer
from .spec import PartitionerSpec

__all__ = [
    "MAX_PATCH",
    "MIN_PATCH",
    "SPEC",
    "QuadtreeSplit",
    "check_patch_sizes",
    "check_quadtree_sizes",
    "nearest_budget",
    "quadtree_leaves",
    "quadtree_partition",
    "quadtree_split",
    "split_order",
    "valid_budgets",
    "with_nearest_budget",
]

# The default patch sizes (s and S) of every quadtree function here.
MIN_PATCH = 16
MAX_PATCH = 64


@dataclass(frozen=True)
class QuadtreeSplit:
    """Which patches of a quadtree are split.

    Attributes:
        split: k tensors, split[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)] bool, True where the
            level-j patch is split into its four children.
        order: [B, num_splits] int64 the split patches in the greedy's order, as indices into the
            concatenation of the flattened levels k, k - 1, ..., 1 (row-major within a level).
        leaf_level: [B, H / s, W / s] int64 level of the leaf (token) covering each smallest cell.
    """

    split: tuple[Tensor, ...]
    order: Tensor
    leaf_level: Tensor


def check_quadtree_sizes(height: int, width: int, min_patch: int, max_patch: int) -> int:
    """Validate the patch sizes against an image size and return k = log2(max_patch / min_patch).

    Raises:
        AdaptokError: sizes that are not positive integers, a ratio that is not a power of two, or
            an image size that is not a multiple of max_patch (the message names the sizes to pad
            or crop to).
    """
    levels = check_patch_sizes(min_patch, max_patch)
    if height < max_patch or width < max_patch:
        raise AdaptokError(
            f"image size {height}x{width} is too small for max_patch {max_patch}: pad or resize "
            f"to at least {max(height, max_patch)}x{max(width, max_patch)}, or lower max_patch"
        )
    if height % max_patch or width % max_patch:
        up_h, up_w = round_up(height, max_patch), round_up(width, max_patch)
        down_h, down_w = height // max_patch * max_patch, width // max_patch * max_patch
        crop = f" or crop to {down_h}x{down_w}" if down_h and down_w else ""
        raise AdaptokError(
            f"image size {height}x{width} is not a multiple of max_patch {max_patch}; pad or "
            f"resize to {up_h}x{up_w} (adaptok.io.pad_to_multiple){crop}"
        )
    return levels


def check_patch_sizes(min_patch: int, max_patch: int) -> int:
    """Validate the patch sizes alone (any image is then padded to a multiple of max_patch) and
    return k = log2(max_patch / min_patch)."""
    check_int("min_patch", min_patch)
    check_int("max_patch", max_patch)
    ratio = max_patch // min_patch
    if max_patch % min_patch or ratio & (ratio - 1):
        raise AdaptokError(
            f"max_patch / min_patch must be a power of two, got max_patch={max_patch}, "
            f"min_patch={min_patch}; e.g. min_patch=16 with max_patch=32, 64 or 128"
        )
    return ratio.bit_length() - 1


def valid_budgets(
    height: int, width: int, *, min_patch: int = MIN_PATCH, max_patch: int = MAX_PATCH
) -> range:
    """Every reachable token budget for an image size: N0, N0 + 3, ..., (H / s) * (W / s)."""
    check_quadtree_sizes(height, width, min_patch, max_patch)
    coarsest = (height // max_patch) * (width // max_patch)
    finest = (height // min_patch) * (width // min_patch)
    return range(coarsest, finest + 1, 3)


def nearest_budget(
    height: int,
    width: int,
    wanted: float | None = None,
    *,
    min_patch: int = MIN_PATCH,
    max_patch: int = MAX_PATCH,
) -> int:
    """The valid budget (N0 + 3j) nearest to `wanted` tokens, clamped to the reachable range.

    For counts the library derives (the default, `vectorize`'s default); a budget the user
    gives is refused when it is not valid, in the API and on the command line alike.

    Args:
        height, width: image size; other than multiples of max_patch, the size `partition` pads
            the image to counts.
        wanted: tokens asked for; None asks for a quarter of the smallest patches.
        min_patch, max_patch: the quadtree's patch sizes.
    """
    height, width = round_up(height, max_patch), round_up(width, max_patch)
    budgets = valid_budgets(height, width, min_patch=min_patch, max_patch=max_patch)
    if wanted is None:
        wanted = budgets[-1] / 4
    step = round((wanted - budgets[0]) / 3)
    return budgets[min(max(step, 0), len(budgets) - 1)]


def with_nearest_budget(height: int, width: int, options: dict[str, object]) -> dict[str, object]:
    """Quadtree `options` for an H x W image (any size) with the budget rounded to the nearest
    valid one (`nearest_budget`; None: the default), for counts the library derives
    (`vectorize`'s default); `partition` refuses a budget that is not valid."""
    min_patch = check_int("min_patch", options.get("min_patch", MIN_PATCH))
    max_patch = check_int("max_patch", options.get("max_patch", MAX_PATCH))
    wanted = as_int(options.get("budget"))
    if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, (int, float))):
        raise AdaptokError(f"budget must be a number of tokens, got {wanted!r}")
    budget = nearest_budget(height, width, wanted, min_patch=min_patch, max_patch=max_patch)
    return {**options, "budget": budget}


def _check_budget(budget: object, budgets: range, where: str) -> int:
    """`budget` if it is one of `budgets`; else an error naming the nearest valid ones for
    `where` ("a 256x256 image")."""
    budget = as_int(budget)
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise AdaptokError(f"budget must be an integer number of tokens, got {budget!r}")
    lowest, highest = budgets[0], budgets[-1]
    if budget < lowest:
        raise AdaptokError(
            f"budget {budget} is below the {lowest} largest patches of {where}; the smallest "
            f"budget is {lowest} (or raise max_patch)"
        )
    if budget > highest:
        raise AdaptokError(
            f"budget {budget} is above the {highest} smallest patches of {where}; the largest "
            f"budget is {highest} (or lower min_patch)"
        )
    if (budget - lowest) % 3:
        below = budget - (budget - lowest) % 3
        raise AdaptokError(
            f"budget {budget} is not reachable (budgets are {lowest} + 3j for {where}); "
            f"try {below} or {below + 3}"
        )
    return budget


def quadtree_partition(
    images: Tensor,
    *,
    budget: int | None = None,
    min_patch: int = MIN_PATCH,
    max_patch: int = MAX_PATCH,
    scorer: str | QuadtreeScorer = "pixel_blur",
    seed: int | None = None,
) -> Partition:
    """Cut every image into `budget` aligned squares by the greedy saliency quadtree.

    Args:
        images: [B, C, H, W] float images; H and W multiples of max_patch.
        budget: tokens per image, N0 + 3j with N0 = (H / max_patch) * (W / max_patch), at most
            (H / min_patch) * (W / min_patch). The default (None) is the valid budget nearest to a
            quarter of the min_patch patches (`nearest_budget`), as in `adaptok tokenize`.
        min_patch: s, the smallest patch side (those never split).
        max_patch: S = s * 2^k, the largest patch side (the starting grid).
        scorer: "pixel_blur", "pooling", "feature", "random" (see
            `adaptok.partitioners.scorers.available_scorers`) or any object following the
            `QuadtreeScorer` protocol, e.g. `adaptok.partitioners.scorers.PrecomputedScorer(maps)`.
        seed: seed of the "random" scorer (default 0); only valid with scorer="random".

    Returns:
        Partition whose regions are the leaves of each image's quadtree, numbered per image in
        raster order of their top-left corner (Tokens.level gives each one's size level).
    """
    check_images(images, min_size=1)
    batch, _, height, width = images.shape
    levels = check_quadtree_sizes(height, width, min_patch, max_patch)
    if budget is None:
        budget = nearest_budget(height, width, min_patch=min_patch, max_patch=max_patch)
    budget = _check_budget(
        budget,
        valid_budgets(height, width, min_patch=min_patch, max_patch=max_patch),
        f"a {height}x{width} image",
    )
    if isinstance(scorer, str):
        scorer = get_scorer(scorer, seed=seed)
    elif seed is not None:
        raise AdaptokError(
            "seed only applies to scorer='random'; seed your scorer object instead "
            f"(got seed={seed!r} with {type(scorer).__name__})"
        )
    importance = scorer(images, min_patch=min_patch, max_patch=max_patch) if levels else []
    importance = check_importance_maps(importance, images.shape, min_patch, max_patch)
    importance = [m.to(images.device) for m in importance]
    num_splits = (budget - (height // max_patch) * (width // max_patch)) // 3
    tree = quadtree_split(
        importance,
        num_splits=num_splits,
        base_grid=(batch, height // max_patch, width // max_patch),
        device=images.device,
    )
    return quadtree_leaves(tree, min_patch)


def split_order(importance: Sequence[Tensor]) -> Tensor:
    """The greedy's split order of every splittable patch, for every image at once.

    Args:
        importance: k maps, importance[j - 1]: [B, h * 2^(k - j), w * 2^(k - j)] float, the
            importance of the level-j patches (level k is the coarsest, an h x w grid).

    Returns:
        [B, P] int64 patch indices (into the concatenation of the flattened levels k, k - 1, ...,
        1) sorted in the order the one-split-at-a-time greedy would split them if it ran to the end.
    """
    levels = len(importance)
    batch = importance[0].shape[0]
    device = importance[0].device
    shapes = [tuple(m.shape[1:]) for m in importance]  # shapes[j - 1] of level j
    sizes = [h * w for h, w in shapes]
    # Offsets of each level in the concatenation, coarsest (level k) first.
    offset = {}
    start = 0
    for level in range(levels, 0, -1):
        offset[level] = start
        start += sizes[level - 1]
    # `+ 0.0` turns -0.0 into +0.0, so that radix sorts (CUDA) see them as equal, like comparisons.
    scores = torch.cat([importance[j - 1].flatten(1) for j in range(levels, 0, -1)], 1) + 0.0
    total = scores.shape[1]
    positions = torch.arange(total, device=device).expand(batch, total)
    # Stable sort: equal importances keep the concatenation order (bigger first, then raster).
    by_importance = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(by_importance).scatter_(1, by_importance, positions)

    keys = []
    for level in range(levels, 0, -1):
        height, width = shapes[level - 1]
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        # Ranks along the path from the patch itself (column 0) up to its level-k ancestor.
        chain = []
        for ancestor in range(level, levels + 1):
            shift = ancestor - level
            index = (
                offset[ancestor]
                + (rows >> shift)[:, None] * shapes[ancestor - 1][1]
                + (cols >> shift)[None, :]
            )
            chain.append(rank[:, index.flatten()])
        path = torch.stack(chain, 2)  # [B, n, depth]
        worst_below = path.cummax(2).values
        record = torch.ones_like(path, dtype=torch.bool)
        record[..., 1:] = path[..., 1:] > worst_below[..., :-1]
        # Records read from the root down: a record's slot is the number of records above it.
        above = record.flip(2).cumsum(2).flip(2) - record.long()
        slot = torch.where(record, above, levels)  # non-records go to a discarded column
        key = torch.full((batch, path.shape[1], levels + 1), -1, device=device, dtype=torch.long)
        key.scatter_(2, slot, path)
        keys.append(key[..., :levels])
    key = torch.cat(keys, 1)  # [B, P, k]; -1 pads the end of shorter sequences (they come first)
    order = positions.clone()
    for column in range(levels - 1, -1, -1):  # least significant first: a stable radix sort
        column_key = key[..., column].gather(1, order)
        order = order.gather(1, torch.sort(column_key, dim=1, stable=True).indices)
    return order


def quadtree_split(
    importance: Sequence[Tensor],
    *,
    num_splits: int,
    base_grid: tuple[int, int, int],
    device: torch.device | str | None = None,
) -> QuadtreeSplit:
    """Run the greedy quadtree on importance maps.

    Args:
        importance: k maps, importance[j - 1]: [B, h * 2^(k - j), w * 2^(k - j)] (level j).
        num_splits: how many patches to split in every image ((budget - N0) / 3).
        base_grid: (B, h, w), the batch size and the grid of largest patches (needed when k = 0).
        device: where to build the result when k = 0.

    Returns:
        QuadtreeSplit with the split masks, the order of the splits and the leaf level per cell.
    """
    batch, base_h, base_w = base_grid
    levels = len(importance)
    if levels == 0:
        if num_splits:
            raise AdaptokError("with min_patch == max_patch no patch can split; use num_splits=0")
        leaf = torch.zeros(batch, base_h, base_w, dtype=torch.long, device=device)
        return QuadtreeSplit((), torch.zeros(batch, 0, dtype=torch.long, device=device), leaf)
    device = importance[0].device
    order = split_order(importance)[:, :num_splits]
    flat = torch.zeros(
        order.shape[0], sum(m[0].numel() for m in importance), dtype=torch.bool, device=device
    )
    flat.scatter_(1, order, True)
    split: list[Tensor] = [torch.empty(0)] * levels
    start = 0
    for level in range(levels, 0, -1):
        shape = importance[level - 1].shape
        split[level - 1] = flat[:, start : start + shape[1] * shape[2]].view(shape)
        start += shape[1] * shape[2]
    # A cell's leaf is `levels - (number of split ancestors)` (split sets are closed upwards).
    split_ancestors = sum(
        _upsample(mask, 1 << level).long() for level, mask in enumerate(split, start=1)
    )
    leaf_level = levels - split_ancestors
    return QuadtreeSplit(tuple(split), order, leaf_level)


def quadtree_leaves(tree: QuadtreeSplit, min_patch: int) -> Partition:
    """The Partition whose regions are the leaves of a quadtree.

    Args:
        tree: the split (its leaf_level grid is [B, H / s, W / s]).
        min_patch: s in pixels.

    Returns:
        Partition with regions numbered per image in raster order of their top-left corner (the
        same numbering as Partition.from_labels).
    """
    return square_partition(tree.leaf_level, min_patch)


def _upsample(mask: Tensor, factor: int) -> Tensor:
    """[B, h, w] -> [B, h * factor, w * factor] by repetition."""
    batch, height, width = mask.shape
    return (
        mask.view(batch, height, 1, width, 1)
        .expand(batch, height, factor, width, factor)
        .reshape(batch, height * factor, width * factor)
    )


def quadtree_size_policy(height: int, width: int, options: dict[str, object]) -> int:
    """Any-size policy (see `partition`): pad to a multiple of max_patch. A budget is checked
    here against the padded size, so that a refusal names both sizes."""
    min_patch = check_int("min_patch", options.get("min_patch", MIN_PATCH))
    max_patch = check_int("max_patch", options.get("max_patch", MAX_PATCH))
    padded = (round_up(height, max_patch), round_up(width, max_patch))
    budget = options.get("budget")
    if budget is not None and padded != (height, width):
        check_patch_sizes(min_patch, max_patch)
        where = (
            f"a {height}x{width} image, padded to {padded[0]}x{padded[1]} (a multiple of "
            f"max_patch {max_patch})"
        )
        _check_budget(
            budget, valid_budgets(*padded, min_patch=min_patch, max_patch=max_patch), where
        )
    return max_patch


def derive_options(
    image_size: int, patch_size: int, given: Mapping[str, object]
) -> dict[str, object]:
    """A model's quadtree options for square images of side `image_size` and tokens of
    `patch_size`, `given` merged over them. Given both patch sizes, nothing is derived (the
    budget default is then `quadtree_partition`'s); given one, the other and the budget are
    derived around it (so `adaptok train --max-patch 16` gets a budget valid for 16).

    Patches from `patch_size` to 4x it (2x where 4x does not divide the image, e.g. 16..32 at
    224), about half the plain grid's tokens, rounded to a reachable budget (coarse + 3j), and at
    least one split; refused when not even 2x divides the image (ViT-B/32 at 224: the quadtree
    would be the grid).
    """
    if {"min_patch", "max_patch"} <= given.keys():
        return dict(given)
    min_patch = check_int("min_patch", given.get("min_patch", patch_size))
    if "max_patch" in given:
        max_patch = check_int("max_patch", given["max_patch"])
    else:
        max_patch = min_patch * 4
        while image_size % max_patch and max_patch > min_patch:
            max_patch //= 2
        if max_patch == min_patch:
            fit = -(-image_size // (2 * min_patch)) * 2 * min_patch
            raise AdaptokError(
                f"a quadtree over {min_patch}-pixel patches needs an image side that is a "
                f"multiple of 2 x {min_patch} = {2 * min_patch} (one split level at least); "
                f"{image_size} is {image_size // min_patch} patches, so every patch would stay "
                f"whole (the grid). Use images of {fit}x{fit} (timm: img_size={fit}) or "
                "method='grid'"
            )
    coarse = (image_size // max_patch) ** 2
    grid = (image_size // min_patch) ** 2
    splits = max(1 if grid > coarse else 0, round((grid // 2 - coarse) / 3))
    derived = {"budget": coarse + 3 * splits, "min_patch": min_patch, "max_patch": max_patch}
    return {**derived, **given}


def _default_budget(height: int, width: int, options: Mapping[str, object]) -> int:
    return with_nearest_budget(height, width, {**options, "budget": None})["budget"]  # type: ignore[return-value]


def _fit_budget(height: int, width: int, wanted: float, options: Mapping[str, object]) -> int:
    return with_nearest_budget(height, width, {**options, "budget": wanted})["budget"]  # type: ignore[return-value]


SPEC = PartitionerSpec(
    name="quadtree",
    function=quadtree_partition,
    budget="exact",
    none_means="the default",
    default=f"the valid budget nearest to a quarter of the {MIN_PATCH}-pixel patches (patches "
    f"{MIN_PATCH}..{MAX_PATCH})",
    default_budget=_default_budget,
    fit_budget=_fit_budget,
    derive=derive_options,
    size_policy=quadtree_size_policy,
)
