"""Write the regions' rings of Bézier segments as one compact SVG 1.1 document.

Coordinates are integers on a grid of `units_per_pixel` steps per pixel (the viewBox is scaled
accordingly, so the picture keeps its pixel size): no decimal points, and relative commands (`c`,
`l`) whose small deltas take two or three characters each. Both neighbours of a chain round the
same absolute control points, so their shared curve is identical down to the last unit, and every
ring closes exactly (its integer deltas sum to zero).

The document is assembled as one flat array of entries of a string table (header parts, letters,
numbers) whose positions come from cumulative sums (one block per emitted segment), and turned into
text by one gather of the table's bytes. There is no Python loop over regions, rings or segments.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .bezier import Curves
from .boundaries import Boundaries

__all__ = ["write_svg"]


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
    rows = _emitted_rows(boundaries, curves, units_per_pixel)
    commands = _commands(rows, shorthand=shorthand)
    paths = _path_elements(rows, commands, colors, opacity)
    height, width, scale = boundaries.height, boundaries.width, units_per_pixel
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
    return head + paths + tail


class _Rows(NamedTuple):
    """The segments to write, one row each, in drawing order (region, ring, walking order).

    Coordinates are integers in units of 1 / units_per_pixel pixel.

    Attributes:
        origin: [N, 2] int64 absolute point where the row's segment starts (as walked).
        numbers: [N, 6] int64 first control, second control and end point, relative to origin.
        straight: [N] bool segments that are lines (only numbers[:, 4:6] matter).
        ring: [N] int64 ring of every row.
        region: [N] int64 region of every row.
    """

    origin: np.ndarray
    numbers: np.ndarray
    straight: np.ndarray
    ring: np.ndarray
    region: np.ndarray


class _Commands(NamedTuple):
    """How every row is written: `[header] [M x y] [letter] numbers [z] [footer]`.

    Attributes:
        kind: [N] int64 0 c (curve), 1 l (line), 2 h, 3 v (horizontal / vertical line), 4 none
            (a straight last row of a ring, left to the closing z), 5 s (smooth curve).
        letter: [N] bool rows that write their command letter (the first of a run of one kind).
        count: [N] int64 numbers written.
        first_column: [N] int64 first column of `numbers` written.
        ring_first, ring_last, region_first, region_last: [N] bool rows that open or close a
            ring (M ... z) or a region's path element.
    """

    kind: np.ndarray
    letter: np.ndarray
    count: np.ndarray
    first_column: np.ndarray
    ring_first: np.ndarray
    ring_last: np.ndarray
    region_first: np.ndarray
    region_last: np.ndarray


def _emitted_rows(boundaries: Boundaries, curves: Curves, scale: int) -> _Rows:
    """Round the curves to the integer grid and list the segments of every chain instance in
    drawing order, each walked in the direction of its instance."""
    start = np.rint(curves.start * scale).astype(np.int64)
    end = np.rint(curves.end * scale).astype(np.int64)
    # Control points are rounded as offsets from their own end point, so the two handles of a
    # smooth point stay exact mirror images and `s` (smooth curveto) can replace `c`.
    control1 = start + np.rint((curves.control1 - curves.start) * scale).astype(np.int64)
    control2 = end - np.rint((curves.end - curves.control2) * scale).astype(np.int64)
    straight = _is_straight(start, control1, control2, end)
    empty = straight & (start == end).all(1)

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
    ring_of_instance = np.cumsum(boundaries.ring_start) - 1
    ring_of_row = ring_of_instance[instance_of_row]
    row_empty = empty[segment]
    ring_has_length = np.bincount(ring_of_row, weights=~row_empty) > 0
    keep = ~row_empty | ~ring_has_length[ring_of_row]
    segment, row_reverse, instance_of_row = segment[keep], row_reverse[keep], instance_of_row[keep]
    # Both ways of walking every segment, as rows of (first control, second control, target)
    # relative to the origin, then the origin: segment s walked backwards is row 2s + 1.
    walks = np.stack(
        [
            np.concatenate([control1 - start, control2 - start, end - start, start], 1),
            np.concatenate([control2 - end, control1 - end, start - end, end], 1),
        ],
        1,
    ).reshape(-1, 8)
    walked = walks[2 * segment + row_reverse]
    return _Rows(
        origin=walked[:, 6:],
        numbers=walked[:, :6],
        straight=straight[segment],
        ring=ring_of_instance[instance_of_row],
        region=boundaries.ring_region[instance_of_row],
    )


def _commands(rows: _Rows, *, shorthand: bool) -> _Commands:
    """The shortest command of every row (c, s, l, h, v, or none before z) and where rings and
    regions open and close."""
    numbers, ring, region, row_straight = rows.numbers, rows.ring, rows.region, rows.straight
    count = ring.shape[0]
    ring_first = np.ones(count, dtype=bool)
    ring_first[1:] = ring[1:] != ring[:-1]
    ring_last = np.ones(count, dtype=bool)
    ring_last[:-1] = ring[1:] != ring[:-1]
    region_first = np.ones(count, dtype=bool)
    region_first[1:] = region[1:] != region[:-1]
    region_last = np.ones(count, dtype=bool)
    region_last[:-1] = region[1:] != region[:-1]
    # Command of every row: c (curve), l (line), h / v (horizontal / vertical line), s (smooth
    # curve); a straight last row of a ring is left to the closing z.
    kind = np.where(
        row_straight, np.where(numbers[:, 5] == 0, 2, np.where(numbers[:, 4] == 0, 3, 1)), 0
    )
    # s: a curve whose first handle mirrors the previous curve's second one (or, after a line,
    # sits on the current point), as SVG's smooth curveto assumes.
    previous_curve = np.zeros(count, dtype=bool)
    previous_curve[1:] = (kind[:-1] == 0) & ~ring_first[1:]
    mirror = np.zeros((count, 2), dtype=np.int64)
    mirror[1:] = numbers[:-1, 4:6] - numbers[:-1, 2:4]
    mirror[~previous_curve] = 0
    smooth = (kind == 0) & (numbers[:, 0:2] == mirror).all(1) & shorthand
    kind = np.where(ring_last & row_straight & ~ring_first, 4, kind)
    kind = np.where(smooth, 5, kind)
    letter = ring_first.copy()
    letter[1:] |= kind[1:] != kind[:-1]
    letter &= kind != 4
    return _Commands(
        kind=kind,
        letter=letter,
        count=np.array([6, 2, 1, 1, 0, 4])[kind],
        first_column=np.array([0, 4, 4, 5, 0, 2])[kind],
        ring_first=ring_first,
        ring_last=ring_last,
        region_first=region_first,
        region_last=region_last,
    )


def _path_elements(
    rows: _Rows, commands: _Commands, colors: np.ndarray, opacity: np.ndarray | None
) -> str:
    """The `<path .../>` lines of all regions.

    Every piece of text (a header part, `M`, a command letter, a number, `z`, a footer) is an
    entry of one string table; each row writes its pieces at positions from cumulative sums, and
    one ragged gather of the table's bytes makes the text.
    """
    numbers, origin, region = rows.numbers, rows.origin, rows.region
    kind, letter, count_numbers = commands.kind, commands.letter, commands.count
    ring_first, ring_last = commands.ring_first, commands.ring_last
    region_first, region_last = commands.region_first, commands.region_last
    largest = int(max(-numbers.min(initial=0), numbers.max(initial=0), origin.max(initial=0), 1))
    reach = 1 << largest.bit_length()  # a power of two: images of similar sizes share one table
    table = _StringTable.for_numbers(-reach, reach)
    plain, spaced = table.plain + reach, table.spaced + reach  # entry of value v: plain + v

    header = 5 * region_first
    sizes = header + 3 * ring_first + letter + count_numbers + ring_last + region_last
    pieces = np.empty(int(sizes.sum()), dtype=np.int64)
    cursor = np.cumsum(sizes) - sizes
    at, first_region = cursor[region_first], region[region_first]
    for slot, entry in enumerate(_header_entries(colors, opacity, table)):
        pieces[at + slot] = entry[first_region]
    cursor += header
    at = cursor[ring_first]
    pieces[at] = table.move
    pieces[at + 1] = plain + origin[ring_first, 0]
    pieces[at + 2] = spaced + origin[ring_first, 1]
    cursor += 3 * ring_first
    pieces[cursor[letter]] = table.letters[kind[letter]]
    cursor += letter
    for slot in range(6):
        has = count_numbers > slot
        value = numbers[np.nonzero(has)[0], commands.first_column[has] + slot]
        bare = letter[has] if slot == 0 else np.zeros(value.shape[0], dtype=bool)
        pieces[cursor[has] + slot] = np.where(bare, plain, spaced) + value
    cursor += count_numbers
    pieces[cursor[ring_last]] = table.close
    cursor += ring_last
    pieces[cursor[region_last]] = table.footer
    return table.join(pieces)


class _StringTable(NamedTuple):
    """Every string a path element is made of, stored as one byte buffer.

    Attributes:
        data: [bytes] uint8 all entries, back to back.
        start: [T] int64 first byte of every entry.
        length: [T] int64 bytes of every entry.
        move, close, footer, path_open: entry ids of "M", "z", '"/>\\n' and '<path fill="#'.
        letters: [6] entry ids of the command letters c, l, h, v, (none), s.
        hex: [256] entry ids of "00".."ff".
        fill_end: [102] entry ids closing the fill attribute and opening d: '" d="' (entry 0) and
            '" fill-opacity="v" d="' for opacity levels v = 0, 0.01, .., 1 (entries 1..101).
        plain, spaced: entry ids of the number `low` written bare and with the separator a number
            needs after another (a space, none before a minus); `low + i` follows at `+ i`.
    """

    data: np.ndarray
    start: np.ndarray
    length: np.ndarray
    move: int
    close: int
    footer: int
    path_open: int
    letters: np.ndarray
    hex: np.ndarray
    fill_end: np.ndarray
    plain: int
    spaced: int

    @staticmethod
    @lru_cache(maxsize=8)
    def for_numbers(low: int, high: int) -> _StringTable:
        """The table with the numbers low..high."""
        fixed = ["M", "z", '"/>\n', '<path fill="#', "c", "l", "h", "v", "", "s"]
        hexes = [f"{i:02x}" for i in range(256)]
        fill_end = ['" d="'] + [f'" fill-opacity="{v / 100:g}" d="' for v in range(101)]
        plain = [str(v) for v in range(low, high + 1)]
        spaced = [(" " if v >= 0 else "") + str(v) for v in range(low, high + 1)]
        entries = fixed + hexes + fill_end + plain + spaced
        length = np.array([len(text) for text in entries], dtype=np.int64)
        ids = np.cumsum([0, len(fixed), len(hexes), len(fill_end), len(plain)])
        return _StringTable(
            data=np.frombuffer("".join(entries).encode("ascii"), dtype=np.uint8),
            start=np.cumsum(length) - length,
            length=length,
            move=0,
            close=1,
            footer=2,
            path_open=3,
            letters=np.arange(4, 10),
            hex=ids[1] + np.arange(256),
            fill_end=ids[2] + np.arange(102),
            plain=int(ids[3]),
            spaced=int(ids[4]),
        )

    def join(self, pieces: np.ndarray) -> str:
        """The text of the entries `pieces`, one after the other."""
        length = self.length[pieces]
        total = int(length.sum())
        shift = self.start[pieces] - (np.cumsum(length) - length)
        return self.data[np.repeat(shift, length) + np.arange(total)].tobytes().decode("ascii")


def _header_entries(
    colors: np.ndarray, opacity: np.ndarray | None, table: _StringTable
) -> list[np.ndarray]:
    """Five [R] entry ids per region: '<path fill="#', rr, gg, bb, then '" d="' (with
    fill-opacity when a region is not opaque)."""
    colors = np.asarray(colors, dtype=np.int64)
    count = colors.shape[0]
    fill_end = np.full(count, table.fill_end[0])
    if opacity is not None:
        level = np.rint(np.clip(opacity, 0, 1) * 100).astype(np.int64)
        fill_end = np.where(level < 100, table.fill_end[1 + level.clip(0, 100)], fill_end)
    return [
        np.full(count, table.path_open),
        table.hex[colors[:, 0]],
        table.hex[colors[:, 1]],
        table.hex[colors[:, 2]],
        fill_end,
    ]


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


def _hex(color: np.ndarray) -> str:
    return "".join(f"{int(c):02x}" for c in np.asarray(color).reshape(-1)[:3])
