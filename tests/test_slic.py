"""Tests for the SLIC baseline partitioner (adaptok.slic)."""

from __future__ import annotations

import pytest
import torch

import adaptok
from adaptok import AdaptokError
from adaptok.partitioners.slic import slic_partition
from adaptok.regions import check_partition


def test_invariants_and_count_near_budget(photos: torch.Tensor) -> None:
    counts = {}
    for budget in (40, 120):
        part = slic_partition(photos, budget=budget)
        check_partition(part)  # coverage, consistency, 4-connectivity
        counts[budget] = part.counts
        # SLIC's count is approximate (it tends to undershoot): within [budget / 2, 1.5 budget].
        assert bool(((2 * counts[budget] >= budget) & (counts[budget] <= 1.5 * budget)).all()), (
            budget,
            counts[budget],
        )
    assert bool((counts[120] > counts[40]).all())


def test_registry_equals_the_direct_call(photos: torch.Tensor) -> None:
    through_registry = adaptok.partition(photos, method="slic", budget=30, compactness=5.0)
    direct = slic_partition(photos, budget=30, compactness=5.0)
    assert torch.equal(through_registry.labels, direct.labels)
    assert not torch.equal(direct.labels, slic_partition(photos, budget=60).labels)


def test_batch_independence(photos: torch.Tensor) -> None:
    both = slic_partition(photos, budget=30)
    for b in range(2):
        single = slic_partition(photos[b : b + 1], budget=30)
        assert torch.equal(both.select([b]).labels, single.labels)


def test_grayscale_and_features_without_lab() -> None:
    gray = torch.rand(1, 1, 32, 40, generator=torch.Generator().manual_seed(0))
    part = slic_partition(gray, budget=12, compactness=0.1)
    check_partition(part)
    features = torch.randn(1, 5, 32, 40, generator=torch.Generator().manual_seed(1))
    check_partition(slic_partition(features, budget=12, compactness=1.0, lab=False))


def test_bad_input(photos: torch.Tensor) -> None:
    with pytest.raises(AdaptokError, match="budget"):
        slic_partition(photos, budget=0)
    with pytest.raises(AdaptokError, match="budget"):
        slic_partition(photos, budget=2.5)  # type: ignore[arg-type]
    with pytest.raises(AdaptokError, match="exceeds"):
        slic_partition(photos, budget=64 * 96 + 1)
    with pytest.raises(AdaptokError, match="compactness"):
        slic_partition(photos, compactness=0.0)
    with pytest.raises(AdaptokError, match=r"\[0, 1\]"):
        slic_partition(photos * 4 - 2)
    with pytest.raises(AdaptokError, match="RGB"):
        slic_partition(torch.rand(1, 2, 16, 16), lab=True)
    with pytest.raises(AdaptokError, match="unknown option"):
        adaptok.partition(photos, method="slic", n_segments=10)
    with pytest.raises(AdaptokError, match="B, C, H, W"):
        slic_partition(photos[0])


def test_budget_none_is_the_default_as_vectorize_documents(photos: torch.Tensor) -> None:
    # vectorize(..., budget=None) passes None on: "the token default for quadtree and slic"
    default = adaptok.partition(photos, "slic")
    assert torch.equal(adaptok.partition(photos, "slic", budget=None).labels, default.labels)
    svg = adaptok.vectorize(photos[:1], "slic", budget=None)
    assert svg.count("<path") <= default.counts[0]
