"""One merge level of the dHT hierarchy, batched over every vertex and edge of the whole batch.

Vertices are regions (pixels at the start) with feature statistics; edges join 4-adjacent
regions. Each level every vertex links to its most similar neighbour, or, above the pixel level,
to itself when its learned self-edge wins; the connected components of those links are the next
level's vertices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ...graph import connected_components

__all__ = [
    "Links",
    "RegionGraph",
    "channel_major",
    "distinct_pairs",
    "flat_edges",
    "forest_components",
    "group_boxes",
    "join_across",
    "link_confidence",
    "link_vertices",
    "pairs_between",
    "pixel_graph",
    "pool_statistics",
    "pool_vertices",
    "sum_columns",
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
            how sure the vertex was of its choice; it weights the vertex in similarity pooling
            (1 where there is no self-edge, the pixel level; 1 - self-edge / 2 where the vertex
            was made to join, see `link_vertices`' must_join).
        neighbour: [V] int64 best neighbour of each vertex (itself when it has none), whether
            or not it linked to it: with `confidence` what the differentiable replay of a merge
            needs (`link_confidence`).
    """

    parent: Tensor
    num_parents: int
    confidence: Tensor
    neighbour: Tensor


def pixel_graph(features: Tensor) -> RegionGraph:
    """The level-0 graph: one vertex per pixel, edges to the right and lower neighbours.

    Args:
        features: [B, d, H, W] pixel features.

    Returns:
        RegionGraph with V = B*H*W vertices in (image, row, column) order; its mean is a view
        of channel planes (`channel_major`), its boxes a [V, 0] placeholder (a pixel's box is
        its position in the grid: `pool_vertices` and the compactness term read them from
        `grid`).
    """
    batch, _, height, width = features.shape
    device = features.device
    mean = channel_major(features)
    index = torch.arange(batch * height * width, device=device).view(batch, height, width)
    src = torch.cat([index[:, :, :-1].flatten(), index[:, :-1, :].flatten()])
    dst = torch.cat([index[:, :, 1:].flatten(), index[:, 1:, :].flatten()])
    image = torch.arange(batch, device=device).repeat_interleave(height * width)
    ones = mean.new_ones(mean.shape[0])
    right = (features[..., 1:] - features[..., :-1]).square_().sum(1)
    down = (features[..., 1:, :] - features[..., :-1, :]).square_().sum(1)
    return RegionGraph(
        mean=mean,
        variance=torch.zeros_like(mean),
        count=ones,
        mass=ones,
        box=index.new_zeros(mean.shape[0], 0),
        image=image,
        src=src,
        dst=dst,
        edge_distance=torch.cat([right.flatten(), down.flatten()]),
        grid=(batch, height, width),
    )


def channel_major(features: Tensor) -> Tensor:
    """[B*H*W, d] pixel features (raster order) as a view of a [d, B*H*W] tensor: one copy of
    whole channel planes, and every channel a contiguous row for the pooling's scatters."""
    return features.transpose(0, 1).reshape(features.shape[1], -1).t()


def _pixel_corners(grid: tuple[int, int, int], device: torch.device) -> Tensor:
    """[2, B*H*W] row and column of every pixel of the grid, in raster order."""
    batch, height, width = grid
    rows = torch.arange(height, device=device).view(1, height, 1).expand(batch, height, width)
    columns = torch.arange(width, device=device).view(1, 1, width).expand(batch, height, width)
    return torch.stack([rows.flatten(), columns.flatten()])


def _with_boxes(graph: RegionGraph) -> RegionGraph:
    """The graph with its pixel boxes (y, x, y + 1, x + 1) filled in at the pixel level."""
    if graph.grid is None:
        return graph
    corner = _pixel_corners(graph.grid, graph.mean.device)
    return replace(graph, box=torch.cat([corner, corner + 1]).t())


def flat_edges(images: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """Which edges of `pixel_graph` join two pixels whose receptive fields are one colour.

    Such pixels have equal features, and an exactly flat area must be one region: a border
    through it would follow the merge order, not the image (docs/design.md, "dHT", step 2).

    Args:
        images: [B, C, H, W] the images the encoder reads.
        rows: [H, 2] first and last input row each output row reads (inclusive).
        columns: [W, 2] the same for columns (`PixelEncoder.receptive_field`).

    Returns:
        [E] bool in `pixel_graph`'s edge order (right edges, then down edges): both pixels'
        receptive fields hold one colour, the same for both.
    """
    same_right = _same_colour(images[..., 1:], images[..., :-1])
    same_down = _same_colour(images[..., 1:, :], images[..., :-1, :])
    if bool((rows[:, 0] == rows[:, 1]).all()) and bool((columns[:, 0] == columns[:, 1]).all()):
        # Each pixel reads only itself: a pixel pair is flat when the two colours are equal.
        return torch.cat([same_right.flatten(), same_down.flatten()])
    # A field is one colour when no two adjacent pixels inside it differ: count the differing
    # pairs in every field with integral images (exact integer sums).
    top, bottom = rows[:, 0], rows[:, 1]
    left, right = columns[:, 0], columns[:, 1]
    flat = (_window_count(~same_right, top, bottom, left, right - 1) == 0) & (
        _window_count(~same_down, top, bottom - 1, left, right) == 0
    )
    same_right = same_right & flat[..., 1:] & flat[..., :-1]
    same_down = same_down & flat[..., 1:, :] & flat[..., :-1, :]
    return torch.cat([same_right.flatten(), same_down.flatten()])


def _same_colour(first: Tensor, second: Tensor) -> Tensor:
    """[B, H, W] bool: every channel equal ([B, C, H, W] inputs; channel by channel, about twice
    as fast as `.all(1)`)."""
    same = first[:, 0] == second[:, 0]
    for channel in range(1, first.shape[1]):
        same &= first[:, channel] == second[:, channel]
    return same


def _window_count(mask: Tensor, top: Tensor, bottom: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """[B, H, W] number of True in mask[b, top[y]:bottom[y]+1, left[x]:right[x]+1] (inclusive
    bounds; an empty range counts 0), from one integral image of the [B, h, w] bool mask."""
    batch, height, width = mask.shape
    integral = mask.new_zeros((batch, height + 1, width + 1), dtype=torch.int64)
    integral[:, 1:, 1:] = mask.long().cumsum(1).cumsum(2)
    top, left = top[:, None], left[None, :]
    bottom, right = (bottom + 1)[:, None], (right + 1)[None, :]
    return (
        integral[:, bottom, right]
        - integral[:, top, right]
        - integral[:, bottom, left]
        + integral[:, top, left]
    )


def join_across(links: Links, graph: RegionGraph, joined: Tensor) -> Links:
    """The links' components, also joined across the edges marked in `joined`.

    Args:
        links: the links made on `graph`.
        graph: the level they were made on.
        joined: [E] bool edges of `graph` whose ends must share a component.

    Returns:
        Links whose parent (and num_parents) are the joined components, numbered in order of
        their smallest former component (so still grouped by image, in the same order).
    """
    edges = torch.nonzero(joined).flatten()
    first = links.parent.index_select(0, graph.src.index_select(0, edges))
    second = links.parent.index_select(0, graph.dst.index_select(0, edges))
    differ = first != second
    if not bool(differ.any()):
        return links
    first, second = first[differ], second[differ]
    # Components of the few touched components only (a flat area touches a handful of the
    # level's many), then every touched one points at the smallest of its group.
    touched, ends = torch.unique(torch.cat([first, second]), return_inverse=True)
    group = connected_components(touched.numel(), *ends.view(2, -1))
    smallest = touched.new_full((int(group.max()) + 1,), links.num_parents)
    smallest.scatter_reduce_(0, group, touched, reduce="amin")
    index = torch.arange(links.num_parents, device=touched.device)
    target = index.index_put((touched,), smallest.index_select(0, group))
    is_root = target == index
    new_id = torch.cumsum(is_root, 0) - 1
    return replace(
        links,
        parent=new_id.index_select(0, target).index_select(0, links.parent),
        num_parents=int(is_root.sum()),
    )


def _compactness(count: Tensor, box: Tensor) -> Tensor:
    """4 m / (h + w)²: 1 for a filled square box, smaller for thin or sparse regions."""
    half_perimeter = (box[:, 2] - box[:, 0] + box[:, 3] - box[:, 1]).to(count.dtype)
    return 4.0 * count / half_perimeter.square()


def _edge_value(
    graph: RegionGraph,
    first: Tensor,
    second: Tensor,
    compactness: float,
    distance: Tensor | None = None,
) -> Tensor:
    """Edge value of vertex pairs: exp(-||f_a - f_b||²), blended with the compactness of the
    union's box when compactness > 0 (`distance`: the squared distances when already known)."""
    if distance is None:
        distance = (
            (graph.mean.index_select(0, first) - graph.mean.index_select(0, second))
            .square()
            .sum(-1)
        )
    similarity = torch.exp(-distance)
    if compactness > 0:
        union = torch.cat(
            [
                torch.minimum(graph.box[first, :2], graph.box[second, :2]),
                torch.maximum(graph.box[first, 2:], graph.box[second, 2:]),
            ],
            1,
        )
        union_compact = _compactness(graph.count[first] + graph.count[second], union)
        similarity = (1 - compactness) * similarity + compactness * union_compact
    return similarity


def forest_components(target: Tensor) -> tuple[Tensor, int]:
    """Components of a graph where every vertex points to one vertex (itself for a root).

    The links of a merge level form such a graph whose only cycles are self-loops and mutual
    pairs (each vertex takes its best edge, ties by neighbour index), so pointer jumping finds
    the roots in log(depth) gathers, much faster than general hooking. Anything else (which the
    tie-break rules out) falls back to `adaptok.graph.connected_components`.

    Args:
        target: [V] int64 the vertex each vertex links to.

    Returns:
        ([V] int64 component ids, consecutive from 0 in order of each root's index, count).
    """
    num_vertices = target.numel()
    index = torch.arange(num_vertices, device=target.device)
    # Mutual pairs: the smaller vertex becomes the root.
    mutual = (target.index_select(0, target) == index) & (target > index)
    target = torch.where(mutual, index, target)
    for _ in range(max(1, num_vertices.bit_length()) + 1):
        jumped = target.index_select(0, target)
        if torch.equal(jumped, target):
            break
        target = jumped
    else:  # pragma: no cover - a longer cycle: not produced by link_vertices
        linked = target != index
        parent = connected_components(num_vertices, index[linked], target[linked])
        return parent, int(parent.max()) + 1 if num_vertices else 0
    is_root = target == index
    new_id = torch.cumsum(is_root, 0) - 1
    return new_id.index_select(0, target), int(is_root.sum())


# Edge values are compared after rounding to 16 bits, so that values equal up to float noise
# (a flat area whose features differ in the last bits) tie and the tie rule decides.
QUANTISATION = 65535


def _quantise(similarity: Tensor) -> Tensor:
    """Similarity in [0, 1] -> int64 in [0, 65535] (the comparison key of an edge value)."""
    return (similarity.detach().float().clamp(0, 1) * QUANTISATION).round().long()


def link_vertices(
    graph: RegionGraph,
    self_edge: Tensor | None,
    *,
    compactness: float = 0.0,
    must_join: Tensor | None = None,
) -> Links:
    """Every vertex links to its best edge; components of the links are the next level.

    Edge value: exp(-||f_u - f_v||²), blended as (1 - c) * value + c * 4 m / (h + w)² of the
    union's box when compactness c > 0 (self-edges use the vertex's own box). Values are compared
    after rounding to 16 bits and ties go to the neighbour of largest index (the authors' rule):
    on an exactly flat area every pixel then links down, or right on the last row, which chains
    a rectangle into one component (a "first of left/right/up/down" rule links each row only
    along itself and cuts flat areas into one-pixel strips; docs/design.md, "dHT", step 3).
    Vertex indices are ordered by image, so the rule does not depend on the rest of the batch,
    and it leaves no cycle longer than a mutual pair (along a cycle the values cannot fall, so
    they are all equal, and then every second vertex would have to grow in index forever).

    Args:
        graph: the current level.
        self_edge: [V] value in (0, 1) of each vertex's self-edge (the learned chance to stay
            alone; a vertex stays alone when it is at least its best edge), or None for no
            self-edge (the pixel level: every pixel joins a neighbour).
        compactness: c in [0, 1].
        must_join: [V] bool vertices whose self-edge is ignored (they join their best
            neighbour whatever its value), or None.

    Returns:
        Links to the next level.
    """
    if graph.grid is not None and self_edge is None and compactness == 0:
        return _link_pixels(graph)
    if compactness > 0:
        graph = _with_boxes(graph)
    src, dst = graph.src, graph.dst
    num_vertices = graph.num_vertices
    similarity = _edge_value(graph, src, dst, compactness, graph.edge_distance)
    # One scatter per edge end finds each vertex's best neighbour: the key packs the quantised
    # value above the neighbour's index, so the maximum key is the best value and, among equal
    # values, the largest neighbour.
    level = _quantise(similarity) << 32
    best_key = torch.full((num_vertices,), -1, device=src.device, dtype=torch.long)
    best_key.scatter_reduce_(0, src, level | dst, reduce="amax")
    best_key.scatter_reduce_(0, dst, level | src, reduce="amax")
    index = torch.arange(num_vertices, device=src.device)
    has_edge = best_key >= 0
    neighbour = torch.where(has_edge, best_key & 0xFFFFFFFF, index)
    if self_edge is None:
        linked = has_edge
        confidence = graph.mean.new_ones(num_vertices)
    else:
        confidence, prefers = link_confidence(
            graph, neighbour, self_edge, compactness=compactness, must_join=must_join
        )
        linked = has_edge & prefers
        if must_join is not None:
            linked = linked | (has_edge & must_join)
    parent, num_parents = forest_components(torch.where(linked, neighbour, index))
    return Links(parent=parent, num_parents=num_parents, confidence=confidence, neighbour=neighbour)


def link_confidence(
    graph: RegionGraph,
    neighbour: Tensor,
    self_edge: Tensor,
    *,
    compactness: float = 0.0,
    must_join: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """How sure each vertex is of its choice between its best neighbour and its self-edge.

    Differentiable in graph.mean and self_edge (the choice itself is not): the tokenizer calls it
    once inside `link_vertices` on the no-gradient pass and once more on the differentiable
    replay of the merges.

    Args:
        graph: the level (mean, and count and box when compactness > 0).
        neighbour: [V] best neighbour of each vertex (itself when it has none).
        self_edge: [V] self-edge values in (0, 1) (before compactness blending).
        compactness: c in [0, 1].
        must_join: [V] bool vertices made to join, or None.

    Returns:
        (confidence [V] = max(neighbour, self) / (neighbour + self), in [0.5, 1]; 1 - self / 2
         for vertices made to join; [V] bool: the neighbour's edge value beats the self-edge).
    """
    index = torch.arange(graph.num_vertices, device=neighbour.device)
    if compactness > 0:
        self_edge = (1 - compactness) * self_edge + compactness * _compactness(
            graph.count, graph.box
        )
    # The chosen edge's value, recomputed for the V chosen pairs: cheaper than finding the
    # chosen edges among the E.
    value = torch.where(neighbour != index, _edge_value(graph, index, neighbour, compactness), 0.0)
    total = (value + self_edge).clamp(min=torch.finfo(self_edge.dtype).tiny)
    confidence = torch.maximum(value, self_edge) / total
    if must_join is not None:
        # A forced join still says how much the vertex would rather have stayed (and so passes
        # gradient to the self-edge): 1 - self-edge / 2, in (0.5, 1) like the others and never 0
        # (its neighbour's value can underflow to 0).
        confidence = torch.where(must_join, 1.0 - 0.5 * self_edge, confidence)
    return confidence, value.detach() > self_edge.detach()


def _link_pixels(graph: RegionGraph) -> Links:
    """`link_vertices` on the pixel grid without self-edges (the pixel level), with dense tensors
    instead of scatters.

    Every pixel compares its four neighbours from the largest index to the smallest (down,
    right, left, up) and the first maximum of the quantised value wins, which is the tie rule
    of the general path: each direction's key packs the value above a direction code that is
    larger for earlier directions, so one running maximum decides (-1: no neighbour).
    """
    batch, height, width = graph.grid
    level = _quantise(torch.exp(-graph.edge_distance)).to(torch.int32) * 4
    split = batch * height * (width - 1)
    right = level[:split].view(batch, height, width - 1)
    down = level[split:].view(batch, height - 1, width)
    best = level.new_full((batch, height, width), -1)
    best[:, :-1, :] = down + 3
    for view, key in ((best[:, :, :-1], right + 2), (best[:, :, 1:], right + 1)):
        torch.maximum(view, key, out=view)
    torch.maximum(best[:, 1:, :], down, out=best[:, 1:, :])
    # Direction code -> index offset: 0 up, 1 left, 2 right, 3 down (also for no neighbour).
    step = torch.tensor([-width, -1, 1, width], device=level.device)
    offset = step.index_select(0, (best & 3).flatten())
    neighbour = torch.arange(graph.num_vertices, device=level.device) + offset
    parent, num_parents = forest_components(neighbour)
    return Links(
        parent=parent,
        num_parents=num_parents,
        confidence=graph.mean.new_ones(graph.num_vertices),
        neighbour=neighbour,
    )


def _grid_edges_between(grid: Tensor, size: int, *, dedupe: bool) -> tuple[Tensor, Tensor]:
    """Edges of the next level from the pixel grid's parent map [B, H, W].

    Right edges are read column by column and down edges row by row, so the many copies of one
    pair along a shared boundary sit next to each other and a cheap run-length pass drops most
    of them before the sort (pairs are compared as they are; keys are built only for the few
    that pass).
    """
    grid = grid.int() if size <= torch.iinfo(torch.int32).max else grid  # half the bytes
    right = (grid[:, :, :-1].transpose(1, 2), grid[:, :, 1:].transpose(1, 2))
    down = (grid[:, :-1, :], grid[:, 1:, :])
    first = torch.cat([right[0].flatten(), down[0].flatten()])
    second = torch.cat([right[1].flatten(), down[1].flatten()])
    keep = first != second
    if dedupe:
        keep[1:] &= (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    keep = torch.nonzero(keep).flatten()  # once for both ends: a boolean index runs it twice
    first, second = first.index_select(0, keep), second.index_select(0, keep)
    if dedupe:
        return distinct_pairs(first, second, size)
    return torch.minimum(first, second).long(), torch.maximum(first, second).long()


def distinct_pairs(first: Tensor, second: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The distinct unordered pairs among [E] pairs of vertex ids in [0, size) whose ends differ
    (int32 or int64 ids).

    Returns:
        (low [K], high [K]) int64 with low < high, sorted by (low, high). The pair keys
        low * size + high are sorted in 32 bits when they fit (faster than 64).
    """
    key_type = torch.int32 if size * size <= torch.iinfo(torch.int32).max + 1 else torch.int64
    low = torch.minimum(first, second).to(key_type)
    high = torch.maximum(first, second).to(key_type)
    keys = torch.unique(low * size + high).long()
    return keys // size, keys % size


def pairs_between(first: Tensor, second: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The distinct unordered pairs among [E] pairs of ids in [0, size), pairs whose two ends are
    equal dropped: which groups touch, given the group at either end of every edge.

    Returns:
        (low [K], high [K]) int64 with low < high, sorted by (low, high) (`distinct_pairs`).
    """
    differ = torch.nonzero(first != second).flatten()
    return distinct_pairs(first.index_select(0, differ), second.index_select(0, differ), size)


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
    mean, variance, count, new_mass = pool_statistics(graph, links, pooling=pooling)
    if boxes and graph.grid is not None:
        # A pixel's box is its corner plus one: group the corners, not [P, 4] boxes.
        rows, columns = _pixel_corners(graph.grid, parent.device)
        box = _box_of_groups((rows, columns, rows, columns), parent, size)
        box[:, 2:] += 1
    elif boxes:
        box = group_boxes(graph.box, parent, size)
    else:
        box = graph.box.new_zeros(size, 0)
    image = graph.image.new_zeros(size).scatter_(0, parent, graph.image)
    if graph.grid is not None:
        src, dst = _grid_edges_between(parent.view(graph.grid), size, dedupe=dedupe)
    else:
        src, dst = parent.index_select(0, graph.src), parent.index_select(0, graph.dst)
        between = torch.nonzero(src != dst).flatten()
        src, dst = src.index_select(0, between), dst.index_select(0, between)
        if dedupe:
            src, dst = distinct_pairs(src, dst, size)
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


def group_boxes(box: Tensor, group: Tensor, size: int) -> Tensor:
    """[size, 4] bounding box (y0, x0, y1, x1) of each group of boxes ([N, 4] box, [N] group
    in [0, size), every group non-empty)."""
    return _box_of_groups(box.t(), group, size)


def _box_of_groups(sides: Sequence[Tensor], group: Tensor, size: int) -> Tensor:
    """[size, 4]: in each group, the least of the first two of the four [N] `sides` (y0, x0)
    and the greatest of the last two (y1, x1); one 1-D scatter per side, several times faster
    on CPU than one scatter of [N, 2] rows."""
    columns = []
    for side, reduce in zip(sides, ("amin", "amin", "amax", "amax"), strict=True):
        info = torch.iinfo(side.dtype)
        start = side.new_full((size,), info.max if reduce == "amin" else info.min)
        columns.append(start.scatter_reduce_(0, group, side, reduce=reduce))
    return torch.stack(columns, 1)


def pool_statistics(
    graph: RegionGraph, links: Links, *, pooling: str = "exact"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Feature statistics of the next level's vertices (see `pool_vertices`).

    Differentiable in graph.mean, graph.variance, graph.mass and links.confidence; the
    tokenizer calls it on the no-gradient pass (inside `pool_vertices`) and again on the
    differentiable replay of the merges, with the same arithmetic, so both see the same values.

    Returns:
        (mean [V', d], variance [V', d], count [V'], mass [V']).
    """
    parent, size = links.parent, links.num_parents
    dim = graph.mean.shape[1]
    mass = graph.mass * links.confidence
    weight = graph.count if pooling == "exact" else mass
    if graph.grid is not None and pooling == "exact":
        # Pixel level: every vertex is one pixel with no variance, so the weights are all one.
        count = torch.bincount(parent, minlength=size).to(mass.dtype)
        new_mass = mass.new_zeros(size).scatter_add(0, parent, mass)
        columns = graph.mean.t()
        sums = sum_columns(torch.cat([columns, columns.square()]), parent, size)
        mean = sums[:, :dim] / count[:, None]
        variance = (sums[:, dim:] / count[:, None] - mean.square()).clamp(min=0)
    else:
        # All sums at once, one row per quantity: weight, count, mass, first and second moments.
        columns = torch.cat(
            [
                torch.stack([weight, graph.count, mass]),
                weight * graph.mean.t(),
                weight * (graph.variance + graph.mean.square()).t(),
            ]
        )
        sums = sum_columns(columns, parent, size)
        total = sums[:, 0:1]
        mean = sums[:, 3 : 3 + dim] / total
        variance = (sums[:, 3 + dim :] / total - mean.square()).clamp(min=0)
        count, new_mass = sums[:, 1], sums[:, 2]
    return mean, variance, count, new_mass


def sum_columns(columns: Tensor, group: Tensor, size: int) -> Tensor:
    """[size, k] sums over each group ([N] in [0, size)) of the k quantities in the rows of
    `columns` ([k, N], each row contiguous).

    One scatter_add along the rows: each row is added in index order, as a 1-D scatter_add of
    that row alone would (the same bits, whatever the batch), several times faster on CPU than
    index_add of [N, k] rows and one call instead of k. Out of place, so autograd sees it.
    """
    rows = columns.shape[0]
    sums = columns.new_zeros(rows, size).scatter_add(1, group.expand(rows, -1), columns)
    return sums.t().contiguous()
