"""Raster to vector through tokens: a gap-free SVG of any Partition.

Pipeline (docs/design.md, "Raster to vector"): Partition -> boundaries shared between
neighbouring regions (`trace_boundaries`, each boundary traced once) -> staircase removal,
smoothing and Douglas-Peucker simplification of the shared chains (`refine_chains`, `smooth_chains`,
`douglas_peucker`) -> cubic Béziers (`fit_beziers`) -> one path per region filled with its mean
colour (`write_svg`); when `vectorize` partitions the image itself, touching regions of the same
written fill are joined first (`merge_equal_fills`), so a flat image is one path.

Why there are no gaps: every chain appears in exactly two rings, once in each direction, with the
very same integer control points; the image border chains appear once. So at any point of the
canvas the winding numbers of all paths add up to exactly 1, whatever the smoothing did, and under
the default nonzero fill rule at least one path covers it.

Modules by role: `pipeline` (`vectorize`, `vectorize_batch`), `options` (defaults and checks of
the drawing options), `boundaries`, `simplify`, `bezier`, `svg` (the stages), `render` (SVG back
to pixels).
"""

from .bezier import Curves, fit_beziers
from .boundaries import Boundaries, trace_boundaries
from .options import DEFAULT_METHOD, DENSE, PIXELS_PER_REGION, check_style, default_budget
from .pipeline import merge_equal_fills, vectorize, vectorize_batch
from .render import render_svg
from .simplify import Chains, douglas_peucker, refine_chains, smooth_chains
from .svg import write_svg

__all__ = [
    "DEFAULT_METHOD",
    "DENSE",
    "PIXELS_PER_REGION",
    "Boundaries",
    "Chains",
    "Curves",
    "check_style",
    "default_budget",
    "douglas_peucker",
    "fit_beziers",
    "merge_equal_fills",
    "refine_chains",
    "render_svg",
    "smooth_chains",
    "trace_boundaries",
    "vectorize",
    "vectorize_batch",
    "write_svg",
]
