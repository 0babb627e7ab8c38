"""Tests of the dHT partitioner (adaptok.dht): invariants, oracles, crafted images, gradients."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import adaptok
from adaptok import AdaptokError, Partition
from adaptok.graph import connected_components
from adaptok.io import sample_image
from adaptok.partitioners.dht import (
    DHTTokenizer,
    dht_partition,
    information_criterion,
    load_default_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from adaptok.partitioners.dht.budget import enforce_budget, region_adjacency
from adaptok.partitioners.dht.merge import forest_components, link_vertices, pixel_graph
from adaptok.partitioners.grid import grid_partition
from adaptok.regions import check_partition
from adaptok.tokens import extract_squares


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random smooth colour images in [0, 1] (blobs, not white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 4), max(2, width // 4), generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (images + 0.03 * torch.rand(images.shape, generator=generator)).clamp(0, 1)


def tokenizer(**options: object) -> DHTTokenizer:
    torch.manual_seed(0)
    return DHTTokenizer(**options).eval()


def colour_tokenizer(**options: object) -> DHTTokenizer:
    """A tokenizer whose features are the scaled colour only (coarse branch off): crafted-image
    tests then see the hierarchy and the criterion, not the encoder's blur across edges."""
    model = tokenizer(**options)
    with torch.no_grad():
        model.encoder.down2.weight.zero_()
    return model


def canonical(labels: torch.Tensor) -> torch.Tensor:
    """Renumber labels by first appearance, so equal partitions compare equal."""
    return Partition.from_labels(labels).labels


# ----------------------------------------------------------------------------------- oracles
def test_information_criterion_matches_formula() -> None:
    variance = torch.tensor([[0.01, 0.2], [0.5, 0.03], [0.0, 0.0]], dtype=torch.float64)
    count = torch.tensor([4.0, 37.0, 300.0], dtype=torch.float64)
    n, iota = 1000, 5.0
    for criterion in ("aic", "aicc", "bic", "cic"):
        got = information_criterion(variance, count, n, criterion=criterion, iota=iota)
        for i in range(3):
            m = count[i].item()
            k = 1 / (2 * m - 2 * math.sqrt(m))
            penalty = {
                "aic": 2 * k,
                "bic": k * math.log(m),
                "cic": k * (math.log(m) + 1),
                "aicc": 2 * k + 2 * (k * k + k) / (m - k - 1),
            }[criterion]
            product = math.prod(2 * math.pi * v for v in variance[i].tolist())
            expected = -(m / n * math.log(product + iota) + penalty)
            assert got[i].item() == pytest.approx(expected, rel=1e-9)
    single = information_criterion(variance[:1], torch.ones(1), n)
    assert single.item() == -math.inf


def test_forest_components_match_connected_components() -> None:
    generator = torch.Generator().manual_seed(3)
    size = 300
    # Each vertex points to a smaller vertex or itself, plus some mutual pairs.
    target = (torch.rand(size, generator=generator) * torch.arange(size)).long()
    target[::7] = torch.arange(0, size, 7)
    pairs = torch.arange(1, size - 1, 11)
    target[pairs] = pairs + 1
    target[pairs + 1] = pairs
    parent, count = forest_components(target)
    oracle = connected_components(size, torch.arange(size), target)
    assert count == int(oracle.max()) + 1
    assert torch.equal(canonical(parent.view(1, 1, -1)), canonical(oracle.view(1, 1, -1)))


def test_link_vertices_matches_slow_oracle() -> None:
    generator = torch.Generator().manual_seed(5)
    # Quantised features make many exact ties, the hard case for a deterministic tie-break.
    features = (torch.rand(1, 2, 6, 7, generator=generator) * 3).round() * 0.4
    graph = pixel_graph(features)
    self_edge = torch.rand(graph.num_vertices, generator=generator) * 0.5
    links = link_vertices(graph, self_edge)
    src, dst = graph.src.tolist(), graph.dst.tolist()
    value = torch.exp(-(graph.mean[graph.src] - graph.mean[graph.dst]).square().sum(-1)).tolist()
    oracle_src, oracle_dst = [], []
    for vertex in range(graph.num_vertices):
        best, best_edge = -1.0, None
        for edge, (a, b) in enumerate(zip(src, dst, strict=True)):
            if vertex in (a, b) and value[edge] > best:  # first edge wins ties
                best, best_edge = value[edge], edge
        if best_edge is not None and best > self_edge[vertex].item():
            oracle_src.append(vertex)
            oracle_dst.append(dst[best_edge] if src[best_edge] == vertex else src[best_edge])
    oracle = connected_components(
        graph.num_vertices, torch.tensor(oracle_src), torch.tensor(oracle_dst)
    )
    assert torch.equal(canonical(links.parent.view(1, 1, -1)), canonical(oracle.view(1, 1, -1)))
    assert bool((links.confidence >= 0.5).all()) and bool((links.confidence <= 1).all())
    # The general (scatter) path on the same graph, without the pixel-grid shortcut, agrees.
    general = link_vertices(dataclasses.replace(graph, grid=None, edge_distance=None), self_edge)
    assert torch.equal(general.parent, links.parent)
    torch.testing.assert_close(general.confidence, links.confidence)


def test_enforce_budget_keeps_groups_connected_and_exact() -> None:
    labels = torch.arange(36).view(1, 6, 6) // 2  # 18 regions of 2 pixels
    labels = torch.cat([labels, labels + 18])  # two images
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(36, 3, generator=generator)
    area = torch.full((36,), 2)
    image = torch.arange(36) // 18
    low, high = region_adjacency(labels)
    for random in (False, True):
        group = enforce_budget(
            area, image, features, low, high, 4, generator=generator, random=random
        )
        merged = Partition.from_labels(group[labels])
        check_partition(merged)
        assert merged.counts.tolist() == [4, 4]


# ------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("size", [(2, 2), (3, 7), (17, 9), (31, 26)])
def test_any_size_gives_a_valid_partition(size: tuple[int, int]) -> None:
    images = smooth_images(2, *size)
    result = tokenizer()(images)
    check_partition(result.partition)
    assert result.pixels.shape == images.shape
    assert result.features.shape == (2, 8, *size)
    assert result.region_features.shape == (result.partition.num_regions, 8)
    assert result.region_colors.shape == (result.partition.num_regions, 3)
    budget = max(1, round(math.sqrt(size[0] * size[1]) / 0.56))
    assert int(result.partition.counts.max()) <= budget


@pytest.mark.parametrize(
    "options", [{"compactness": 0.2}, {"pooling": "similarity"}, {"compare": "total"}]
)
def test_options_give_valid_partitions_and_gradients(options: dict) -> None:
    model = tokenizer(**options)
    images = smooth_images(2, 29, 21, seed=8)
    result = model(images, budget=25)
    check_partition(result.partition)
    assert int(result.partition.counts.max()) <= 25
    result.pixels.square().mean().backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_budget_is_exact_up_to_the_regions_found() -> None:
    images = smooth_images(2, 24, 20, seed=1)
    model = tokenizer()
    for budget in (1, 5, 17):
        result = model(images, budget=budget)
        check_partition(result.partition)
        found = torch.bincount(Partition.from_labels(result.selection).batch_index, minlength=2)
        assert result.partition.counts.tolist() == found.clamp(max=budget).tolist()
        # Budget merging only joins whole selected regions.
        pairs = torch.unique(result.selection.flatten() * 10**6 + result.partition.labels.flatten())
        assert pairs.numel() == int(result.selection.max()) + 1


def test_training_budget_is_random_but_seeded() -> None:
    images = smooth_images(1, 32, 32, seed=2)
    model = tokenizer().train()
    first = model(images, budget=6, generator=torch.Generator().manual_seed(1)).partition
    again = model(images, budget=6, generator=torch.Generator().manual_seed(1)).partition
    check_partition(first)
    assert first.counts.tolist() == [6]
    assert torch.equal(first.labels, again.labels)
    others = [
        model(images, budget=6, generator=torch.Generator().manual_seed(s)).partition.labels
        for s in range(2, 7)
    ]
    assert any(not torch.equal(first.labels, other) for other in others)


def test_deterministic_in_eval() -> None:
    images = smooth_images(2, 30, 22, seed=3)
    model = tokenizer()
    first, second = model(images, budget=12), model(images, budget=12)
    assert torch.equal(first.partition.labels, second.partition.labels)
    assert torch.equal(first.pixels, second.pixels)


def test_batch_independence() -> None:
    images = smooth_images(3, 27, 33, seed=4)
    model = tokenizer()
    together = model(images, budget=20)
    for index in range(3):
        alone = model(images[index : index + 1], budget=20)
        assert torch.equal(
            together.partition.select([index]).labels, canonical(alone.partition.labels)
        )
        torch.testing.assert_close(together.pixels[index], alone.pixels[0])


def test_hierarchy_is_nested() -> None:
    images = smooth_images(2, 32, 32, seed=5)
    result = tokenizer()(images)
    levels = result.levels
    assert len(levels) >= 2
    for finer, coarser in itertools.pairwise(levels):
        pairs = torch.unique(finer.flatten() * 10**6 + coarser.flatten())
        assert pairs.numel() == torch.unique(finer).numel()  # each finer region in one coarser
        assert torch.unique(coarser).numel() <= torch.unique(finer).numel()
    # Selected regions are unions of level-1 regions.
    pairs = torch.unique(levels[0].flatten() * 10**6 + result.selection.flatten())
    assert pairs.numel() == torch.unique(levels[0]).numel()


# ---------------------------------------------------------------------------- crafted images
@pytest.mark.parametrize("criterion", ["aicc", "aic", "bic", "cic"])
def test_two_flat_halves_are_two_regions(criterion: str) -> None:
    images = torch.zeros(1, 3, 24, 32)
    images[..., :16] = 0.2
    images[..., 16:] = 0.8
    part = colour_tokenizer(compare="total").partition(images, criterion=criterion)
    assert part.num_regions == 2
    assert torch.equal(part.labels[0, :, :16], torch.zeros(24, 16, dtype=torch.long))
    assert torch.equal(part.labels[0, :, 16:], torch.ones(24, 16, dtype=torch.long))


@pytest.mark.parametrize("compare", ["each", "total"])
def test_noisy_half_is_not_merged_with_flat_half(compare: str) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.full((1, 3, 32, 32), 0.85)
    images[..., :16] = 0.2 + 0.15 * torch.rand(1, 3, 32, 16, generator=generator)
    part = colour_tokenizer(compare=compare).partition(images, budget=10**4)
    left = set(part.labels[0, :, :16].unique().tolist())
    right = set(part.labels[0, :, 16:].unique().tolist())
    assert not left & right


def test_more_penalty_gives_fewer_regions() -> None:
    images = sample_image(64)
    model = tokenizer()
    counts = {
        name: model.partition(images, budget=10**4, criterion=name).num_regions
        for name in ("aic", "aicc", "bic", "cic")
    }
    # Penalties for m >= 8: aic < bic < cic and aic < aicc; the penalty falls with region size,
    # so a larger penalty favours larger regions.
    assert counts["cic"] <= counts["bic"] < counts["aic"]
    assert counts["aicc"] <= counts["aic"]


# --------------------------------------------------------------------------------- gradients
def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = DHTTokenizer(gradient=True).train()
    images = smooth_images(2, 32, 32, seed=6)
    result = model(images, budget=30, generator=torch.Generator().manual_seed(0))
    grid = grid_partition(images, patch_size=8)
    tokens = extract_squares(result.pixels, grid, 4)
    loss = tokens.square().mean() + result.gradient.square().mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert float(parameter.grad.abs().sum()) > 0, name


def test_function_and_module_agree() -> None:
    images = smooth_images(2, 20, 28, seed=7)
    model = tokenizer()
    from_module = model(images, budget=15).partition
    from_function = dht_partition(images, budget=15, tokenizer=model)
    assert torch.equal(from_module.labels, from_function.labels)


# ------------------------------------------------------------------------ default weights
def test_default_weights_work_through_the_registry() -> None:
    images = sample_image(48)
    part = adaptok.partition(images, method="dht", budget=40)
    check_partition(part)
    assert int(part.counts.max()) <= 40
    again = dht_partition(images, budget=40)
    assert torch.equal(part.labels, again.labels)
    gray = dht_partition(images.mean(1, keepdim=True))
    check_partition(gray)


def test_default_weights_make_injection_an_identity() -> None:
    images = sample_image(64)
    with torch.no_grad():
        result = load_default_tokenizer()(images)
    error = (result.pixels - images).abs().mean()
    baseline = (result.partition.mean_image(images) - images).abs().mean()
    # x + (W f̄_S - x̄_S) stays within about a gray level of x, far below the mean-colour error.
    assert error < 0.01
    assert error < 0.6 * baseline


def test_imagenet_input_space_matches_unit() -> None:
    images = sample_image(40)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    unit = load_default_tokenizer()
    imagenet = load_default_tokenizer(input_space="imagenet")
    with torch.no_grad():
        a = unit(images)
        b = imagenet((images - mean) / std)
    assert torch.equal(a.partition.labels, b.partition.labels)
    torch.testing.assert_close((a.pixels - mean) / std, b.pixels, atol=1e-4, rtol=1e-4)


def test_save_and_load_round_trip(tmp_path) -> None:
    model = tokenizer(criterion="bic", iota=3.0)
    path = tmp_path / "dht.pt"
    save_tokenizer(model, str(path), info="test")
    loaded = load_tokenizer(str(path))
    images = smooth_images(1, 16, 16)
    assert loaded.criterion == "bic" and loaded.iota == 3.0
    assert torch.equal(loaded.partition(images).labels, model.partition(images).labels)


# -------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("images", "options", "match"),
    [
        (torch.rand(3, 8, 8), {}, "B, C, H, W"),
        (torch.randint(0, 255, (1, 3, 8, 8)), {}, "floating-point"),
        (torch.full((1, 3, 8, 8), float("nan")), {}, "NaN"),
        (torch.rand(1, 3, 1, 1), {}, "too small"),
        (torch.rand(1, 3, 1, 9), {}, "too small"),
        (torch.rand(1, 5, 8, 8), {}, "3-channel"),
        (torch.rand(1, 3, 8, 8), {"budget": 0}, "at least 1"),
        (torch.rand(1, 3, 8, 8), {"budget": 2.5}, "positive int"),
        (torch.rand(1, 3, 8, 8), {"budget": True}, "positive int"),
        (torch.rand(1, 3, 8, 8), {"criterion": "mdl"}, "aicc"),
    ],
)
def test_bad_input_raises(images: torch.Tensor, options: dict, match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        tokenizer()(images, **options)
    with pytest.raises(AdaptokError, match=match):
        dht_partition(images, tokenizer=tokenizer(), **options)


def test_bad_configuration_raises() -> None:
    with pytest.raises(AdaptokError, match="aicc"):
        DHTTokenizer(criterion="hqic")
    with pytest.raises(AdaptokError, match="pooling"):
        DHTTokenizer(pooling="max")
    with pytest.raises(AdaptokError, match="input_space"):
        DHTTokenizer(input_space="0-255")
    with pytest.raises(AdaptokError, match="unknown option"):
        adaptok.partition(torch.rand(1, 3, 8, 8), method="dht", budgt=3)
