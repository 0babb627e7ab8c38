"""Token budget: what a dHT `budget` means, and cutting every image down to it.

A budget is "auto" (the default cap round(sqrt(H*W) / 0.56), `default_budget`), an int >= 1 (a
cap on regions per image) or None (no cap); `check_budget` refuses anything else and
`resolve_budget` turns it into the cap at an image size.

`budget` regions per image are kept; every dropped region joins its most similar neighbour that
already belongs to a kept region, round after round, until all are absorbed (a dropped region
whose neighbours are all dropped waits for one of them to be absorbed). Each group is a kept
region plus adjacent regions attached one step at a time, so groups stay 4-connected, and each
image ends with exactly min(regions, budget) regions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ...errors import AdaptokError
from .merge import pairs_between

__all__ = [
    "AUTO",
    "absorb_regions",
    "check_budget",
    "choose_kept",
    "compact_groups",
    "default_budget",
    "enforce_budget",
    "region_adjacency",
    "resolve_budget",
]

AUTO = "auto"


def default_budget(height: int, width: int, coefficient: float = 0.56) -> int:
    """The default token target round(sqrt(H*W) / 0.56) per image (what budget="auto" means)."""
    return max(1, round(math.sqrt(height * width) / coefficient))


def check_budget(budget: object) -> int | str | None:
    """Validate a token budget: "auto" (the default target), None (no cap) or an int >= 1."""
    if budget is None or budget == AUTO:
        return budget
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise AdaptokError(
            f'budget must be a positive int (a cap on regions per image), "auto" (the default '
            f"cap round(sqrt(H*W)/0.56)) or None (no cap), got {budget!r} of type "
            f'{type(budget).__name__}; pass int(budget), "auto" or None'
        )
    if budget < 1:
        raise AdaptokError(
            f"budget must be at least 1 region per image, got {budget}; pass None for no cap"
        )
    return budget


def resolve_budget(
    budget: int | str | None, height: int, width: int, coefficient: float = 0.56
) -> int | None:
    """The cap on regions per image a (checked) budget means at H x W: None for no cap."""
    if budget == AUTO:
        return default_budget(height, width, coefficient)
    return budget  # type: ignore[return-value]


def region_adjacency(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs of 4-adjacent regions of a label map, each pair once.

    Args:
        labels: [B, H, W] int64 ids 0..N-1 unique across the batch.

    Returns:
        (low [E], high [E]) int64 region ids with low < high.
    """
    pairs = [
        (labels[:, :, :-1], labels[:, :, 1:]),
        (labels[:, :-1, :], labels[:, 1:, :]),
    ]
    first = torch.cat([a.flatten() for a, _ in pairs])
    second = torch.cat([b.flatten() for _, b in pairs])
    size = int(labels.max()) + 1 if labels.numel() else 1
    return pairs_between(first, second, size)


def compact_groups(group: Tensor) -> Tensor:
    """[N] the consecutive new id of every region from `group` (`enforce_budget`,
    `absorb_regions`: the kept region each joins): kept regions numbered in their order."""
    kept = group == torch.arange(group.shape[0], device=group.device)
    return (torch.cumsum(kept, 0) - 1).index_select(0, group)


def _rank_within_image(score: Tensor, image: Tensor) -> Tensor:
    """[N] rank of each region's score within its image (0 = highest; ties by region id)."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(image.index_select(0, order), stable=True)]
    counts = torch.bincount(image)
    offsets = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - offsets.index_select(
        0, image.index_select(0, order)
    )
    return rank


def choose_kept(
    area: Tensor,
    image: Tensor,
    features: Tensor,
    low: Tensor,
    high: Tensor,
    budget: int,
    *,
    generator: torch.Generator | None = None,
    random: bool = False,
) -> Tensor:
    """Which regions survive the budget.

    Deterministic (random=False): keep the regions that would cost most to merge: the Ward cost
    a_r a_s / (a_r + a_s) ||f_r - f_s||² to their most similar neighbour (ties by region id).
    Random (training): sample `budget` regions per image without replacement with probability
    ∝ 1 / sqrt(area) (Gumbel top-k, drawn from `generator`).

    Args:
        area: [N] pixel count of each region.
        image: [N] int64 image of each region.
        features: [N, d] mean feature of each region.
        low, high: [E] adjacent region pairs.
        budget: regions to keep per image.
        generator: random source for random=True.
        random: sample instead of ranking.

    Returns:
        [N] bool, True for kept regions.
    """
    area = area.to(features.dtype)
    if random:
        uniform = torch.rand(area.shape, generator=generator, device="cpu").to(area.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-7)))
        score = -0.5 * torch.log(area) + gumbel
    else:
        distance = (features.index_select(0, low) - features.index_select(0, high)).square().sum(-1)
        area_low, area_high = area.index_select(0, low), area.index_select(0, high)
        ward = area_low * area_high / (area_low + area_high) * distance
        score = torch.full_like(area, float("inf"))
        both = torch.cat([low, high])
        score.scatter_reduce_(0, both, torch.cat([ward, ward]), reduce="amin")
    return _rank_within_image(score, image) < budget


def enforce_budget(
    area: Tensor,
    image: Tensor,
    features: Tensor,
    low: Tensor,
    high: Tensor,
    budget: int,
    *,
    generator: torch.Generator | None = None,
    random: bool = False,
) -> Tensor:
    """Merge regions until every image has at most `budget`.

    Args:
        area: [N] pixel count of each region.
        image: [N] int64 image of each region.
        features: [N, d] mean feature of each region (similarity exp(-||f_r - f_s||²)).
        low, high: [E] int64 pairs of 4-adjacent regions.
        budget: regions allowed per image (>= 1).
        generator: random source when random=True.
        random: choose kept regions by sampling (training) instead of by merge cost (eval).

    Returns:
        [N] int64 group of every region: the id of the kept region it joins (kept regions map to
        themselves). Every group is 4-connected.
    """
    num_regions = area.shape[0]
    index = torch.arange(num_regions, device=area.device)
    if int(torch.bincount(image).max()) <= budget:
        return index
    kept = choose_kept(area, image, features, low, high, budget, generator=generator, random=random)
    return absorb_regions(kept, features, low, high)


def absorb_regions(kept: Tensor, features: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Every region that is not kept joins its most similar neighbour already in a kept group.

    Rounds of one scatter each: a region whose neighbours are all waiting waits for one of them
    to be absorbed. A region with no kept region in reach (none in its image) stays alone.

    Args:
        kept: [N] bool regions that keep their identity.
        features: [N, d] mean feature of each region (similarity exp(-||f_r - f_s||²)).
        low, high: [E] int64 pairs of 4-adjacent regions.

    Returns:
        [N] int64 group of every region: the id of the kept region it joins (kept regions, and
        regions that cannot reach one, map to themselves). Every group is 4-connected.
    """
    num_regions = kept.shape[0]
    index = torch.arange(num_regions, device=kept.device)
    group = torch.where(kept, index, -1)
    vertex = torch.cat([low, high])
    other = torch.cat([high, low])
    similarity = torch.exp(
        -(features.index_select(0, low) - features.index_select(0, high)).square().sum(-1)
    )
    # Best candidate per waiting region in one scatter: value bits above the reversed edge id.
    bits = similarity.float().view(torch.int32).long()
    edge_id = torch.arange(low.numel(), device=kept.device)
    key = torch.cat([(bits << 32) | (low.numel() - 1 - edge_id)] * 2)
    while True:
        waiting = (group.index_select(0, vertex) < 0) & (group.index_select(0, other) >= 0)
        if not bool(waiting.any()):
            break
        best = torch.full((num_regions,), -1, device=kept.device, dtype=torch.long)
        best.scatter_reduce_(0, vertex[waiting], key[waiting], reduce="amax")
        joining = torch.nonzero(best >= 0).flatten()
        edge = low.numel() - 1 - (best.index_select(0, joining) & 0xFFFFFFFF)
        low_end, high_end = low.index_select(0, edge), high.index_select(0, edge)
        target = torch.where(low_end == joining, high_end, low_end)
        group[joining] = group.index_select(0, target)
    return torch.where(group < 0, index, group)
