"""The dHT partitioner (adaptok.partitioners.dht): invariants, oracles, crafted images."""

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
    default_budget,
    dht_partition,
    information_criterion,
    load_default_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from adaptok.partitioners.dht import tokenizer as dht_tokenizer
from adaptok.partitioners.dht.budget import enforce_budget, region_adjacency
from adaptok.partitioners.dht.merge import (
    distinct_pairs,
    forest_components,
    group_boxes,
    join_across,
    link_vertices,
    pixel_graph,
    pool_vertices,
    sum_columns,
)
from adaptok.partitioners.grid import grid_partition
from adaptok.regions import check_partition
from adaptok.tokens import extract_squares
from conftest import assert_gradients_reach


def smooth_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random smooth colour images in [0, 1] (blobs, not white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 4), max(2, width // 4), generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (images + 0.03 * torch.rand(images.shape, generator=generator)).clamp(0, 1)


def tokenizer(**options: object) -> DHTTokenizer:
    torch.manual_seed(0)
    return DHTTokenizer(**options).eval()


def canonical(labels: torch.Tensor) -> torch.Tensor:
    """Renumber labels by first appearance, so equal partitions compare equal."""
    return Partition.from_labels(labels).labels


# ----------------------------------------------------------------------------------- oracles
def test_information_criterion_hand_computed_values_and_properties() -> None:
    variance = torch.tensor([[0.01, 0.2], [0.5, 0.03]], dtype=torch.float64)
    count = torch.tensor([4.0, 37.0], dtype=torch.float64)
    # Worked by hand from docs/design.md ("dHT", step 4), k = 1 / (2m - 2 sqrt m):
    # m = 4: k = 1/4; prod(2 pi s^2) = 0.0790, log(0.0790 + 5) = 1.6252, fit = 4/1000 * 1.6252.
    expected = {
        "aic": [-0.5065004235724154, -0.09603505174608061],
        "aicc": [-0.7337731508451427, -0.09694844809561617],
        "bic": [-0.3530740138523881, -0.12208715155323331],
        "cic": [-0.6030740138523881, -0.13825935971025216],
    }
    for criterion, values in expected.items():
        got = information_criterion(variance, count, 1000, criterion=criterion, iota=5.0)
        torch.testing.assert_close(got, torch.tensor(values, dtype=torch.float64))
    # Properties: more variance is worse; for m >= 8, bic and cic penalise more than aic.
    low, high = torch.full((1, 2), 0.01), torch.full((1, 2), 1.0)
    many = torch.tensor([64.0])
    assert information_criterion(low, many, 1000) > information_criterion(high, many, 1000)
    scores = {c: information_criterion(high, many, 1000, criterion=c) for c in expected}
    assert scores["bic"] < scores["aic"] and scores["cic"] < scores["bic"]
    # A single pixel has no variance estimate: never chosen.
    assert information_criterion(variance[:1], torch.ones(1), 1000).item() == -math.inf


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


def _slow_links(graph, self_edge) -> torch.Tensor:
    """Oracle of `link_vertices`: per vertex a loop over every edge, values rounded to 16 bits,
    ties to the largest neighbour; components by the general connected-components routine."""
    src, dst = graph.src.tolist(), graph.dst.tolist()
    value = torch.exp(-(graph.mean[graph.src] - graph.mean[graph.dst]).square().sum(-1))
    level = (value * 65535).round().long().tolist()
    oracle_src, oracle_dst = [], []
    for vertex in range(graph.num_vertices):
        best = None
        for edge, (a, b) in enumerate(zip(src, dst, strict=True)):
            if vertex in (a, b):
                key = (level[edge], b if a == vertex else a, edge)
                best = key if best is None or key[:2] > best[:2] else best
        if best is None:
            continue
        if self_edge is None or value[best[2]].item() > self_edge[vertex].item():
            oracle_src.append(vertex)
            oracle_dst.append(best[1])
    return connected_components(
        graph.num_vertices, torch.tensor(oracle_src), torch.tensor(oracle_dst, dtype=torch.long)
    )


@pytest.mark.parametrize("with_self_edge", [True, False])
def test_link_vertices_matches_slow_oracle(with_self_edge: bool) -> None:
    generator = torch.Generator().manual_seed(5)
    # Quantised features make many exact ties, the hard case for a deterministic tie-break.
    features = (torch.rand(1, 2, 6, 7, generator=generator) * 3).round() * 0.4
    graph = pixel_graph(features)
    self_edge = torch.rand(graph.num_vertices, generator=generator) * 0.5
    self_edge = self_edge if with_self_edge else None
    links = link_vertices(graph, self_edge)
    oracle = _slow_links(graph, self_edge)
    assert torch.equal(canonical(links.parent.view(1, 1, -1)), canonical(oracle.view(1, 1, -1)))
    assert bool((links.confidence >= 0.5).all()) and bool((links.confidence <= 1).all())
    if not with_self_edge:  # every pixel joins a neighbour: no region of one pixel
        assert int(torch.bincount(links.parent).min()) >= 2
    # The general (scatter) path on the same graph, without the pixel-grid shortcut, agrees.
    general = link_vertices(dataclasses.replace(graph, grid=None, edge_distance=None), self_edge)
    assert torch.equal(general.parent, links.parent)
    torch.testing.assert_close(general.confidence, links.confidence)


def test_flat_rectangle_is_one_component_at_the_first_level() -> None:
    """Ties on an exactly flat area chain it into one component (a first-of-left/right/up/down
    rule gave one strip per row); values equal up to float noise tie too."""
    features = torch.full((2, 8, 9, 13), 3.0)
    features[1, :, :, 6:] = 1.0  # two flat halves in the second image
    features[0] += 1e-7 * torch.rand(features[0].shape, generator=torch.Generator().manual_seed(0))
    links = link_vertices(pixel_graph(features), None)
    labels = links.parent.view(2, 9, 13)
    assert torch.unique(labels[0]).numel() == 1
    assert torch.unique(labels[1, :, :6]).numel() == 1
    assert torch.unique(labels[1, :, 6:]).numel() == 1
    assert links.num_parents == 3


def tied_pixel_graph(batch: int, height: int, width: int):
    """A pixel graph of quantised random features (many exact ties) and its explicit twin: the
    same vertices and edges with grid=None and every pixel's box (y, x, y + 1, x + 1), which
    the general (scatter) paths read instead of the grid."""
    generator = torch.Generator().manual_seed(height * width)
    features = (torch.rand(batch, 2, height, width, generator=generator) * 3).round() * 0.4
    graph = pixel_graph(features)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    corner = torch.stack([ys, xs], -1).view(1, -1, 2).expand(batch, -1, -1).reshape(-1, 2)
    explicit = dataclasses.replace(
        graph, grid=None, edge_distance=None, box=torch.cat([corner, corner + 1], 1)
    )
    return graph, explicit


@pytest.mark.parametrize("size", [(2, 2), (2, 9), (7, 5), (16, 23)])
def test_pixel_level_shortcuts_match_the_general_paths(size: tuple[int, int]) -> None:
    """The pixel level's grid shortcuts (dense links, edges and boxes read from the grid) give
    exactly what the general paths give on explicit edge and box arrays."""
    graph, explicit = tied_pixel_graph(2, *size)
    links = link_vertices(graph, None)
    general = link_vertices(explicit, None)
    assert torch.equal(links.parent, general.parent)
    assert torch.equal(links.neighbour, general.neighbour)
    for dedupe in (True, False):
        fast = pool_vertices(graph, links, dedupe=dedupe)
        slow = pool_vertices(explicit, links, dedupe=dedupe)
        for name in ("box", "image", "count"):
            assert torch.equal(getattr(fast, name), getattr(slow, name)), name
        torch.testing.assert_close(fast.mean, slow.mean)
        torch.testing.assert_close(fast.variance, slow.variance)
        fast_pairs = torch.stack([fast.src, fast.dst], 1).tolist()
        slow_pairs = torch.stack(
            [torch.minimum(slow.src, slow.dst), torch.maximum(slow.src, slow.dst)], 1
        ).tolist()
        if dedupe:  # both sorted, each adjacent pair once
            assert fast_pairs == slow_pairs
        else:  # every boundary crossing once, in either order
            assert sorted(map(sorted, fast_pairs)) == sorted(slow_pairs)
    # Compactness needs every pixel's box: the pixel level reads it from the grid.
    compact = link_vertices(graph, None, compactness=0.3)
    assert torch.equal(compact.parent, link_vertices(explicit, None, compactness=0.3).parent)


def test_join_across_matches_components_of_the_whole_level() -> None:
    """Joining over the touched components only numbers the groups as connected components of
    all of them would (in order of each group's smallest former component)."""
    graph, _ = tied_pixel_graph(2, 13, 17)
    links = link_vertices(graph, None)
    for seed, share in itertools.product(range(3), (0.02, 0.3, 1.0)):
        generator = torch.Generator().manual_seed(seed)
        joined = torch.rand(graph.src.shape, generator=generator) < share
        ends = links.parent[graph.src[joined]], links.parent[graph.dst[joined]]
        expected = connected_components(links.num_parents, *ends).index_select(0, links.parent)
        result = join_across(links, graph, joined)
        assert torch.equal(result.parent, expected)
        assert result.num_parents == int(expected.max()) + 1


@pytest.mark.parametrize("size", [7, 46341, 65536, 10**6])
def test_distinct_pairs_match_a_set(size: int) -> None:
    """Sorted distinct unordered pairs of 64- or 32-bit ids, with 32-bit keys (size² fits) or
    64-bit ones."""
    generator = torch.Generator().manual_seed(size)
    first = torch.randint(0, size, (500,), generator=generator)
    first[:3] = torch.tensor([0, size - 1, size - 2])
    second = (first + torch.randint(1, min(size, 40), (500,), generator=generator)) % size
    second[:3] = torch.tensor([size - 1, 0, size - 1])
    pairs = zip(first.tolist(), second.tolist(), strict=True)
    expected = sorted({(min(a, b), max(a, b)) for a, b in pairs})
    for ids in (torch.int64, torch.int32):
        low, high = distinct_pairs(first.to(ids), second.to(ids), size)
        assert list(zip(low.tolist(), high.tolist(), strict=True)) == expected
        assert low.dtype == high.dtype == torch.int64


def test_pooled_sums_are_the_bits_of_index_add() -> None:
    """Column-wise scatters add each group's members in index order, as index_add of whole rows
    does: the same bits (partitions depend on them), and the same gradient."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(5000, 7, generator=generator).exp().requires_grad_(True)
    group = torch.randint(0, 300, (5000,), generator=generator)
    expected = rows.new_zeros(300, 7).index_add(0, group, rows)
    result = sum_columns(rows.t().contiguous(), group, 300)
    assert torch.equal(result, expected)
    weight = torch.randn(300, 7, generator=generator)
    (first,) = torch.autograd.grad((expected * weight).sum(), rows)
    (second,) = torch.autograd.grad((result * weight).sum(), rows)
    assert torch.equal(first, second)


def test_group_boxes_match_a_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    corner = torch.randint(0, 50, (400, 2), generator=generator)
    box = torch.cat([corner, corner + torch.randint(1, 9, (400, 2), generator=generator)], 1)
    group = torch.randint(0, 30, (400,), generator=generator)
    group[:30] = torch.arange(30)  # every group non-empty
    result = group_boxes(box, group, 30)
    for index in range(30):
        members = box[group == index]
        expected = [*members[:, :2].amin(0).tolist(), *members[:, 2:].amax(0).tolist()]
        assert result[index].tolist() == expected


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


def test_replayed_log_weights_match_statistics_pooled_from_pixels() -> None:
    """The differentiable replay of the merges (values and gradients) against an oracle that
    pools every level's statistics straight from the pixels, in float64. The second image is a
    disc on a flat ground, whose flat pixels are joined into one atom across links."""
    model = load_default_tokenizer().double()
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(26.0), indexing="ij")
    disc = ((ys - 14) ** 2 + (xs - 11) ** 2).sqrt().sub(7).clamp(0, 1)
    on_flat = torch.lerp(
        torch.tensor([0.8, 0.3, 0.2]), torch.tensor([0.1, 0.2, 0.6]), disc[..., None]
    )
    images = torch.cat([smooth_images(1, 30, 26, seed=8), on_flat.permute(2, 0, 1)[None]]).double()
    features = model._features(images)
    tree = model._hierarchy(images, features.detach(), "aicc", model.min_width)
    assert len(tree.merges) >= 3
    ground = tree.atom_of_pixel.view(2, -1)[1][(disc == 1).flatten()]
    assert torch.unique(ground).numel() == 1
    replay = model._log_weights(features, tree)
    pixel_features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    log_weight = pixel_features.new_zeros(tree.atoms.num_vertices)
    selected = log_weight
    for merge, vertex in zip(tree.merges, tree.levels, strict=False):
        of_pixel = vertex[tree.atom_of_pixel]
        size = merge.graph.num_vertices
        count = torch.bincount(of_pixel, minlength=size).double()[:, None]
        mean = pixel_features.new_zeros(size, features.shape[1]).index_add(
            0, of_pixel, pixel_features
        )
        mean = mean / count
        square = pixel_features.new_zeros(mean.shape).index_add(0, of_pixel, pixel_features**2)
        variance = (square / count - mean**2).clamp(min=0)
        neighbour = merge.links.neighbour
        value = torch.exp(-(mean - mean[neighbour]).square().sum(-1))
        value = torch.where(neighbour != torch.arange(size), value, 0.0)
        self_edge = torch.sigmoid(model.self_edge(variance)).squeeze(-1)
        confidence = torch.maximum(value, self_edge) / (value + self_edge)
        confidence = torch.where(merge.must_join, 1 - self_edge / 2, confidence)
        log_weight = log_weight + torch.log(confidence)[vertex]
        selected = torch.where(merge.better, log_weight, selected)
    oracle = torch.where(tree.whole_better, log_weight, selected)
    torch.testing.assert_close(replay, oracle, rtol=1e-9, atol=1e-9)
    # Without gradient the no-gradient pass's own confidences give the very same values.
    with torch.no_grad():
        assert torch.equal(model._log_weights(features, tree), replay.detach())
    weights = torch.randn(
        replay.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    (got,) = torch.autograd.grad((replay * weights).sum(), features)
    (want,) = torch.autograd.grad((oracle * weights).sum(), features)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_chunked_batch_matches_one_pass(monkeypatch) -> None:
    """On CPU a batch runs in chunks of whole images: partitions, values and gradients are those
    of one pass over the whole batch."""
    images = torch.cat([smooth_images(4, 24, 20, seed=9), torch.full((1, 3, 24, 20), 0.3)])
    runs = []
    for chunk_pixels in (1 << 30, 2 * 24 * 20):
        monkeypatch.setattr(dht_tokenizer, "CHUNK_PIXELS", chunk_pixels)
        model = load_default_tokenizer().train()
        result = model(images, budget=15, sample_budget=False)
        (result.pixels * torch.linspace(-1, 1, 20)).sum().backward()
        grads = [parameter.grad for parameter in model.parameters()]
        partition = model.partition(images, budget=15, sample_budget=False)
        runs.append((result, grads, partition))
    (whole, whole_grads, whole_part), (chunked, chunked_grads, chunked_part) = runs
    assert torch.equal(whole.partition.labels, chunked.partition.labels)
    assert torch.equal(whole_part.labels, chunked_part.labels)
    assert torch.equal(whole.partition.labels, whole_part.labels)
    # The encoder's convolutions may block a smaller batch differently (float rounding).
    torch.testing.assert_close(whole.pixels, chunked.pixels)
    torch.testing.assert_close(whole.region_features, chunked.region_features)
    assert torch.equal(whole.selection, chunked.selection)
    for want, got in zip(whole_grads, chunked_grads, strict=True):
        torch.testing.assert_close(got, want)
    for finer, coarser in itertools.pairwise(chunked.levels):
        pairs = torch.unique(finer.flatten() * 10**6 + coarser.flatten())
        assert pairs.numel() == torch.unique(finer).numel()


# ---------------------------------------------------------------------------- crafted images
def crafted(kind: str, height: int, width: int) -> torch.Tensor:
    """[3, H, W] flat colours: one, two halves, four quadrants or a 16-px checkerboard."""
    colours = torch.tensor([[0.2, 0.5, 0.7], [0.9, 0.3, 0.1], [0.1, 0.1, 0.6], [0.6, 0.8, 0.2]])
    ys = torch.arange(height).view(height, 1).expand(height, width)
    xs = torch.arange(width).view(1, width).expand(height, width)
    index = {
        "flat": torch.zeros_like(ys),
        "halves": (xs >= width // 2).long(),
        "quadrants": (xs >= width // 2).long() + 2 * (ys >= height // 2).long(),
        "checkerboard": (ys // 16 + xs // 16) % 2,
    }[kind]
    return colours[index].permute(2, 0, 1)


def expected_regions(kind: str, height: int, width: int) -> int:
    squares = math.ceil(height / 16) * math.ceil(width / 16)
    return {"flat": 1, "halves": 2, "quadrants": 4, "checkerboard": squares}[kind]


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (333, 517)])
def test_flat_colours_give_one_region_each_without_a_cap(size: tuple[int, int]) -> None:
    """The public default path: every flat area is one region, at any size and in one batch."""
    kinds = ("flat", "halves", "quadrants", "checkerboard")
    images = torch.stack([crafted(kind, *size) for kind in kinds])
    together = adaptok.partition(images, method="dht", budget=None)
    check_partition(together)
    assert together.counts.tolist() == [expected_regions(kind, *size) for kind in kinds]
    # Every region is one flat colour: no region crosses a colour edge.
    colour = (images * 10).round().long()
    colour = (colour[:, 0] * 100 + colour[:, 1] * 10 + colour[:, 2]).flatten()
    pairs = torch.unique(together.labels.flatten() * 1000 + colour)
    assert pairs.numel() == together.num_regions
    alone = adaptok.partition(images[1:2], method="dht", budget=None)
    assert torch.equal(together.select([1]).labels, canonical(alone.labels))


@pytest.mark.parametrize("criterion", ["aicc", "aic", "bic", "cic"])
def test_two_flat_halves_are_two_regions(criterion: str) -> None:
    images = crafted("halves", 24, 32)[None]
    part = dht_partition(images, budget=None, criterion=criterion)
    assert part.num_regions == 2
    assert torch.equal(part.labels[0, :, :16], torch.zeros(24, 16, dtype=torch.long))
    assert torch.equal(part.labels[0, :, 16:], torch.ones(24, 16, dtype=torch.long))


def test_region_count_rises_with_complexity() -> None:
    """Without a cap: flat < smooth gradient < photo < white noise."""
    size = 96
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    gradient = torch.stack([ys, xs, (ys + xs) / 2])
    noise = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    images = torch.stack([crafted("flat", size, size), gradient, sample_image(size)[0], noise])
    counts = adaptok.partition(images, method="dht", budget=None).counts.tolist()
    assert counts[0] == 1
    assert counts[0] < counts[1] < counts[2] < counts[3], counts


def test_no_region_is_thinner_than_min_width() -> None:
    """Blurred edges (ramps) used to become one-pixel strips along every contour."""
    images = smooth_images(2, 48, 40, seed=9)
    disc = (torch.linspace(-1, 1, 48).view(-1, 1) ** 2 + torch.linspace(-1, 1, 40) ** 2) < 0.4
    images[1] = F.avg_pool2d(disc.float()[None].expand(3, -1, -1), 5, 1, 2)
    for budget in (None, 30):
        part = adaptok.partition(images, method="dht", budget=budget)
        sides = part.box[:, 2:] - part.box[:, :2]
        assert int(sides.min()) >= 3
    plain = tokenizer(min_width=0).partition(images, budget=None)
    sides = plain.box[:, 2:] - plain.box[:, :2]
    assert int(sides.min()) < 3  # the rule is what removes them
    # A call's min_width overrides the tokenizer's: the same partition as a tokenizer built so.
    called = tokenizer().partition(images, budget=None, min_width=0)
    assert torch.equal(called.labels, plain.labels)
    thin = adaptok.partition(images, method="dht", budget=None, min_width=0)
    assert int((thin.box[:, 2:] - thin.box[:, :2]).min()) < 3
    for bad in (-1, float("nan"), "3", True):
        with pytest.raises(AdaptokError, match="min_width must be a number >= 0"):
            adaptok.partition(images, method="dht", min_width=bad)


def test_budget_contract() -> None:
    """ "auto" caps at round(sqrt(H*W)/0.56), None does not cap, an int caps at that many."""
    images = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    uncapped = adaptok.partition(images, method="dht", budget=None)
    assert int(uncapped.counts.min()) > default_budget(96, 96)
    auto = adaptok.partition(images, method="dht")
    assert auto.counts.tolist() == [default_budget(96, 96)] * 2
    assert torch.equal(auto.labels, adaptok.partition(images, method="dht", budget="auto").labels)
    huge = adaptok.partition(images, method="dht", budget=10**6)
    assert torch.equal(huge.labels, uncapped.labels)
    assert adaptok.partition(images, method="dht", budget=7).counts.tolist() == [7, 7]


def test_noisy_half_is_not_merged_with_flat_half() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.full((1, 3, 32, 32), 0.85)
    images[..., :16] = 0.2 + 0.15 * torch.rand(1, 3, 32, 16, generator=generator)
    part = adaptok.partition(images, method="dht", budget=None)
    assert torch.unique(part.labels[0, :, 16:]).numel() == 1  # the flat half is one region
    left = set(part.labels[0, :, :16].unique().tolist())
    right = set(part.labels[0, :, 16:].unique().tolist())
    assert not left & right


def test_more_penalty_gives_fewer_regions() -> None:
    images = sample_image(64)
    model = tokenizer()
    counts = {
        name: model.partition(images, budget=None, criterion=name).num_regions
        for name in ("aic", "aicc", "bic", "cic")
    }
    # Penalties for m >= 8: aic < bic < cic and aic < aicc; the penalty falls with region size,
    # so a larger penalty favours larger regions.
    assert counts["cic"] <= counts["bic"] <= counts["aic"]
    assert counts["cic"] < counts["aic"]
    assert counts["aicc"] <= counts["aic"]


# --------------------------------------------------------------------------------- gradients
def test_gradient_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = DHTTokenizer().train()
    images = smooth_images(2, 32, 32, seed=6)
    result = model(images, budget=30, generator=torch.Generator().manual_seed(0))
    grid = grid_partition(images, patch_size=8)
    tokens = extract_squares(result.pixels, grid, 4)
    loss = tokens.square().mean()
    loss.backward()
    assert_gradients_reach(model)


@pytest.mark.parametrize("weights", ["fresh", "default"])
def test_constant_image_gives_constant_features(weights: str) -> None:
    model = tokenizer() if weights == "fresh" else load_default_tokenizer()
    for size in ((2, 2), (7, 5), (33, 64)):
        with torch.no_grad():
            features = model.encoder(torch.full((1, 3, *size), 0.37))
        expected = features[:, :, :1, :1].expand_as(features)
        torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)


def test_a_coarse_branch_that_is_off_is_skipped_without_changing_the_features() -> None:
    """The bundled encoder's coarse branch adds exactly zero: without gradient it is not computed
    (a third of the encoder's time), with gradient it is (its last convolution may learn)."""
    model = load_default_tokenizer()
    assert model.encoder.coarse_is_off()
    images = smooth_images(2, 30, 22, seed=2)
    with torch.no_grad():
        skipped = model.encoder(images)
    computed = model.encoder(images)
    assert computed.requires_grad
    assert torch.equal(skipped, computed.detach())


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
        (torch.rand(1, 3, 8, 8), {"budget": "none"}, "None \\(no cap\\)"),
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
    with pytest.raises(TypeError, match="gradient"):  # the unread gradient module is gone
        DHTTokenizer(gradient=True)
    with pytest.raises(AdaptokError, match="min_width"):
        DHTTokenizer(min_width=-1)
    with pytest.raises(AdaptokError, match="unknown option"):
        adaptok.partition(torch.rand(1, 3, 8, 8), method="dht", budgt=3)
