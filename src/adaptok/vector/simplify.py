"""Turn the staircase chains of `trace_boundaries` into few, smooth-looking points.

All chains are processed at once in flat arrays (`points` plus `offsets`, as in `Boundaries`):

1. `refine_chains`: a pixel staircase is replaced by the midpoints of its runs, which lie on the
   straight edge the staircase approximates; corners where both runs are long (`corner_length`
   pixels or more) are genuine corners and stay, as do the chain ends (junctions, shared with
   other chains). Those points are *fixed*.
2. `smooth_chains`: a few passes of the [1, 2, 1] / 4 filter along each chain move the free points
   (closed chains wrap around).
3. `douglas_peucker`: Douglas-Peucker simplification of every chain at once; each round splits
   every segment whose farthest point lies more than `tolerance` pixels away, at that point.

The fixed ends of a chain never move, so chains meeting at a junction still meet after every step.
Loops run over filter passes and simplification rounds, never over points or chains.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Chains", "douglas_peucker", "refine_chains", "smooth_chains"]


class Chains(NamedTuple):
    """Polylines stored flat: chain c owns rows offsets[c]:offsets[c + 1].

    Attributes:
        points: [P, 2] float64 (x, y) in pixels; a closed chain repeats its first point at its end.
        offsets: [C + 1] int64 start of every chain in `points`, then P.
        fixed: [P] bool points that must stay where they are (chain ends, genuine corners).
        closed: [C] bool chains that are closed loops (no junction; their first point is free).
    """

    points: np.ndarray
    offsets: np.ndarray
    fixed: np.ndarray
    closed: np.ndarray

    def chain_of_point(self) -> np.ndarray:
        """[P] int64 chain of every point."""
        return np.repeat(np.arange(self.offsets.shape[0] - 1), np.diff(self.offsets))

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """([P], [P]) index of the previous and next point along the chain.

        Open chains' ends are their own neighbours; closed chains wrap (their duplicated first and
        last point both see the second and the second-to-last point).
        """
        count = self.points.shape[0]
        previous, following = np.arange(-1, count - 1), np.arange(1, count + 1)
        first, last = self.offsets[:-1], self.offsets[1:] - 1
        closed = self.closed
        previous[first] = np.where(closed, last - 1, first)
        following[last] = np.where(closed, first + 1, last)
        previous[last[closed]] = last[closed] - 1
        following[first[closed]] = first[closed] + 1
        return previous, following


def refine_chains(
    points: np.ndarray, offsets: np.ndarray, closed: np.ndarray, *, corner_length: float = 2.0
) -> Chains:
    """Replace pixel staircases by run midpoints, keeping chain ends and genuine corners.

    Args:
        points: [P, 2] (x, y) corner points of the chains (only turning points and ends).
        offsets: [C + 1] start of every chain in `points`.
        closed: [C] bool closed chains (their last point repeats the first).
        corner_length: a turn whose two runs are both at least this long (pixels) is kept as a
            sharp corner; shorter runs are treated as the steps of a slanted edge. With 2 (the
            default) only turns next to a one-pixel step are cut: the line between the two run
            midpoints then passes ab / (2 sqrt(a^2 + b^2)) < 0.5 pixel from the corner of runs a
            and b, so it crosses no pixel centre. 0 keeps every turn (exact pixel outlines).

    Returns:
        The refined chains with their fixed points marked.
    """
    points, offsets = _start_closed_chains_at_a_turn(points.astype(np.float64), offsets, closed)
    num_chains = offsets.shape[0] - 1
    runs_per_chain = np.diff(offsets) - 1
    is_last_point = np.zeros(points.shape[0], dtype=bool)
    is_last_point[offsets[1:] - 1] = True
    run_start = np.nonzero(~is_last_point)[0]  # run i of a chain goes from point i to i + 1
    run_chain = np.repeat(np.arange(num_chains), runs_per_chain)
    run_local = run_start - offsets[run_chain]
    run_count = runs_per_chain[run_chain]
    delta = points[run_start + 1] - points[run_start]
    length = np.abs(delta).sum(1)
    midpoint = points[run_start] + delta / 2
    # The corner after run i sits between run i and run i + 1 (run 0 again for closed chains).
    is_final_run = run_local == run_count - 1
    run_ids = np.arange(run_start.shape[0])
    next_run_index = np.where(is_final_run, run_ids - run_local, run_ids + 1)
    long_turn = (length >= corner_length) & (length[next_run_index] >= corner_length)
    chain_closed = closed[run_chain]
    junction_end = is_final_run & ~chain_closed
    keep_corner = junction_end | (long_turn & (~is_final_run | chain_closed))

    # Items in walking order: an open chain starts at its first point; run i contributes its
    # midpoint and, if kept, the corner after it; a closed chain ends by repeating the midpoint
    # of its run 0. Every item's place follows from counts, without sorting.
    starts_open = (~closed).astype(np.int64)
    corners_per_chain = np.bincount(run_chain[keep_corner], minlength=num_chains)
    items_per_chain = starts_open + runs_per_chain + corners_per_chain + closed
    new_offsets = np.concatenate([[0], np.cumsum(items_per_chain)])
    corners_before = np.cumsum(keep_corner) - keep_corner  # kept corners of earlier runs
    chain_corners_before = np.cumsum(corners_per_chain) - corners_per_chain
    midpoint_at = (
        new_offsets[run_chain]
        + starts_open[run_chain]
        + run_local
        + corners_before
        - chain_corners_before[run_chain]
    )
    open_chains = np.nonzero(~closed)[0]
    closed_chains = np.nonzero(closed)[0]
    closed_first_runs = np.nonzero(chain_closed & (run_local == 0))[0]
    new_points = np.empty((int(new_offsets[-1]), 2))
    fixed = np.zeros(new_points.shape[0], dtype=bool)
    new_points[new_offsets[open_chains]] = points[offsets[open_chains]]
    fixed[new_offsets[open_chains]] = True
    new_points[midpoint_at] = midpoint
    new_points[midpoint_at[keep_corner] + 1] = points[run_start[keep_corner] + 1]
    fixed[midpoint_at[keep_corner] + 1] = True
    new_points[new_offsets[closed_chains + 1] - 1] = midpoint[closed_first_runs]
    return Chains(new_points, new_offsets, fixed, closed.copy())


def _start_closed_chains_at_a_turn(
    points: np.ndarray, offsets: np.ndarray, closed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A closed chain may start in the middle of a straight edge (where the tracer entered the
    loop); its first and last runs are then one run cut in two, and the corner beside the cut
    would look like a one-pixel step and be smoothed away. Such chains drop the seam point and
    close at their second point (a genuine turn) instead."""
    first, last = offsets[:-1], offsets[1:] - 1
    # closed chains have at least 4 runs (a rectangle), so first + 1 and last - 1 exist there
    candidates = np.nonzero(closed & (last - first >= 4))[0]
    seam, after, before = first[candidates], first[candidates] + 1, last[candidates] - 1
    incoming = points[seam] - points[before]
    outgoing = points[after] - points[seam]
    straight = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0] == 0
    chains = candidates[straight]
    if chains.shape[0] == 0:
        return points, offsets
    points = points.copy()
    points[last[chains]] = points[first[chains] + 1]  # close at the second point
    keep = np.ones(points.shape[0], dtype=bool)
    keep[first[chains]] = False
    removed = np.zeros(offsets.shape[0] - 1, dtype=np.int64)
    removed[chains] = 1
    return points[keep], offsets - np.concatenate([[0], np.cumsum(removed)])


def smooth_chains(chains: Chains, passes: int, *, max_shift: float | None = None) -> Chains:
    """Apply `passes` rounds of the [1, 2, 1] / 4 filter to the free points of every chain.

    Smoothing shrinks closed curves (a one-pixel island would shrink to a dot), so every loop (a
    chain ending where it starts) is then scaled back to the area it enclosed, about its centroid
    (islands) or about its junction (loops hanging from one junction, which stays put).
    """
    if passes <= 0:
        return chains
    previous, following = chains.neighbours()
    free = ~chains.fixed
    # Coordinates as separate contiguous columns: all the work below is elementwise.
    start_x, start_y = np.ascontiguousarray(chains.points.T)
    x, y = start_x, start_y
    for _ in range(passes):
        x = np.where(free, (x[previous] + 2 * x + x[following]) / 4, x)
        y = np.where(free, (y[previous] + 2 * y + y[following]) / 4, y)
    if max_shift is not None:
        # Keep every point within max_shift pixels of where it started (on the pixel boundary).
        shift_x, shift_y = x - start_x, y - start_y
        length = np.sqrt(shift_x * shift_x + shift_y * shift_y)
        factor = np.minimum(1.0, max_shift / np.maximum(length, 1e-12))
        x, y = start_x + shift_x * factor, start_y + shift_y * factor
    first, last = chains.offsets[:-1], chains.offsets[1:] - 1
    loop = (
        (last - first >= 3) & (start_x[first] == start_x[last]) & (start_y[first] == start_y[last])
    )
    if loop.any():
        chain = chains.chain_of_point()
        before = _loop_areas(start_x, start_y, chains.offsets)
        after = _loop_areas(x, y, chains.offsets)
        scale = np.sqrt(np.abs(before) / np.maximum(np.abs(after), 1e-12)).clip(1.0, 4.0)
        scale = np.where(loop, scale, 1.0)[chain]
        # Anchor: the junction of a hanging loop, the centroid of an island.
        count = np.maximum(np.diff(chains.offsets) - 1, 1)
        centroid_x = (np.add.reduceat(x, first) - x[last]) / count
        centroid_y = (np.add.reduceat(y, first) - y[last]) / count
        anchor_x = np.where(chains.closed, centroid_x, x[first])[chain]
        anchor_y = np.where(chains.closed, centroid_y, y[first])[chain]
        x, y = anchor_x + scale * (x - anchor_x), anchor_y + scale * (y - anchor_y)
    return chains._replace(points=np.stack([x, y], 1))


def _loop_areas(x: np.ndarray, y: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[C] signed area enclosed by every chain's polyline closed back to its start."""
    following = np.arange(1, x.shape[0] + 1)
    following[offsets[1:] - 1] = offsets[:-1]
    cross = x * y[following] - x[following] * y
    return 0.5 * np.add.reduceat(cross, offsets[:-1])


def douglas_peucker(chains: Chains, tolerance: float) -> Chains:
    """Keep, in every chain, the fixed points and those Douglas-Peucker needs within `tolerance`.

    Args:
        chains: the chains to simplify.
        tolerance: largest distance (pixels) a dropped point may lie from the simplified polyline;
            0 keeps every point.

    Returns:
        The simplified chains (a subset of the points, same order).
    """
    points = chains.points
    keep = chains.fixed.copy()
    keep[chains.offsets[:-1]] = True
    keep[chains.offsets[1:] - 1] = True
    if tolerance <= 0:
        keep[:] = True
    # A chain that ends where it starts (an island, or a loop hanging from one junction) keeps
    # three more points, a quarter, half and three quarters along, so it never collapses.
    first, last = chains.offsets[:-1], chains.offsets[1:] - 1
    loop = (last - first >= 3) & (points[first] == points[last]).all(1)
    for quarter in (1, 2, 3):
        keep[first[loop] + quarter * (last[loop] - first[loop]) // 4] = True
    # Points still undecided: not kept, and in a segment that may still be split. Coordinates
    # as separate contiguous columns: the distances are elementwise work on 1-D arrays.
    x, y = np.ascontiguousarray(points[:, 0]), np.ascontiguousarray(points[:, 1])
    open_points = np.nonzero(~keep)[0]
    kept = np.nonzero(keep)[0]
    slot = np.searchsorted(kept, open_points)
    before, after = kept[slot - 1], kept[slot]  # the kept ends of each open point's segment
    while open_points.shape[0]:
        distance = _segment_distance(
            x[open_points], y[open_points], x[before], y[before], x[after], y[after]
        )
        # Open points are sorted, so each segment's points are one contiguous run.
        new_run = before[1:] != before[:-1]
        run_start = np.nonzero(np.r_[True, new_run])[0]
        run_max = np.maximum.reduceat(distance, run_start)
        run_of_point = np.cumsum(np.r_[False, new_run])
        splits = run_max > tolerance
        # First point reaching its run's maximum, in runs that must split.
        at_max = np.nonzero((distance == run_max[run_of_point]) & splits[run_of_point])[0]
        run_of_max = run_of_point[at_max]
        first = np.ones(at_max.shape[0], dtype=bool)
        first[1:] = run_of_max[1:] != run_of_max[:-1]
        chosen = open_points[at_max[first]]
        keep[chosen] = True
        # The chosen point ends one half of its segment and starts the other.
        split_at = np.full(run_start.shape[0], -1)
        split_at[run_of_max[first]] = chosen
        split = split_at[run_of_point]
        still_open = splits[run_of_point] & (open_points != split)
        open_points, split = open_points[still_open], split[still_open]
        before = np.where(open_points > split, split, before[still_open])
        after = np.where(open_points < split, split, after[still_open])
    kept_chain = chains.chain_of_point()[keep]
    offsets = np.concatenate(
        [[0], np.cumsum(np.bincount(kept_chain, minlength=chains.offsets.shape[0] - 1))]
    )
    return Chains(points[keep], offsets, chains.fixed[keep], chains.closed)


def _segment_distance(
    x: np.ndarray,
    y: np.ndarray,
    start_x: np.ndarray,
    start_y: np.ndarray,
    end_x: np.ndarray,
    end_y: np.ndarray,
) -> np.ndarray:
    """[P] distance of each point (x, y) to its segment start-end (to `start` if it has no
    length)."""
    direction_x, direction_y = end_x - start_x, end_y - start_y
    length2 = direction_x * direction_x + direction_y * direction_y
    t = ((x - start_x) * direction_x + (y - start_y) * direction_y) / np.maximum(length2, 1e-12)
    t = np.clip(np.where(length2 > 0, t, 0.0), 0.0, 1.0)
    offset_x = x - (start_x + t * direction_x)
    offset_y = y - (start_y + t * direction_y)
    return np.sqrt(offset_x * offset_x + offset_y * offset_y)
