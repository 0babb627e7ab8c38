"""Write the regions' rings of Bézier segments as one compact SVG 1.1 document.

Coordinates are integers on a grid of `units_per_pixel` steps per pixel (the viewBox is scaled
accordingly, so the picture keeps its pixel size): no decimal points, and relative commands (`c`,
`l`) whose small deltas take two or three characters each. Both neighbours of a chain round the
same absolute control points, so their shared curve is identical down to the last unit, and every
ring closes exactly (its integer deltas sum to zero).

The document is assembled as one flat array of string pieces whose positions come from cumulative
sums (one block per emitted segment); number strings come from a lookup table. There is no Python
loop over regions, rings or segments.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .bezier import Curves
from .boundaries import Boundaries

__all__ = ["write_svg"]

_HEX = np.array([f"{i:02x}" for i in range(256)], dtype=object)


def write_svg(
    boundaries: Boundaries,
    curves: Curves,
    colors: np.ndarray,
    *,
    opacity: np.ndarray | None = None,
    units_per_pixel: int = 4,
    background: np.ndarray | None = None,
    crisp_edges: bool = False,
    shorthand: bool = True,
) -> str:
    """Serialise every region as one filled path.

    Args:
        boundaries: rings of every region (chain instances in drawing order).
        curves: Bézier segments of every chain (pixel coordinates).
        colors: [R, 3] uint8 fill colour of every region.
        opacity: [R] float in [0, 1] fill opacity of every region, or None for opaque fills.
        units_per_pixel: coordinate grid steps per pixel (1 = whole pixels).
        background: [3] uint8 colour of a rectangle drawn under all regions, or None.
        crisp_edges: ask renderers not to anti-alias (`shape-rendering="crispEdges"`).
        shorthand: write `s` for curves whose first handle mirrors the previous one.

    Returns:
        The SVG text; path i fills region i.
    """
    scale = units_per_pixel
    start = np.rint(curves.start * scale).astype(np.int64)
    end = np.rint(curves.end * scale).astype(np.int64)
    # Control points are rounded as offsets from their own end point, so the two handles of a
    # smooth point stay exact mirror images and `s` (smooth curveto) can replace `c`.
    control1 = start + np.rint((curves.control1 - curves.start) * scale).astype(np.int64)
    control2 = end - np.rint((curves.end - curves.control2) * scale).astype(np.int64)
    straight = _is_straight(start, control1, control2, end)
    empty = straight & (start == end).all(1)

    # --- emitted rows: the segments of every chain instance, in drawing order ------------------
    chain = boundaries.ring_chain
    reverse = boundaries.ring_reversed
    segment_offsets = curves.offsets
    per_instance = segment_offsets[chain + 1] - segment_offsets[chain]
    instance_of_row = np.repeat(np.arange(chain.shape[0]), per_instance)
    local = np.arange(instance_of_row.shape[0]) - np.repeat(
        np.cumsum(per_instance) - per_instance, per_instance
    )
    row_reverse = reverse[instance_of_row]
    row_chain = chain[instance_of_row]
    segment = np.where(
        row_reverse,
        segment_offsets[row_chain + 1] - 1 - local,
        segment_offsets[row_chain] + local,
    )
    # Zero-length segments are dropped, unless a whole ring is made of them (the path of every
    # region must exist, even if simplification left it without area).
    ring_of_row = (np.cumsum(boundaries.ring_start) - 1)[instance_of_row]
    ring_has_length = np.bincount(ring_of_row, weights=~empty[segment]) > 0
    keep = ~empty[segment] | ~ring_has_length[ring_of_row]
    segment, row_reverse, instance_of_row = segment[keep], row_reverse[keep], instance_of_row[keep]
    origin = np.where(row_reverse[:, None], end[segment], start[segment])
    first_control = np.where(row_reverse[:, None], control2[segment], control1[segment])
    second_control = np.where(row_reverse[:, None], control1[segment], control2[segment])
    target = np.where(row_reverse[:, None], start[segment], end[segment])
    numbers = np.concatenate(
        [first_control - origin, second_control - origin, target - origin], 1
    )  # [rows, 6]; straight rows use only the last two
    row_straight = straight[segment]

    ring_of_instance = np.cumsum(boundaries.ring_start) - 1
    ring = ring_of_instance[instance_of_row]
    region = boundaries.ring_region[instance_of_row]
    rows = segment.shape[0]
    ring_first = np.ones(rows, dtype=bool)
    ring_first[1:] = ring[1:] != ring[:-1]
    ring_last = np.ones(rows, dtype=bool)
    ring_last[:-1] = ring[1:] != ring[:-1]
    region_first = np.ones(rows, dtype=bool)
    region_first[1:] = region[1:] != region[:-1]
    region_last = np.ones(rows, dtype=bool)
    region_last[:-1] = region[1:] != region[:-1]
    # Command of every row: c (curve), l (line), h / v (horizontal / vertical line), s (smooth
    # curve); a straight last row of a ring is left to the closing z.
    kind = np.where(
        row_straight, np.where(numbers[:, 5] == 0, 2, np.where(numbers[:, 4] == 0, 3, 1)), 0
    )
    # s: a curve whose first handle mirrors the previous curve's second one (or, after a line,
    # sits on the current point), as SVG's smooth curveto assumes.
    previous_curve = np.zeros(rows, dtype=bool)
    previous_curve[1:] = (kind[:-1] == 0) & ~ring_first[1:]
    mirror = np.zeros((rows, 2), dtype=np.int64)
    mirror[1:] = numbers[:-1, 4:6] - numbers[:-1, 2:4]
    mirror[~previous_curve] = 0
    smooth = (kind == 0) & (numbers[:, 0:2] == mirror).all(1) & shorthand
    kind = np.where(ring_last & row_straight & ~ring_first, 4, kind)
    kind = np.where(smooth, 5, kind)
    count_numbers = np.array([6, 2, 1, 1, 0, 4])[kind]
    first_column = np.array([0, 4, 4, 5, 0, 2])[kind]
    letter = ring_first.copy()
    letter[1:] |= kind[1:] != kind[:-1]
    letter &= kind != 4

    # --- pieces per row: [header] [M x y] [letter] numbers [z] [footer] -------------------------
    sizes = region_first + 3 * ring_first + letter + count_numbers + ring_last + region_last
    base = np.cumsum(sizes) - sizes
    pieces = np.empty(int(sizes.sum()), dtype=object)
    cursor = base.copy()

    headers = _path_headers(colors, opacity)
    pieces[cursor[region_first]] = headers[region[region_first]]
    cursor += region_first
    low = int(min(numbers.min(initial=0), 0))
    high = int(max(numbers.max(initial=0), origin.max(initial=0), 0))
    plain, spaced = _number_tables(low, high)
    at = cursor[ring_first]
    pieces[at] = "M"
    pieces[at + 1] = plain[origin[ring_first, 0] - low]
    pieces[at + 2] = spaced[origin[ring_first, 1] - low]
    cursor += 3 * ring_first
    pieces[cursor[letter]] = np.array(["c", "l", "h", "v", "", "s"], dtype=object)[kind[letter]]
    cursor += letter
    for slot in range(6):
        has = count_numbers > slot
        value = numbers[np.nonzero(has)[0], first_column[has] + slot]
        table = np.where(letter[has] & (slot == 0), 0, 1)
        text = np.where(table == 0, plain[value - low], spaced[value - low])
        pieces[cursor[has] + slot] = text
    cursor += count_numbers
    pieces[cursor[ring_last]] = "z"
    cursor += ring_last
    pieces[cursor[region_last]] = '"/>\n'

    height, width = boundaries.height, boundaries.width
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" '
        f'height="{height}" viewBox="0 0 {width * scale} {height * scale}">\n'
    )
    tail = "</svg>\n"
    if crisp_edges:  # on a group: resvg ignores shape-rendering on the root element
        head += '<g shape-rendering="crispEdges">\n'
        tail = "</g>\n" + tail
    if background is not None:
        head += f'<rect width="100%" height="100%" fill="#{_hex(background)}"/>\n'
    return head + "".join(pieces.tolist()) + tail


def _is_straight(
    start: np.ndarray, control1: np.ndarray, control2: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """[S] bool segments whose control points lie on the chord between its ends (a line)."""
    chord = end - start
    length2 = (chord**2).sum(1)
    straight = np.ones(start.shape[0], dtype=bool)
    for control in (control1, control2):
        offset = control - start
        cross = offset[:, 0] * chord[:, 1] - offset[:, 1] * chord[:, 0]
        dot = (offset * chord).sum(1)
        straight &= (cross == 0) & (dot >= 0) & (dot <= length2)
    return straight


def _path_headers(colors: np.ndarray, opacity: np.ndarray | None) -> np.ndarray:
    """[R] object array of '<path fill="#rrggbb" d="' strings (with fill-opacity if needed)."""
    colors = np.asarray(colors, dtype=np.int64)
    hexes = _HEX[colors[:, 0]] + _HEX[colors[:, 1]] + _HEX[colors[:, 2]]
    middle = np.full(colors.shape[0], '"', dtype=object)
    if opacity is not None:
        level = np.rint(np.clip(opacity, 0, 1) * 100).astype(np.int64)
        texts = np.array([f'" fill-opacity="{v / 100:g}"' for v in range(101)], dtype=object)
        middle = np.where(level < 100, texts[level], middle)
    return '<path fill="#' + hexes + middle + ' d="'


@lru_cache(maxsize=8)
def _number_tables(low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """Strings of the integers low..high, bare and with the separator they need after a number."""
    plain = np.array([str(v) for v in range(low, high + 1)], dtype=object)
    spaced = np.array(
        [(" " if v >= 0 else "") + str(v) for v in range(low, high + 1)], dtype=object
    )
    return plain, spaced


def _hex(color: np.ndarray) -> str:
    return "".join(_HEX[int(c)] for c in np.asarray(color).reshape(-1)[:3])
