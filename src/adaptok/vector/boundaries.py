"""Shared region boundaries of a label map, traced once on the pixel-corner lattice.

The boundary between two regions is made of *crack edges*: the unit edges of the pixel-corner
lattice that separate two pixels of different regions (or a pixel from the outside of the image).
A *junction* is a lattice vertex where the boundary branches (three or four crack edges meet) or an
image corner. Between two junctions the crack edges form a *chain*: a polyline that separates one
fixed pair of regions (a, b), a < b, oriented so that region a lies on its left; the outside of the
image is region -1. A closed boundary without junction (an island) is one closed chain.

Every chain is traced once. Each region's outline is a set of *rings* (its outer boundary and one
ring per hole), and each ring is a cyclic sequence of *chain instances*: a chain walked forwards
(the region is its left side a) or backwards (the region is its right side b). Both neighbours of a
chain therefore use the same geometry, so whatever later stages do to a chain (simplify, smooth,
fit curves) both sides see the identical curve, and the regions can never leave gaps or overlap.

Everything here is numpy array work: crack edges come from comparing shifted label maps, chains and
rings from successor arrays ordered by pointer jumping (list ranking). There is no Python loop over
pixels, edges, chains or regions; the loops below run over doubling rounds (logarithmic in the
longest chain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import AdaptokError

__all__ = ["Boundaries", "trace_boundaries"]

# Directions of travel on the lattice, clockwise on screen (y grows downwards):
# 0 = right (+x), 1 = down (+y), 2 = left (-x), 3 = up (-y).
_STEP_X = np.array([1, 0, -1, 0])
_STEP_Y = np.array([0, 1, 0, -1])


@dataclass(frozen=True)
class Boundaries:
    """Shared boundary chains of one H x W label map and the rings they form.

    Chains are stored flat, one after the other; chain c owns
    `points[chain_offsets[c]:chain_offsets[c + 1]]`. Lattice point (x, y) is the top-left corner of
    pixel (y, x), so coordinates run over 0..W and 0..H.

    Attributes:
        height: H, rows of the label map.
        width: W, columns of the label map.
        points: [P, 2] int64 (x, y) corner points of every chain (only the points where the chain
            turns, plus both ends); a closed chain repeats its first point at its end.
        chain_offsets: [C + 1] int64 start of every chain in `points`, then P.
        left: [C] int64 region on the left of each chain (the smaller id; -1 = outside the image).
        right: [C] int64 region on the right of each chain (the larger id, never -1).
        closed: [C] bool whether the chain is a closed loop (an island boundary without junction).
        ring_chain: [K] int64 chain of every chain instance, in drawing order: grouped by region
            (increasing id), then by ring, then in walking order along the ring.
        ring_reversed: [K] bool whether the instance walks its chain backwards (region on its
            right).
        ring_region: [K] int64 region whose outline the instance belongs to (non-decreasing).
        ring_start: [K] bool whether the instance begins a new ring.
    """

    height: int
    width: int
    points: np.ndarray
    chain_offsets: np.ndarray
    left: np.ndarray
    right: np.ndarray
    closed: np.ndarray
    ring_chain: np.ndarray
    ring_reversed: np.ndarray
    ring_region: np.ndarray
    ring_start: np.ndarray

    @property
    def num_chains(self) -> int:
        return int(self.left.shape[0])

    @property
    def num_rings(self) -> int:
        return int(self.ring_start.sum())


def trace_boundaries(labels: np.ndarray) -> Boundaries:
    """Trace the shared boundaries of a label map.

    Args:
        labels: [H, W] integer region ids in 0..R-1 (regions need not be connected; a region in
            several pieces gets one ring per piece outline).

    Returns:
        The chains (each traced once) and, for every region, its rings as sequences of chain
        instances.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise AdaptokError(
            f"labels must be a non-empty [H, W] integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.min() < 0:
        raise AdaptokError("labels must be non-negative region ids (-1 is reserved for outside)")
    padded = np.pad(labels.astype(np.int64, copy=False), 1, constant_values=-1)
    edges = _crack_edges(padded)
    chains = _trace_chains(edges)
    rings = _link_rings(padded, edges, chains)
    return Boundaries(
        height=edges.height,
        width=edges.width,
        points=chains.points,
        chain_offsets=chains.offsets,
        left=chains.left,
        right=chains.right,
        closed=chains.closed,
        ring_chain=rings.instance // 2,
        ring_reversed=(rings.instance % 2).astype(bool),
        ring_region=rings.region,
        ring_start=rings.start,
    )


class _CrackEdges(NamedTuple):
    """Crack edges of an H x W label map, each oriented with the smaller region on its left.

    Lattice vertex (x, y) has index y * (W + 1) + x. Edge ids: the horizontal edges first, in
    raster order of their left end, then the vertical ones, in raster order of their top end.

    Attributes:
        height, width: H and W.
        start, end: [E] int64 vertex where each edge starts and ends.
        left, right: [E] int64 region on each side (left < right; -1 = outside the image).
        direction: [E] int64 direction of travel (0 right, 1 down, 2 left, 3 up).
        junction: [V] bool vertices where the boundary branches, plus the image corners.
        longest_chain: most crack edges around one region: a bound on the length of every chain
            (all its edges have the same region on their right).
        h_start: [E_h] int64 left end of the horizontal edges (ids 0..E_h-1), increasing.
        v_start: [E_v] int64 top end of the vertical edges (ids E_h..E-1), increasing.
    """

    height: int
    width: int
    start: np.ndarray
    end: np.ndarray
    left: np.ndarray
    right: np.ndarray
    direction: np.ndarray
    junction: np.ndarray
    longest_chain: int
    h_start: np.ndarray
    v_start: np.ndarray


class _TracedChains(NamedTuple):
    """The chains of `_trace_chains` (fields of `Boundaries`, plus what linking rings needs).

    Attributes:
        points, offsets, left, right, closed: as `Boundaries.points`, `chain_offsets`, `left`,
            `right`, `closed`.
        chain: [E] int64 chain of every crack edge.
        first_edge, last_edge: [C] int64 first and last crack edge of every chain.
    """

    points: np.ndarray
    offsets: np.ndarray
    left: np.ndarray
    right: np.ndarray
    closed: np.ndarray
    chain: np.ndarray
    first_edge: np.ndarray
    last_edge: np.ndarray


class _Rings(NamedTuple):
    """Chain instances in drawing order (instance 2c walks chain c forwards, 2c + 1 backwards).

    Attributes:
        instance: [K] int64 instance id.
        region: [K] int64 region whose outline it belongs to (non-decreasing).
        start: [K] bool whether it begins a new ring.
    """

    instance: np.ndarray
    region: np.ndarray
    start: np.ndarray


def _crack_edges(padded: np.ndarray) -> _CrackEdges:
    """Every unit lattice edge between two different regions of a label map padded with -1."""
    height, width = padded.shape[0] - 2, padded.shape[1] - 2
    row = width + 1  # vertex (x, y) has index y * row + x
    # Flat indices, so that each edge's position is its start vertex: the comparisons run over
    # [H + 1, W + 1] (horizontal) and [H, W + 1] (vertical) views whose extra column compares the
    # padding with itself and finds nothing.
    flat = padded.ravel()
    # Horizontal edge from (x, y) to (x + 1, y): pixel above on its left, pixel below on its right.
    h_start = np.flatnonzero(padded[:-1, 1:] != padded[1:, 1:])
    above = h_start + h_start // row + 1  # padded[y, x + 1] in the flat padded map
    # Vertical edge from (x, y) to (x, y + 1): walking down, the pixel at the right of the screen
    # is on the walker's left.
    v_start = np.flatnonzero(padded[1:-1, :-1] != padded[1:-1, 1:])
    screen_left = v_start + v_start // row + width + 2  # padded[y + 1, x]
    start = np.concatenate([h_start, v_start])
    end = np.concatenate([h_start + 1, v_start + row])
    left = np.concatenate([flat[above], flat[screen_left + 1]])
    right = np.concatenate([flat[above + width + 2], flat[screen_left]])
    direction = np.concatenate([np.zeros_like(h_start), np.ones_like(v_start)])
    # Orient every edge so the smaller region is on its left: along a chain the pair is constant,
    # so this orientation makes consecutive edges follow head to tail.
    flip = left > right
    start, end = np.where(flip, end, start), np.where(flip, start, end)
    left, right = np.where(flip, right, left), np.where(flip, left, right)
    direction = np.where(flip, direction + 2, direction)
    num_vertices = (height + 1) * row
    degree = np.bincount(start, minlength=num_vertices) + np.bincount(end, minlength=num_vertices)
    junction = degree != 2
    junction[[0, width, height * row, height * row + width]] = True  # image corners stay put
    regions = int(right.max(initial=-1)) + 1
    around = np.bincount(right, minlength=regions) + np.bincount(left[left >= 0], minlength=regions)
    return _CrackEdges(
        height=height,
        width=width,
        start=start,
        end=end,
        left=left,
        right=right,
        direction=direction,
        junction=junction,
        longest_chain=int(around.max(initial=0)),
        h_start=h_start,
        v_start=v_start,
    )


def _trace_chains(edges: _CrackEdges) -> _TracedChains:
    """Crack edges joined into chains between junctions: successor arrays, cycle breaking, list
    ranking; each chain keeps only its turning points and ends."""
    start, end, direction = edges.start, edges.end, edges.direction
    row = edges.width + 1
    num_edges = start.shape[0]
    edge_ids = np.arange(num_edges)
    in_edge = np.full(edges.junction.shape[0], -1, dtype=np.int64)
    in_edge[end] = edge_ids  # unique at non-junction vertices, which is all we read
    previous = np.where(edges.junction[start], -1, in_edge[start])
    previous = _break_cycles(previous, longest=edges.longest_chain)
    head, rank = _list_rank(previous)
    is_head = previous < 0
    chain = (np.cumsum(is_head) - 1)[head]  # [E] chain id of every edge, numbered by head edge
    num_chains = int(is_head.sum())
    edges_per_chain = np.bincount(chain, minlength=num_chains)
    # Walking order without sorting: chain after chain, each edge at its rank.
    order = np.empty(num_edges, dtype=np.int64)
    order[(np.cumsum(edges_per_chain) - edges_per_chain)[chain] + rank] = edge_ids
    first_edge = order[np.cumsum(edges_per_chain) - edges_per_chain]
    last_edge = order[np.cumsum(edges_per_chain) - 1]
    closed = ~edges.junction[start[first_edge]]  # a chain without junction is a closed loop

    # Chain vertices: the start of every edge in walking order, then the end of the last edge.
    sorted_chain = chain[order]
    vertex = np.empty(num_edges + num_chains, dtype=np.int64)
    vertex[np.arange(num_edges) + sorted_chain] = start[order]
    vertex_offsets = np.concatenate([[0], np.cumsum(edges_per_chain + 1)])
    vertex[vertex_offsets[1:] - 1] = end[last_edge]
    # Keep only the corners: drop vertices where the walk goes straight on.
    sorted_direction = direction[order]
    position = np.arange(num_edges)
    is_first = np.zeros(num_edges, dtype=bool)
    is_first[np.cumsum(edges_per_chain) - edges_per_chain] = True
    turns = np.ones(num_edges, dtype=bool)
    turns[1:] = sorted_direction[1:] != sorted_direction[:-1]
    keep_vertex = np.ones(num_edges + num_chains, dtype=bool)
    keep_vertex[position + sorted_chain] = turns | is_first
    points_index = vertex[keep_vertex]
    kept_per_chain = np.add.reduceat(keep_vertex.astype(np.int64), vertex_offsets[:-1])
    return _TracedChains(
        points=np.stack([points_index % row, points_index // row], 1),
        offsets=np.concatenate([[0], np.cumsum(kept_per_chain)]),
        left=edges.left[first_edge],
        right=edges.right[first_edge],
        closed=closed,
        chain=chain,
        first_edge=first_edge,
        last_edge=last_edge,
    )


def _link_rings(padded: np.ndarray, edges: _CrackEdges, chains: _TracedChains) -> _Rings:
    """Chain instances linked at their end vertex by a local turning rule into rings, ordered
    by region, then ring, then walking order."""
    row = edges.width + 1
    first_edge, last_edge = chains.first_edge, chains.last_edge
    num_chains = first_edge.shape[0]
    # Instance 2c walks chain c forwards (region = left), 2c + 1 backwards (region = right).
    inst_region = np.stack([chains.left, chains.right], 1).reshape(-1)
    # Vertex where each instance ends and direction of its last step.
    forward_end, forward_dir = edges.end[last_edge], edges.direction[last_edge]
    backward_end, backward_dir = edges.start[first_edge], (edges.direction[first_edge] + 2) % 4
    inst_end = np.stack([forward_end, backward_end], 1).reshape(-1)
    inst_dir = np.stack([forward_dir, backward_dir], 1).reshape(-1)
    valid = inst_region >= 0
    valid_ids = np.nonzero(valid)[0]
    region = inst_region[valid_ids]
    out_dir = _turn(padded, inst_end[valid_ids], inst_dir[valid_ids], region, row)
    out_edge = _edge_leaving(inst_end[valid_ids], out_dir, edges)
    if bool((out_edge < 0).any()):  # pragma: no cover - would be a bug in the turning rule
        raise AdaptokError("internal error: a ring could not be closed")
    next_chain = chains.chain[out_edge]
    next_instance = 2 * next_chain + (chains.left[next_chain] != region)
    # Compact ids over the valid instances and rank each ring (cycles of `successor`).
    compact = np.full(2 * num_chains, -1, dtype=np.int64)
    compact[valid_ids] = np.arange(valid_ids.shape[0])
    successor = compact[next_instance]
    predecessor = np.empty_like(successor)
    predecessor[successor] = np.arange(successor.shape[0])
    # A ring has at most as many chain instances as its region has.
    longest_ring = int(np.bincount(region).max(initial=0))
    predecessor = _break_cycles(predecessor, all_cycles=True, longest=longest_ring)
    ring_head, ring_rank = _list_rank(predecessor)
    # Drawing order without a big sort: rings ordered by region (stable), instances by rank.
    ring_is_head = predecessor < 0
    ring = (np.cumsum(ring_is_head) - 1)[ring_head]
    ring_length = np.bincount(ring)
    ring_rank_order = np.argsort(region[ring_is_head], kind="stable")  # ring ids by region
    ring_position = np.empty_like(ring_rank_order)
    ring_position[ring_rank_order] = np.arange(ring_rank_order.shape[0])
    sorted_length = ring_length[ring_rank_order]
    ring_offset = (np.cumsum(sorted_length) - sorted_length)[ring_position]
    ring_order = np.empty_like(ring)
    ring_order[ring_offset[ring] + ring_rank] = np.arange(ring.shape[0])
    return _Rings(
        instance=valid_ids[ring_order],
        region=region[ring_order],
        start=ring_rank[ring_order] == 0,
    )


def _edge_leaving(vertex: np.ndarray, direction: np.ndarray, edges: _CrackEdges) -> np.ndarray:
    """Id of the crack edge leaving each vertex in each direction (-1 if there is none).

    Both edge lists (horizontal, vertical) are sorted by their left or top end, so a binary
    search finds an edge from its position without a dense per-vertex table.
    """
    horizontal = direction % 2 == 0
    # The edge's left or top end: the vertex itself going right or down, the previous vertex of
    # the row or column going left or up.
    key = vertex - np.array([0, 0, 1, edges.width + 1])[direction]
    h_key, v_key = edges.h_start, edges.v_start
    num_horizontal = h_key.shape[0]
    found = np.full(vertex.shape[0], -1, dtype=np.int64)
    for is_horizontal, keys, offset in ((True, h_key, 0), (False, v_key, num_horizontal)):
        query = horizontal == is_horizontal
        slot = np.searchsorted(keys, key[query])
        slot_clipped = np.minimum(slot, max(keys.shape[0] - 1, 0))
        hit = (slot < keys.shape[0]) & (keys[slot_clipped] == key[query]) if keys.size else slot < 0
        found[np.nonzero(query)[0][hit]] = slot[hit] + offset
    return found


def _turn(
    padded: np.ndarray, vertex: np.ndarray, arrival: np.ndarray, region: np.ndarray, row: int
) -> np.ndarray:
    """Direction in which a ring of `region` leaves `vertex` after arriving in `arrival`.

    The region is on the walker's left. The walker turns left if it can, else goes straight, else
    turns right: it hugs the region's pixel at this corner, so two pixels of a region that only
    touch diagonally are never joined (regions are 4-connected).
    """
    y, x = vertex // row, vertex % row
    # Pixel on the left of an edge leaving the vertex in direction d: NE, SE, SW, NW for d = 0..3;
    # the pixel on its right is the next one in that list.
    quad = np.stack([padded[y, x + 1], padded[y + 1, x + 1], padded[y + 1, x], padded[y, x]], 1)
    choice = np.full(vertex.shape[0], -1, dtype=np.int64)
    for turn in (-1, 0, 1):  # three candidate moves, each evaluated for every walker at once
        out = (arrival + turn) % 4
        on_left = np.take_along_axis(quad, out[:, None], 1)[:, 0] == region
        on_right = np.take_along_axis(quad, ((out + 1) % 4)[:, None], 1)[:, 0] == region
        choice = np.where((choice < 0) & on_left & ~on_right, out, choice)
    return choice


def _break_cycles(previous: np.ndarray, *, longest: int, all_cycles: bool = False) -> np.ndarray:
    """Cut every cycle of a predecessor array at its smallest element (-1 = no predecessor).

    Pointer doubling: after k rounds every element knows the minimum over its 2^k predecessors,
    which for an element on a cycle is, once 2^k exceeds the cycle length, the cycle's minimum;
    an element of an open list has then reached its head. `longest` bounds the length of every
    list and cycle, so log2(longest) + 1 rounds are enough (more rounds change nothing).
    """
    n = previous.shape[0]
    ids = np.arange(n)
    if n == 0:
        return previous
    jump = np.where(previous < 0, ids, previous)
    smallest = ids.copy()
    for _ in range(max(1, int(np.ceil(np.log2(max(min(longest, n), 1)))) + 1)):
        smallest = np.minimum(smallest, smallest[jump])
        jump = jump[jump]
    # Elements of open chains have reached their head, whose predecessor is -1.
    on_cycle = previous[jump] >= 0 if not all_cycles else np.ones(n, dtype=bool)
    cut = on_cycle & (smallest == ids)
    return np.where(cut, -1, previous)


def _list_rank(previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head and position of every element of linked lists given by predecessors (-1 = head)."""
    ids = np.arange(previous.shape[0])
    jump = np.where(previous < 0, ids, previous)
    rank = (previous >= 0).astype(np.int64)
    while True:
        new_jump = jump[jump]
        if np.array_equal(new_jump, jump):
            return jump, rank
        rank = rank + rank[jump]  # heads have rank 0, so reaching one adds nothing
        jump = new_jump
