"""Cubic Bézier segments through the simplified chain points (all chains at once).

Each segment joins two consecutive points of a chain. Its control points follow the tangents at
both ends, Catmull-Rom style: the tangent at a free point is the mean direction of its two
neighbouring segments, scaled by the shorter of them (so curves never overshoot a short segment)
and by `smoothness`. Fixed points (junctions, genuine corners) get no tangent, so the curve leaves
them straight and corners stay sharp. Closed chains wrap, so islands come out round.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .simplify import Chains

__all__ = ["Curves", "fit_beziers"]


class Curves(NamedTuple):
    """Cubic Bézier segments of every chain, stored flat.

    Chain c owns segments offsets[c]:offsets[c + 1]; consecutive segments of a chain share their
    end points, and the first and last points of a chain are those of the traced boundary chain.

    Attributes:
        start: [S, 2] float64 (x, y) first point of every segment, in pixels.
        control1: [S, 2] float64 first control point.
        control2: [S, 2] float64 second control point.
        end: [S, 2] float64 last point.
        offsets: [C + 1] int64 first segment of every chain, then S.
    """

    start: np.ndarray
    control1: np.ndarray
    control2: np.ndarray
    end: np.ndarray
    offsets: np.ndarray


def fit_beziers(chains: Chains, smoothness: float) -> Curves:
    """One cubic Bézier per pair of consecutive chain points.

    Args:
        chains: simplified chains (each with at least two points).
        smoothness: tangent scale; 0 gives straight segments (a polygon), 1 Catmull-Rom-like
            curves through the points.

    Returns:
        The segments of every chain, in walking order.
    """
    points = chains.points
    previous, following = chains.neighbours()
    incoming = points - points[previous]
    outgoing = points[following] - points
    length_in = np.linalg.norm(incoming, axis=1)
    length_out = np.linalg.norm(outgoing, axis=1)
    unit_in = incoming / np.maximum(length_in, 1e-12)[:, None]
    unit_out = outgoing / np.maximum(length_out, 1e-12)[:, None]
    tangent = 0.5 * (unit_in + unit_out) * np.minimum(length_in, length_out)[:, None]
    tangent = tangent * smoothness * (~chains.fixed)[:, None]
    is_last = np.zeros(points.shape[0], dtype=bool)
    is_last[chains.offsets[1:] - 1] = True
    first = np.nonzero(~is_last)[0]
    second = first + 1
    segments_per_chain = np.diff(chains.offsets) - 1
    return Curves(
        start=points[first],
        control1=points[first] + tangent[first] / 3,
        control2=points[second] - tangent[second] / 3,
        end=points[second],
        offsets=np.concatenate([[0], np.cumsum(segments_per_chain)]),
    )
