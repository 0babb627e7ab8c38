"""Seeded-random fuzz test of `adaptok.partition`: the Partition invariants hold for random image
sizes, contents, budgets and methods (grid, quadtree, slic, and dht through the public entry).

Seeded random rather than hypothesis: the cases are reproducible from their index (the test id
names it), and the suite needs no extra dependency. The sizes stay small so the ~60 cases take a
few seconds.
"""

from __future__ import annotations

import random

import pytest
import torch

import adaptok
from adaptok.partitioners.quadtree import valid_budgets, with_nearest_budget
from adaptok.partitioners.registry import partition
from adaptok.regions import check_partition


def random_images(rng: random.Random, batch: int, height: int, width: int) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1]: flat, noisy, smooth or blocky pictures (what partitioners meet)."""
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    kind = rng.choice(("flat", "noise", "gradient", "blocks"))
    if kind == "flat":
        return torch.rand(batch, 3, 1, 1, generator=generator).expand(-1, -1, height, width)
    if kind == "noise":
        return torch.rand(batch, 3, height, width, generator=generator)
    if kind == "gradient":
        ramp = torch.linspace(0, 1, width).view(1, 1, 1, width)
        return (ramp * torch.rand(batch, 3, 1, 1, generator=generator)).expand(-1, -1, height, -1)
    block = rng.choice((2, 3, 5))
    coarse = torch.rand(batch, 3, -(-height // block), -(-width // block), generator=generator)
    return coarse.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :height, :width]


def random_case(index: int) -> tuple[str, torch.Tensor, dict[str, object]]:
    """(method, images, options) for fuzz case `index`; sizes fit the method's constraints."""
    rng = random.Random(index)
    method = ("grid", "quadtree", "slic", "dht")[index % 4]
    batch = rng.randint(1, 3)
    if method == "grid":
        patch = rng.choice((1, 2, 4, 5, 8, 16))
        height, width = patch * rng.randint(1, 6), patch * rng.randint(1, 6)
        options: dict[str, object] = {"patch_size": patch}
    elif method == "quadtree":
        min_patch = rng.choice((1, 2, 4, 8))
        max_patch = min_patch * rng.choice((1, 2, 4, 8))
        height, width = max_patch * rng.randint(1, 4), max_patch * rng.randint(1, 4)
        budgets = valid_budgets(height, width, min_patch=min_patch, max_patch=max_patch)
        options = {"budget": rng.choice(budgets), "min_patch": min_patch, "max_patch": max_patch}
    elif method == "slic":
        height, width = rng.randint(1, 40), rng.randint(1, 40)
        options = {"budget": rng.randint(1, height * width)}
    else:
        height, width = rng.randint(2, 40), rng.randint(2, 40)
        options = {"budget": rng.choice((1, rng.randint(2, 60), None, "auto"))}
    return method, random_images(rng, batch, height, width), options


CASES = range(64)


@pytest.mark.parametrize("index", CASES)
def test_partition_invariants_hold_on_random_inputs(index: int) -> None:
    method, images, options = random_case(index)
    batch, _, height, width = images.shape
    part = adaptok.partition(images, method, **options)

    check_partition(part)  # ids 0..N-1 grouped by image, fields match labels, 4-connected
    assert part.labels.shape == (batch, height, width)
    assert part.counts.tolist() == [
        len(torch.unique(part.labels[b])) for b in range(batch)
    ]  # every image has its own regions, none empty
    counts = part.counts
    if method == "grid":
        patch = options["patch_size"]
        assert counts.tolist() == [(height // patch) * (width // patch)] * batch
        assert bool((part.area == patch * patch).all())
    elif method == "quadtree":
        assert counts.tolist() == [options["budget"]] * batch
        sides = part.box[:, 2:] - part.box[:, :2]
        assert bool((sides[:, 0] == sides[:, 1]).all())  # squares
        assert bool((part.area == sides[:, 0] ** 2).all())  # filled squares
    elif method == "dht" and isinstance(options["budget"], int):
        assert bool((counts <= options["budget"]).all())
    # The same images in float64 give the same partition (all four are deterministic in eval).
    again = adaptok.partition(images.double(), method, **options)
    assert torch.equal(again.labels, part.labels)


@pytest.mark.parametrize("index", [i for i in CASES if i % 4 != 3][:12])
def test_each_image_is_partitioned_independently_of_its_batch(index: int) -> None:
    method, images, options = random_case(index)
    part = adaptok.partition(images, method, **options)
    for b in range(images.shape[0]):
        alone = adaptok.partition(images[b : b + 1], method, **options)
        assert torch.equal(part.select([b]).labels, alone.labels)


@pytest.mark.parametrize("index", range(24))
def test_any_size_partition_covers_the_image_itself(index: int) -> None:
    # tokenize and vectorize partition images of any size: square-patch methods are padded and
    # cropped back, so the Partition must cover exactly H x W, invariants intact.
    rng = random.Random(1000 + index)
    method = ("grid", "quadtree", "slic")[index % 3]
    height, width = rng.randint(1, 70), rng.randint(1, 70)
    images = random_images(rng, rng.randint(1, 2), height, width)
    options: dict[str, object] = {
        "grid": {"patch_size": rng.choice((3, 8, 16))},
        "quadtree": {"budget": rng.choice((None, rng.randint(1, 40))), "min_patch": 4,
                     "max_patch": rng.choice((8, 16, 32))},
        "slic": {"budget": rng.randint(1, height * width)},
    }[method]  # fmt: skip
    if method == "quadtree":  # as tokenize and vectorize: the nearest valid budget
        options = with_nearest_budget(height, width, options)
    part = partition(images, method, **options)
    check_partition(part)
    assert part.labels.shape == (images.shape[0], height, width)
