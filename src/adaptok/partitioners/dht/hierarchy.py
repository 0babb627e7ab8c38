"""The dHT merge tree: merge levels above the pixel graph, and the region each atom selects.

`build_hierarchy` links pixels into level-1 regions ("atoms": exactly flat areas joined, no
self-edge at the pixel level), then merges level after level with the learned self-edge, and
scores every region of every level with the information criterion, the whole image the last
candidate (docs/design.md, "dHT", steps 2-5). It runs without gradient: every choice is discrete.
`log_weights` replays the merges with gradient, reusing those choices, for the mean injection.
Turning the selection into a Partition is `selection.py`'s work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor

from .criteria import information_criterion
from .merge import (
    Links,
    RegionGraph,
    channel_major,
    flat_edges,
    join_across,
    link_confidence,
    link_vertices,
    pixel_graph,
    pool_statistics,
    pool_vertices,
)

__all__ = ["Hierarchy", "Merge", "build_hierarchy", "is_thin", "log_weights"]

# [V, d] feature variances of a level's vertices -> [V] self-edge values (the tokenizer's
# learned projection, `DHTTokenizer._self_edge_of`).
SelfEdge = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Merge:
    """One merge above the pixel level, as the differentiable replay needs it.

    Attributes:
        graph: the level that linked (no gradient; its mean and variance are recomputed with
            gradient by the replay, its counts and boxes are read as they are; no edges).
        links: the links it made (parent and neighbour are what the replay reuses).
        must_join: [V] bool vertices made to join, or None.
        better: [A] bool atoms whose selection moved to the level this merge made.
    """

    graph: RegionGraph
    links: Links
    must_join: Tensor | None
    better: Tensor


@dataclass(frozen=True)
class Hierarchy:
    """The merge levels and the selection, tracked per level-1 region ("atom").

    Built without gradient by `build_hierarchy`; `log_weights` replays the merges with gradient.

    Attributes:
        atom_of_pixel: [P] int64 atom of every pixel (P = B*H*W).
        pixel_links: the links of the pixel level (every pixel joins a neighbour).
        grid: (B, H, W).
        atoms: the level-1 RegionGraph (A vertices).
        selected: [A] int64 selection key (equal keys = the same selected region).
        levels: one [A] int64 vertex map per level (level 1 first).
        merges: the merges above the pixel level, one per level after the first.
        whole_better: [A] bool atoms whose selection is the whole image.
    """

    atom_of_pixel: Tensor
    pixel_links: Links
    grid: tuple[int, int, int]
    atoms: RegionGraph
    selected: Tensor
    levels: tuple[Tensor, ...]
    merges: tuple[Merge, ...]
    whole_better: Tensor


def is_thin(count: Tensor, box: Tensor, min_width: float) -> Tensor:
    """[V] bool: regions thinner than `min_width` (pixel count over the longer side of the box).

    Args:
        count: [V] pixel count of every region.
        box: [V, 4] int64 bounding box (y0, x0, y1, x1), end-exclusive.
        min_width: the width in pixels.
    """
    side = (box[:, 2:] - box[:, :2]).amax(1).to(count.dtype)
    return count < min_width * side


def region_ic(
    graph: RegionGraph,
    pixels_per_image: int,
    *,
    criterion: str,
    iota: float,
    variance_scale: float,
    min_width: float,
) -> Tensor:
    """[V] IC of every vertex; -inf for regions thinner than `min_width`: a one- or two-pixel
    strip along an edge has no variance, so the criterion would keep it, and such strips are
    tokens a ViT wastes (docs/design.md, "dHT", step 5)."""
    ic = information_criterion(
        graph.variance.detach() / variance_scale,
        graph.count,
        pixels_per_image,
        criterion=criterion,
        iota=iota,
    )
    if min_width <= 0:  # no region is thinner than nothing
        return ic
    return torch.where(is_thin(graph.count, graph.box, min_width), -math.inf, ic)


def whole_image_ic(
    atoms: RegionGraph,
    batch: int,
    pixels_per_image: int,
    *,
    criterion: str,
    iota: float,
    variance_scale: float,
) -> Tensor:
    """[B] IC of every image scored as one region (the last candidate of the hierarchy)."""
    dim = atoms.mean.shape[1]
    mean, variance = atoms.mean.detach(), atoms.variance.detach()
    # Rows into B sums: here index_add of whole rows is the fast form (column scatters into
    # a few bins wait on each other's adds).
    moments = torch.cat(
        [
            atoms.count[:, None],
            atoms.count[:, None] * mean,
            atoms.count[:, None] * (variance + mean.square()),
        ],
        1,
    )
    sums = moments.new_zeros(batch, moments.shape[1]).index_add(0, atoms.image, moments)
    count = sums[:, 0]
    image_mean = sums[:, 1 : 1 + dim] / count[:, None]
    image_variance = (sums[:, 1 + dim :] / count[:, None] - image_mean.square()).clamp(min=0)
    return information_criterion(
        image_variance / variance_scale,
        count,
        pixels_per_image,
        criterion=criterion,
        iota=iota,
    )


def build_hierarchy(
    images: Tensor,
    features: Tensor,
    *,
    self_edge: SelfEdge,
    receptive_field: tuple[Tensor, Tensor],
    criterion: str,
    iota: float,
    variance_scale: float,
    compactness: float,
    min_width: float,
    min_regions: int,
    pooling: str,
    compare: str,
) -> Hierarchy:
    """Merge levels and the information-criterion selection (no gradient: every choice here
    is discrete; `log_weights` replays the merges with gradient).

    After level 1 every pixel's history is that of its level-1 region (its "atom"), so the
    selection is tracked per atom, not per pixel: a few times fewer elements per level.
    The keyword options are `DHTTokenizer`'s of the same names.

    Args:
        images: [B, C, H, W] the images the encoder read (for its flat areas).
        features: [B, d, H, W] their pixel features.
        self_edge: [V, d] variances -> [V] self-edge values of a level's vertices.
        receptive_field: the encoder's (rows [H, 2], columns [W, 2]) at H x W.
    """
    batch, _, height, width = features.shape
    pixels_per_image = height * width
    graph = pixel_graph(features)
    max_levels = math.ceil(math.log2(math.sqrt(pixels_per_image)))
    # An image thinner than min_width still has candidates.
    min_width = min(min_width, height, width)
    score = partial(
        region_ic,
        pixels_per_image=pixels_per_image,
        criterion=criterion,
        iota=iota,
        variance_scale=variance_scale,
        min_width=min_width,
    )

    # No self-edge at the pixel level: every pixel joins a neighbour (the authors' rule; a
    # pixel self-edge left single pixels alone, about 5x more regions on noise).
    links = link_vertices(graph, None, compactness=compactness)
    # Pixels whose receptive fields are one colour (the same) share an atom, so a connected,
    # exactly flat area is one atom and no later step can cut it: its links alone leave
    # several atoms in it, bordered where the tie rule's chains happen to end, and the
    # selection used to keep them at different levels, which drew straight seams through
    # flat backgrounds (issue 20; docs/design.md, "dHT", step 2).
    flat = flat_edges(images, *receptive_field)
    links = join_across(links, graph, flat)
    atoms = pool_vertices(graph, links, pooling=pooling)
    num_atoms = atoms.num_vertices
    vertex = torch.arange(num_atoms, device=features.device)
    # Level 1 beats the single pixels (their IC is -inf), so every atom starts selected.
    best_ic = score(atoms)
    total = best_ic  # per current vertex: summed IC of the selection inside it
    selected = num_atoms + vertex
    count_before = atoms.count
    merges = []
    active = torch.ones(batch, dtype=torch.bool, device=features.device)
    levels = [vertex]
    graph = atoms
    for level in range(2, max_levels + 1):
        regions = torch.bincount(graph.image, minlength=batch)
        active = active & (regions > min_regions)
        if not bool(active.any()):
            break
        # A region too thin to be selected has no self-edge either: it must join a neighbour.
        must_join = is_thin(graph.count, graph.box, min_width) if min_width > 0 else None
        step = link_vertices(
            graph,
            self_edge(graph.variance),
            compactness=compactness,
            must_join=must_join,
        )
        linked_graph = graph
        graph = pool_vertices(graph, step, pooling=pooling)
        vertex = step.parent.index_select(0, vertex)
        levels.append(vertex)
        ic = score(graph)
        if compare == "total":
            # Optimal pruning of the tree: a region replaces the selection inside it when
            # its IC is at least the sum of the selected regions' ICs.
            inside = ic.new_zeros(graph.num_vertices).index_add(0, step.parent, total)
            grew = torch.bincount(step.parent, minlength=graph.num_vertices) > 1
            choose = active.index_select(0, graph.image) & (ic >= inside)
            total = torch.where(choose, ic, inside)
            better = choose.index_select(0, vertex)
            improved = (choose & grew).index_select(0, vertex)
        else:
            # The reference rule: per pixel, the best IC seen along its path.
            atom_ic = ic.index_select(0, vertex)
            count = graph.count.index_select(0, vertex)
            better = active.index_select(0, atoms.image) & (atom_ic >= best_ic)
            # A region that grew out of a thin one (IC -inf) improves even while still thin.
            rose = (atom_ic > best_ic) | (best_ic == -math.inf)
            improved = better & rose & (count > count_before)
            count_before = count
            best_ic = torch.where(better, atom_ic, best_ic)
        selected = torch.where(better, level * num_atoms + vertex, selected)
        no_edges = linked_graph.src[:0]
        merges.append(
            Merge(
                graph=replace(linked_graph, src=no_edges, dst=no_edges, edge_distance=None),
                links=step,
                must_join=must_join,
                better=better,
            )
        )
        active = active & (torch.bincount(atoms.image[improved], minlength=batch) > 0)
    # The whole image is the last candidate (the authors score it as one more level).
    whole = whole_image_ic(
        atoms,
        batch,
        pixels_per_image,
        criterion=criterion,
        iota=iota,
        variance_scale=variance_scale,
    )
    if compare == "total":
        current = whole.new_zeros(batch).index_add(0, graph.image, total)
        better = (whole >= current).index_select(0, atoms.image)
    else:
        better = whole.index_select(0, atoms.image) >= best_ic
    selected = torch.where(better, (max_levels + 1) * num_atoms + atoms.image, selected)
    return Hierarchy(
        atom_of_pixel=links.parent,
        pixel_links=links,
        grid=(batch, height, width),
        atoms=atoms,
        selected=selected,
        levels=tuple(levels),
        merges=tuple(merges),
        whole_better=better,
    )


def log_weights(
    features: Tensor,
    tree: Hierarchy,
    *,
    self_edge: SelfEdge,
    compactness: float,
    pooling: str,
) -> Tensor:
    """[A] log similarity weight of every atom in its selected region.

    With gradient (features that require it, autograd on), the merges are replayed with the
    choices of the no-gradient pass (parents, best neighbours, forced joins, selections) and
    the same arithmetic (`pool_statistics`, `link_confidence`), so the values are those of a
    pass with gradient throughout, while the discrete work (edges, boxes, ties, components,
    criteria) runs once, without autograd bookkeeping. Without gradient the link
    confidences the no-gradient pass computed are summed as they are (the same values).

    Args:
        features: [B, d, H, W] the pixel features the tree was built from (with gradient).
        tree: the hierarchy.
        self_edge, compactness, pooling: as for `build_hierarchy`.
    """
    replay = torch.is_grad_enabled() and features.requires_grad
    if replay:
        mean = channel_major(features)
        ones = mean.new_ones(mean.shape[0])
        empty = tree.atom_of_pixel[:0]
        pixels = RegionGraph(
            mean=mean,
            variance=torch.zeros_like(mean),
            count=ones,
            mass=ones,
            box=empty[:, None],
            image=empty,
            src=empty,
            dst=empty,
            grid=tree.grid,
        )
        mean, variance, _, mass = pool_statistics(pixels, tree.pixel_links, pooling=pooling)
    log_weight = features.new_zeros(tree.atoms.num_vertices)
    selected = log_weight
    for number, (merge, vertex) in enumerate(zip(tree.merges, tree.levels, strict=False)):
        confidence = merge.links.confidence
        if replay:
            graph = replace(merge.graph, mean=mean, variance=variance, mass=mass)
            confidence, _ = link_confidence(
                graph,
                merge.links.neighbour,
                self_edge(variance),
                compactness=compactness,
                must_join=merge.must_join,
            )
            if number + 1 < len(tree.merges):
                links = replace(merge.links, confidence=confidence)
                mean, variance, _, mass = pool_statistics(graph, links, pooling=pooling)
        log_weight = log_weight + torch.log(confidence).index_select(0, vertex)
        selected = torch.where(merge.better, log_weight, selected)
    return torch.where(tree.whole_better, log_weight, selected)
