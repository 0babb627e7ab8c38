"""Quadtree partitioner: invariants, the heap oracle, batch independence, errors, tokens."""

from __future__ import annotations

import heapq

import pytest
import torch

import adaptok
from adaptok import AdaptokError
from adaptok.embed.patch import PatchEmbedder
from adaptok.partitioners.quadtree import (
    nearest_budget,
    quadtree_partition,
    quadtree_split,
    valid_budgets,
)
from adaptok.partitioners.scorers import PixelBlurScorer, PrecomputedScorer, pixel_blur_importance
from adaptok.regions import check_partition
from conftest import assert_gradients_reach, photo


# ------------------------------------------------------------------------------------ the oracle
def oracle_split(
    importance: list[torch.Tensor], num_splits: int
) -> list[set[tuple[int, int, int]]]:
    """One heap per image, one split at a time: the greedy as docs/design.md ("Quadtree") states it.

    Key: larger importance first, then the larger patch, then raster order (row, then column).
    Returns, per image, the split patches as (level, row, col).
    """
    levels = len(importance)
    result = []
    for b in range(importance[0].shape[0]):
        heap: list[tuple[float, int, int, int]] = []

        def push(level: int, row: int, col: int, b: int = b, heap: list = heap) -> None:
            value = float(importance[level - 1][b, row, col])
            heapq.heappush(heap, (-value, -level, row, col))

        rows, cols = importance[levels - 1].shape[1:]
        for row in range(rows):
            for col in range(cols):
                push(levels, row, col)
        split = set()
        for _ in range(num_splits):
            _, negative_level, row, col = heapq.heappop(heap)
            level = -negative_level
            split.add((level, row, col))
            if level > 1:  # children of side s * 2^(level - 1); side s patches never split
                for dy in (0, 1):
                    for dx in (0, 1):
                        push(level - 1, 2 * row + dy, 2 * col + dx)
        result.append(split)
    return result


def oracle_boxes(split: set[tuple[int, int, int]], levels: int, rows: int, cols: int, s: int):
    """Leaves of one image's quadtree as sorted (y0, x0, y1, x1) boxes."""
    boxes = []

    def visit(level: int, row: int, col: int) -> None:
        if level > 0 and (level, row, col) in split:
            for dy in (0, 1):
                for dx in (0, 1):
                    visit(level - 1, 2 * row + dy, 2 * col + dx)
        else:
            side = s << level
            boxes.append((row * side, col * side, (row + 1) * side, (col + 1) * side))

    for row in range(rows):
        for col in range(cols):
            visit(levels, row, col)
    return sorted(boxes)


def split_set(split: tuple[torch.Tensor, ...], b: int) -> set[tuple[int, int, int]]:
    return {
        (level, row, col)
        for level, mask in enumerate(split, start=1)
        for row, col in mask[b].nonzero().tolist()
    }


def boxes_of(part: adaptok.Partition, b: int) -> list[tuple[int, ...]]:
    return sorted(tuple(box) for box in part.box[part.batch_index == b].tolist())


def photos_batch(size: tuple[int, int]) -> torch.Tensor:
    names = ("astronaut", "coffee", "chelsea", "rocket")
    return torch.cat([photo(name, size) for name in names])


# ---------------------------------------------------------------------------- oracle agreement
@pytest.mark.parametrize("trial", range(40))
def test_split_set_equals_heap_oracle_on_random_maps(trial: int) -> None:
    generator = torch.Generator().manual_seed(trial)
    levels = 1 + trial % 3
    rows, cols = 1 + trial % 2, 1 + (trial // 2) % 3  # square and rectangular grids
    batch = 3
    importance = []
    for level in range(1, levels + 1):
        shape = (batch, rows << (levels - level), cols << (levels - level))
        if trial % 2:  # few distinct values: many ties between sizes and positions
            importance.append(torch.randint(0, 3, shape, generator=generator).float())
        else:
            importance.append(torch.rand(shape, generator=generator))
    total = sum(m[0].numel() for m in importance)
    for num_splits in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        tree = quadtree_split(importance, num_splits=num_splits, base_grid=(batch, rows, cols))
        expected = oracle_split(importance, num_splits)
        for b in range(batch):
            assert split_set(tree.split, b) == expected[b]


def test_split_order_is_the_greedy_order() -> None:
    # A child more important than its parent waits for it: the parent's more important sibling
    # (5) goes first, then the parent (1), then at once the child (9).
    importance = [
        torch.tensor([[[9.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]),  # level 1
        torch.tensor([[[1.0, 5.0], [0.0, 0.0]]]),  # level 2
        torch.tensor([[[2.0]]]),  # level 3
    ]
    tree = quadtree_split(importance, num_splits=4, base_grid=(1, 1, 1))
    # concatenation: level 3 (index 0), level 2 (1..4), level 1 (5..20)
    assert tree.order[0].tolist() == [0, 2, 1, 5]


@pytest.mark.parametrize(
    ("size", "budget", "min_patch", "max_patch"),
    [((64, 64), 22, 8, 32), ((64, 96), 60, 8, 32), ((96, 64), 12, 16, 32), ((64, 128), 41, 8, 64)],
)
def test_partition_equals_oracle_on_photos(size, budget, min_patch, max_patch) -> None:
    images = photos_batch(size)
    part = quadtree_partition(images, budget=budget, min_patch=min_patch, max_patch=max_patch)
    importance = pixel_blur_importance(images, min_patch=min_patch, max_patch=max_patch)
    levels = len(importance)
    num_splits = (budget - (size[0] // max_patch) * (size[1] // max_patch)) // 3
    expected = oracle_split(importance, num_splits)
    for b in range(images.shape[0]):
        rows, cols = size[0] // max_patch, size[1] // max_patch
        assert boxes_of(part, b) == oracle_boxes(expected[b], levels, rows, cols, min_patch)


def test_ties_on_a_flat_image_follow_the_documented_rule() -> None:
    images = torch.full((1, 3, 64, 64), 0.5)
    # all importances are 0: larger patches first, then raster order
    part = quadtree_partition(images, budget=13, min_patch=8, max_patch=32)
    # 3 splits among 4 equal roots of side 32 and their equal children: roots first (larger
    # patches win ties), in raster order, so only the bottom-right root stays whole.
    sides = (part.box[:, 2] - part.box[:, 0]).tolist()
    assert sorted(sides) == [16] * 12 + [32]
    assert [32, 32, 64, 64] in part.box.tolist()


# -------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("budget", [6, 9, 30, 57, 96])
def test_partition_invariants(budget: int) -> None:
    images = torch.cat([photo("astronaut", (64, 96)), photo("coffee", (64, 96))])
    part = adaptok.partition(images, method="quadtree", budget=budget, min_patch=8, max_patch=32)
    check_partition(part)  # coverage, derived fields, 4-connected
    assert part.counts.tolist() == [budget, budget]
    side = part.box[:, 2] - part.box[:, 0]
    assert torch.equal(side, part.box[:, 3] - part.box[:, 1])  # squares
    assert set(side.unique().tolist()) <= {8, 16, 32}
    assert (part.box[:, 0] % side == 0).all() and (part.box[:, 1] % side == 0).all()  # aligned
    assert torch.equal(part.area, side * side)
    # region ids follow raster order of the top-left corner (Partition.from_labels' numbering)
    assert torch.equal(part.labels, adaptok.Partition.from_labels(part.labels).labels)


def test_budget_extremes_give_the_grids() -> None:
    images = photo("chelsea", (64, 128))
    coarse = quadtree_partition(images, budget=8, min_patch=8, max_patch=32)
    fine = quadtree_partition(images, budget=128, min_patch=8, max_patch=32)
    assert torch.equal(
        coarse.labels, adaptok.partition(images, method="grid", patch_size=32).labels
    )
    assert torch.equal(fine.labels, adaptok.partition(images, method="grid", patch_size=8).labels)
    same = quadtree_partition(images, budget=8, min_patch=32, max_patch=32)  # k = 0
    assert torch.equal(same.labels, coarse.labels)
    assert list(valid_budgets(64, 128, min_patch=8, max_patch=32))[:3] == [8, 11, 14]


def test_deterministic_and_batch_independent() -> None:
    images = photos_batch((64, 64))
    options = {"budget": 31, "min_patch": 8, "max_patch": 32}
    part = quadtree_partition(images, **options)
    again = quadtree_partition(images, **options)
    assert torch.equal(part.labels, again.labels) and torch.equal(part.box, again.box)
    for b in range(images.shape[0]):
        alone = quadtree_partition(images[b : b + 1], **options)
        assert boxes_of(alone, 0) == boxes_of(part, b)
    shuffled = quadtree_partition(images.flip(0), **options)
    assert boxes_of(shuffled, 0) == boxes_of(part, images.shape[0] - 1)


def test_importance_decides_where_to_split() -> None:
    images = torch.rand(1, 3, 64, 64)
    maps = [torch.zeros(1, 4, 4), torch.zeros(1, 2, 2)]
    maps[1][0, 1, 0] = 1.0  # bottom-left 32 patch first
    maps[0][0, 3, 0] = 1.0  # then its bottom-left 16 child
    part = quadtree_partition(
        images, budget=10, min_patch=8, max_patch=32, scorer=PrecomputedScorer(maps)
    )
    small = part.box[(part.box[:, 2] - part.box[:, 0]) == 8].tolist()
    assert sorted(small) == [[48, 0, 56, 8], [48, 8, 56, 16], [56, 0, 64, 8], [56, 8, 64, 16]]


# ------------------------------------------------------------------ tokens, reverse, gradient
def test_reverse_quadtree_round_trip() -> None:
    images = photos_batch((64, 96)).double()
    part = quadtree_partition(images, budget=45, min_patch=8, max_patch=32)
    tokens = adaptok.extract_tokens(images, part, patch_size=8)
    # a token is the area average of its square: the mean of its P x P values is the region mean
    token_mean = tokens.patches.view(*tokens.patches.shape[:2], 3, 64).mean(-1)
    per_region = part.unpad(token_mean, tokens.patch_valid)
    torch.testing.assert_close(part.scatter(per_region), part.mean_image(images))
    torch.testing.assert_close(per_region, part.region_mean(images))
    side = tokens.box[..., 2] - tokens.box[..., 0]
    assert torch.equal(tokens.level, torch.log2(side.double() / 8).long())
    centre = (tokens.box[..., :2] + tokens.box[..., 2:]).double() / 16
    torch.testing.assert_close(tokens.patch_coord, centre)


def test_gradient_reaches_the_patch_embedding() -> None:
    images = photos_batch((64, 64)).requires_grad_(True)
    part = quadtree_partition(images, budget=13, min_patch=16, max_patch=32)
    tokens = adaptok.extract_tokens(images, part, patch_size=16)
    embedder = PatchEmbedder(
        patch_size=16, in_chans=3, embed_dim=32, position="learned", position_grid=4
    )
    x, valid = embedder(tokens)
    (x[valid] ** 2).mean().backward()
    assert_gradients_reach(embedder)
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.cuda
def test_same_result_on_cuda() -> None:
    images = photos_batch((128, 192))
    options = {"budget": 60, "min_patch": 16, "max_patch": 64}
    # the scores agree to rounding; the split on the same scores agrees exactly
    maps = pixel_blur_importance(images, min_patch=16, max_patch=64)
    maps_gpu = pixel_blur_importance(images.cuda(), min_patch=16, max_patch=64)
    for cpu_map, gpu_map in zip(maps, maps_gpu, strict=True):
        torch.testing.assert_close(gpu_map.cpu(), cpu_map)
    cpu = quadtree_partition(images, **options, scorer=PrecomputedScorer(maps))
    gpu = quadtree_partition(images.cuda(), **options, scorer=PrecomputedScorer(maps))
    assert torch.equal(cpu.labels, gpu.labels.cpu()) and torch.equal(cpu.box, gpu.box.cpu())
    tied = [torch.randint(0, 3, (4, 8, 12)).float(), torch.randint(0, 3, (4, 4, 6)).float()]
    for num_splits in (5, 17, 40):
        on_cpu = quadtree_split(tied, num_splits=num_splits, base_grid=(4, 2, 3))
        on_gpu = quadtree_split(
            [m.cuda() for m in tied], num_splits=num_splits, base_grid=(4, 2, 3)
        )
        assert torch.equal(on_cpu.order, on_gpu.order.cpu())
    tokens = adaptok.extract_tokens(images.cuda(), gpu, patch_size=16)
    torch.testing.assert_close(
        tokens.patches.cpu(), adaptok.extract_tokens(images, cpu, patch_size=16).patches
    )


# -------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("images", "options", "match"),
    [
        (torch.rand(1, 64, 64, 3), {}, "channels-last"),
        (torch.rand(1, 3, 64, 64) * 255, {}, "divide them by 255"),
        (torch.full((1, 3, 64, 64), float("nan")), {}, "NaN"),
        (torch.rand(1, 3, 64, 64), {"budget": 20}, r"budget 20 is not reachable .* try 19 or 22"),
        (torch.rand(1, 3, 64, 64), {"budget": 3}, r"below the 4 largest patches .* smallest"),
        (torch.rand(1, 3, 64, 64), {"budget": 67}, r"above the 64 smallest patches .* largest"),
        (torch.rand(1, 3, 64, 64), {"budget": 10.0}, "budget must be an integer"),
        (torch.rand(1, 3, 64, 64), {"min_patch": 12}, "power of two"),
        (torch.rand(1, 3, 64, 64), {"min_patch": 0}, "positive integer"),
        (torch.rand(1, 3, 64, 64), {"scorer": "saliency"}, "known scorers: feature, pixel_blur"),
        (torch.rand(1, 3, 64, 64), {"scorer": "feature"}, "needs pretrained weights"),
        (torch.rand(1, 3, 64, 64), {"seed": 3}, "seed only applies to scorer='random'"),
        (torch.rand(1, 3, 64, 64), {"scorer": PixelBlurScorer(), "seed": 3}, "seed only applies"),
        (torch.rand(1, 3, 64, 64), {"budget_per_image": 3}, "unknown option"),
    ],
)
def test_rejects_bad_input(images: torch.Tensor, options: dict, match: str) -> None:
    options = {"budget": 10, "min_patch": 8, "max_patch": 32, **options}
    with pytest.raises(AdaptokError, match=match):
        adaptok.partition(images, method="quadtree", **options)


def test_quadtree_partition_itself_names_the_padding_and_the_crop() -> None:
    # partition() pads other sizes (tests/test_api_sizes.py); the bare partitioner says how.
    options = {"budget": 10, "min_patch": 8, "max_patch": 32}
    with pytest.raises(AdaptokError, match=r"16x16 is too small for max_patch 32"):
        quadtree_partition(torch.rand(1, 3, 16, 16), **options)
    with pytest.raises(AdaptokError, match=r"pad or resize to 64x96 .* or crop to 64x64"):
        quadtree_partition(torch.rand(1, 3, 64, 80), **options)


def test_budget_101_names_the_nearest_valid_budgets() -> None:
    images = torch.rand(1, 3, 256, 256)
    with pytest.raises(AdaptokError, match=r"budget 101 is not reachable.*try 100 or 103"):
        quadtree_partition(images, budget=101, min_patch=16, max_patch=64)


def test_bad_scorer_output_is_reported() -> None:
    def wrong_scorer(images, *, min_patch, max_patch):
        return [torch.zeros(1, 3, 3), torch.zeros(1, 4, 4)]

    with pytest.raises(AdaptokError, match=r"must have shape \[1, 8, 8\]"):
        quadtree_partition(
            torch.rand(1, 3, 64, 64), budget=19, min_patch=4, max_patch=16, scorer=wrong_scorer
        )


@pytest.mark.parametrize("wanted", [None, -5, 40, 41, 42, 101, 159.5, 10**6])
def test_nearest_budget_is_the_closest_valid_budget(wanted) -> None:
    budgets = list(valid_budgets(320, 512, min_patch=16, max_patch=64))
    target = budgets[-1] / 4 if wanted is None else wanted
    chosen = nearest_budget(320, 512, wanted, min_patch=16, max_patch=64)
    assert chosen in budgets
    assert abs(chosen - target) == min(abs(b - target) for b in budgets)


def test_default_budget_is_the_command_lines() -> None:
    # One default per method: the API without a budget gives what `adaptok tokenize` documents
    # (a quarter of the smallest patches), at the options given.
    images = photo(size=(128, 192))
    for min_patch, max_patch in ((16, 64), (8, 32)):
        default = adaptok.partition(images, "quadtree", min_patch=min_patch, max_patch=max_patch)
        budget = nearest_budget(128, 192, min_patch=min_patch, max_patch=max_patch)
        assert abs(budget - (128 // min_patch) * (192 // min_patch) / 4) <= 1.5
        explicit = quadtree_partition(
            images, budget=budget, min_patch=min_patch, max_patch=max_patch
        )
        assert torch.equal(default.labels, explicit.labels)
        assert default.counts.tolist() == [budget]
