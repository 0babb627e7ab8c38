"""One merge level of the dHT hierarchy, batched over every vertex and edge of the whole batch.

Vertices are regions (pixels at the start) with feature statistics; edges join 4-adjacent
regions. Each level every vertex links to its most similar neighbour, or to itself when its
learned self-edge wins; the connected components of those links are the next level's vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...graph import connected_components

__all__ = [
    "Links",
    "RegionGraph",
    "forest_components",
    "link_vertices",
    "pixel_graph",
    "pool_vertices",
]


@dataclass(frozen=True)
class RegionGraph:
    """Regions of one hierarchy level and their adjacency (all images of the batch together).

    Attributes:
        mean: [V, d] feature mean of each region.
        variance: [V, d] per-channel feature variance.
        count: [V] float pixel count m.
        mass: [V] float similarity-weighted pixel mass (equals count while every link is certain).
        box: [V, 4] int64 bounding box (y0, x0, y1, x1), end-exclusive ([V, 0] when not
            computed, see `pool_vertices`).
        image: [V] int64 image of each region.
        src: [E] int64 one end of each edge (src < dst, each adjacent pair once unless
            `pool_vertices` was told not to dedupe).
        dst: [E] int64 the other end.
        edge_distance: [E] squared feature distance ||f_src - f_dst||² when already known
            (the pixel level computes it with shifted slices instead of gathers), else None.
        grid: (B, H, W) at the pixel level, whose edges are the right then the down neighbours
            in raster order (lets the next level rename them with slices), else None.
    """

    mean: Tensor
    variance: Tensor
    count: Tensor
    mass: Tensor
    box: Tensor
    image: Tensor
    src: Tensor
    dst: Tensor
    edge_distance: Tensor | None = None
    grid: tuple[int, int, int] | None = None

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]


@dataclass(frozen=True)
class Links:
    """The choice every vertex made at one level.

    Attributes:
        parent: [V] int64 next-level vertex of each vertex (components of the links).
        num_parents: number of next-level vertices.
        confidence: [V] float in [0.5, 1], chosen / (best neighbour + self-edge), differentiable:
            how sure the vertex was of its choice; it weights the vertex in similarity pooling.
    """

    parent: Tensor
    num_parents: int
    confidence: Tensor


def pixel_graph(features: Tensor) -> RegionGraph:
    """The level-0 graph: one vertex per pixel, edges to the right and lower neighbours.

    Args:
        features: [B, d, H, W] pixel features.

    Returns:
        RegionGraph with V = B*H*W vertices in (image, row, column) order.
    """
    batch, dim, height, width = features.shape
    device = features.device
    mean = features.permute(0, 2, 3, 1).reshape(-1, dim)
    index = torch.arange(batch * height * width, device=device).view(batch, height, width)
    src = torch.cat([index[:, :, :-1].flatten(), index[:, :-1, :].flatten()])
    dst = torch.cat([index[:, :, 1:].flatten(), index[:, 1:, :].flatten()])
    ys = torch.arange(height, device=device).view(1, height, 1).expand(batch, height, width)
    xs = torch.arange(width, device=device).view(1, 1, width).expand(batch, height, width)
    ys, xs = ys.flatten(), xs.flatten()
    box = torch.stack([ys, xs, ys + 1, xs + 1], 1)
    image = torch.arange(batch, device=device).repeat_interleave(height * width)
    ones = mean.new_ones(mean.shape[0])
    right = (features[..., 1:] - features[..., :-1]).square().sum(1)
    down = (features[..., 1:, :] - features[..., :-1, :]).square().sum(1)
    return RegionGraph(
        mean=mean,
        variance=torch.zeros_like(mean),
        count=ones,
        mass=ones,
        box=box,
        image=image,
        src=src,
        dst=dst,
        edge_distance=torch.cat([right.flatten(), down.flatten()]),
        grid=(batch, height, width),
    )


def _compactness(count: Tensor, box: Tensor) -> Tensor:
    """4 m / (h + w)²: 1 for a filled square box, smaller for thin or sparse regions."""
    half_perimeter = (box[:, 2] - box[:, 0] + box[:, 3] - box[:, 1]).to(count.dtype)
    return 4.0 * count / half_perimeter.square()


def forest_components(target: Tensor) -> tuple[Tensor, int]:
    """Components of a graph where every vertex points to one vertex (itself for a root).

    The links of a merge level form such a graph whose only cycles are self-loops and mutual
    pairs (each vertex takes its best edge, ties by edge id), so pointer jumping finds the roots
    in log(depth) gathers, much faster than general hooking. Anything else (which the tie-break
    rules out) falls back to `adaptok.graph.connected_components`.

    Args:
        target: [V] int64 the vertex each vertex links to.

    Returns:
        ([V] int64 component ids, consecutive from 0 in order of each root's index, count).
    """
    num_vertices = target.numel()
    index = torch.arange(num_vertices, device=target.device)
    # Mutual pairs: the smaller vertex becomes the root.
    mutual = (target[target] == index) & (target > index)
    target = torch.where(mutual, index, target)
    for _ in range(max(1, num_vertices.bit_length()) + 1):
        jumped = target[target]
        if torch.equal(jumped, target):
            break
        target = jumped
    else:  # pragma: no cover - a longer cycle: not produced by link_vertices
        linked = target != index
        parent = connected_components(num_vertices, index[linked], target[linked])
        return parent, int(parent.max()) + 1 if num_vertices else 0
    is_root = target == index
    new_id = torch.cumsum(is_root, 0) - 1
    return new_id[target], int(is_root.sum())


def link_vertices(graph: RegionGraph, self_edge: Tensor, *, compactness: float = 0.0) -> Links:
    """Every vertex links to its best edge; components of the links are the next level.

    Edge value: exp(-||f_u - f_v||²), blended as (1 - c) * value + c * 4 m / (h + w)² of the
    union's box when compactness c > 0 (self-edges use the vertex's own box). A vertex stays
    alone when its self-edge is at least its best edge. Ties go to the edge of lowest id, so the
    result is deterministic and the links have no cycles longer than a mutual pair.

    Args:
        graph: the current level.
        self_edge: [V] value in (0, 1) of each vertex's self-edge (the learned chance to stay).
        compactness: c in [0, 1].

    Returns:
        Links to the next level.
    """
    if graph.grid is not None and compactness == 0:
        return _link_pixels(graph, self_edge)
    src, dst = graph.src, graph.dst
    num_vertices, num_edges = graph.num_vertices, src.numel()
    distance = graph.edge_distance
    if distance is None:
        distance = (graph.mean[src] - graph.mean[dst]).square().sum(-1)
    similarity = torch.exp(-distance)
    if compactness > 0:
        union = torch.cat(
            [
                torch.minimum(graph.box[src, :2], graph.box[dst, :2]),
                torch.maximum(graph.box[src, 2:], graph.box[dst, 2:]),
            ],
            1,
        )
        union_compact = _compactness(graph.count[src] + graph.count[dst], union)
        similarity = (1 - compactness) * similarity + compactness * union_compact
        own_compact = _compactness(graph.count, graph.box)
        self_edge = (1 - compactness) * self_edge + compactness * own_compact
    # One scatter finds each vertex's best edge: the key packs the value's float bits (monotonic
    # for non-negative floats) above the reversed edge id, so the maximum key is the best value
    # and, among equal values, the lowest edge id.
    bits = similarity.detach().float().clamp(min=0).view(torch.int32).long()
    edge_id = torch.arange(num_edges, device=src.device)
    key = (bits << 32) | (num_edges - 1 - edge_id)
    best_key = torch.full((num_vertices,), -1, device=src.device, dtype=torch.long)
    best_key.scatter_reduce_(0, src, key, reduce="amax")
    best_key.scatter_reduce_(0, dst, key, reduce="amax")
    has_edge = best_key >= 0
    best_edge = torch.where(has_edge, num_edges - 1 - (best_key & 0xFFFFFFFF), 0)
    index = torch.arange(num_vertices, device=src.device)
    if num_edges:
        neighbour_value = torch.where(has_edge, similarity[best_edge], 0.0)
        # One end of the best edge is the vertex itself; the other is the neighbour.
        neighbour = src[best_edge] + dst[best_edge] - index
    else:
        neighbour_value = torch.zeros_like(self_edge)
        neighbour = index
    linked = has_edge & (neighbour_value.detach() > self_edge.detach())
    parent, num_parents = forest_components(torch.where(linked, neighbour, index))
    confidence = torch.maximum(neighbour_value, self_edge) / (neighbour_value + self_edge)
    return Links(parent=parent, num_parents=num_parents, confidence=confidence)


def _link_pixels(graph: RegionGraph, self_edge: Tensor) -> Links:
    """`link_vertices` on the pixel grid with dense tensors instead of scatters.

    Every pixel compares its four neighbours in the order of their edge ids (left, right, up,
    down: right edges are numbered before down edges, both in raster order), and the first
    maximum wins, which is the tie-break of the general path.
    """
    batch, height, width = graph.grid
    similarity = torch.exp(-graph.edge_distance)
    right = similarity[: batch * height * (width - 1)].view(batch, height, width - 1)
    down = similarity[batch * height * (width - 1) :].view(batch, height - 1, width)
    candidates = similarity.new_full((batch, 4, height, width), -1.0)
    candidates[:, 0, :, 1:] = right
    candidates[:, 1, :, :-1] = right
    candidates[:, 2, 1:, :] = down
    candidates[:, 3, :-1, :] = down
    # First maximum over the four directions with contiguous elementwise ops (an argmax over
    # the strided direction axis was the slowest op of a CPU profile).
    plain = candidates.detach()
    best, value = plain[:, 0], candidates[:, 0]
    offset = torch.full_like(best, -1, dtype=torch.long)
    for direction, step in ((1, 1), (2, -width), (3, width)):
        wins = plain[:, direction] > best
        best = torch.where(wins, plain[:, direction], best)
        value = torch.where(wins, candidates[:, direction], value)
        offset = torch.where(wins, step, offset)
    choice = offset.flatten()
    neighbour_value = value.flatten().clamp(min=0)
    index = torch.arange(graph.num_vertices, device=choice.device)
    linked = best.flatten() > self_edge.detach()
    target = torch.where(linked, index + choice, index)
    parent, num_parents = forest_components(target)
    confidence = torch.maximum(neighbour_value, self_edge) / (neighbour_value + self_edge)
    return Links(parent=parent, num_parents=num_parents, confidence=confidence)


def _grid_edges_between(grid: Tensor, size: int, *, dedupe: bool) -> tuple[Tensor, Tensor]:
    """Edges of the next level from the pixel grid's parent map [B, H, W].

    Right edges are read column by column and down edges row by row, so the many copies of one
    pair along a shared boundary sit next to each other and a cheap run-length pass drops most
    of them before the sort.
    """
    right = (grid[:, :, :-1].transpose(1, 2), grid[:, :, 1:].transpose(1, 2))
    down = (grid[:, :-1, :], grid[:, 1:, :])
    first = torch.cat([right[0].flatten(), down[0].flatten()])
    second = torch.cat([right[1].flatten(), down[1].flatten()])
    inside = size * size
    keys = torch.where(
        first != second, torch.minimum(first, second) * size + torch.maximum(first, second), inside
    )
    if dedupe:
        fresh = torch.ones_like(keys, dtype=torch.bool)
        fresh[1:] = keys[1:] != keys[:-1]
        keys = torch.unique(keys[fresh & (keys != inside)])
    else:
        keys = keys[keys != inside]
    return keys // size, keys % size


def pool_vertices(
    graph: RegionGraph,
    links: Links,
    *,
    pooling: str = "exact",
    boxes: bool = True,
    dedupe: bool = True,
) -> RegionGraph:
    """Merge each component of the links into one vertex of the next level.

    Args:
        graph: the current level.
        links: the choices made on it.
        pooling: "exact" weights every vertex by its pixel count (the exact statistics of the
            union); "similarity" by its mass times its link confidence (carries gradient to the
            similarities and self-edges, and damps doubtful members).
        boxes: compute the bounding boxes (needed for compactness and for the Partition);
            without it the next level's box is a [V, 0] placeholder.
        dedupe: merge parallel edges (one sort of the edge keys per level; measured faster
            than carrying the parallel edges through the later levels).

    Returns:
        The next level's RegionGraph; its edges are the pairs of adjacent components.
    """
    parent, size = links.parent, links.num_parents
    dim = graph.mean.shape[1]
    mass = graph.mass * links.confidence
    weight = graph.count if pooling == "exact" else mass
    if graph.grid is not None and pooling == "exact":
        # Pixel level: every vertex is one pixel with no variance, so the weights are all one.
        count = torch.bincount(parent, minlength=size).to(mass.dtype)
        new_mass = mass.new_zeros(size).index_add(0, parent, mass)
        moments = torch.cat([graph.mean, graph.mean.square()], 1)
        sums = moments.new_zeros(size, 2 * dim).index_add(0, parent, moments)
        mean = sums[:, :dim] / count[:, None]
        variance = (sums[:, dim:] / count[:, None] - mean.square()).clamp(min=0)
    else:
        # One scatter for all sums: weight, count, mass, first and second moments.
        moments = torch.cat(
            [
                weight[:, None],
                graph.count[:, None],
                mass[:, None],
                weight[:, None] * graph.mean,
                weight[:, None] * (graph.variance + graph.mean.square()),
            ],
            1,
        )
        sums = moments.new_zeros(size, moments.shape[1]).index_add(0, parent, moments)
        total = sums[:, 0:1]
        mean = sums[:, 3 : 3 + dim] / total
        variance = (sums[:, 3 + dim :] / total - mean.square()).clamp(min=0)
        count, new_mass = sums[:, 1], sums[:, 2]
    if boxes:
        index = parent[:, None].expand(-1, 2)
        big = torch.iinfo(torch.long).max
        low = graph.box.new_full((size, 2), big).scatter_reduce(
            0, index, graph.box[:, :2], reduce="amin"
        )
        high = graph.box.new_full((size, 2), -1).scatter_reduce(
            0, index, graph.box[:, 2:], reduce="amax"
        )
        box = torch.cat([low, high], 1)
    else:
        box = graph.box.new_zeros(size, 0)
    image = graph.image.new_zeros(size).scatter_(0, parent, graph.image)
    if graph.grid is not None:
        src, dst = _grid_edges_between(parent.view(graph.grid), size, dedupe=dedupe)
    else:
        src, dst = parent[graph.src], parent[graph.dst]
        between = torch.nonzero(src != dst).flatten()
        src, dst = src[between], dst[between]
        if dedupe and src.numel():
            keys = torch.unique(torch.minimum(src, dst) * size + torch.maximum(src, dst))
            src, dst = keys // size, keys % size
    return RegionGraph(
        mean=mean,
        variance=variance,
        count=count,
        mass=new_mass,
        box=box,
        image=image,
        src=src,
        dst=dst,
    )
