"""The drawing options of `vectorize`: their defaults and the checks that refuse bad values.

Every default of the raster-to-vector pipeline that is not a plain keyword default lives here
(the method, the budget rule, the corner length that follows `smoothness`), so the CLI and the
API read one declaration.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..errors import AdaptokError

__all__ = [
    "DEFAULT_METHOD",
    "DENSE",
    "PIXELS_PER_REGION",
    "background_color",
    "check_style",
    "corner_length_for",
    "default_budget",
    "parse_color",
]

DEFAULT_METHOD = "dht"
# Default budget: one region per this many pixels. Tokenizer budgets (a few hundred regions) are
# far too coarse for a faithful picture; this one was tuned on the scikit-image photos to beat
# vtracer's PSNR with a third of its bytes (benchmarks/bench_vectorize.py).
PIXELS_PER_REGION = 24
# `vectorize`'s default budget, spelled apart from "auto" (the dHT's own default) and None
# (no cap): one region per PIXELS_PER_REGION pixels.
DENSE = "dense"


def default_budget(height: int, width: int) -> int:
    """Regions asked from the partitioner when `vectorize` gets no budget (`DENSE`): H*W / 24
    (rounded to a valid budget by the method's spec, e.g. N0 + 3j for the quadtree)."""
    return max(1, round(height * width / PIXELS_PER_REGION))


def corner_length_for(smoothness: float, corner_length: float | None) -> float:
    """The corner length `vectorize` uses: the given one, else 0 (every turn stays) for exact
    outlines (smoothness 0) and 2 (only one-pixel steps are smoothed away) otherwise."""
    if corner_length is not None:
        return corner_length
    return 0.0 if smoothness == 0 else 2.0


def check_style(
    smoothness: float = 1.0,
    tolerance: float = 0.3,
    corner_length: float | None = None,
    units_per_pixel: int = 4,
    background: bool | str = False,
) -> None:
    """Refuse bad drawing options (the arguments of `vectorize`) before any image is
    partitioned."""
    if background not in (True, False, None):
        parse_color(background)
    for name, value in (
        ("smoothness", smoothness),
        ("tolerance", tolerance),
        ("corner_length", 0.0 if corner_length is None else corner_length),
    ):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise AdaptokError(f"{name} must be a finite number >= 0, got {value!r}")
    if not isinstance(units_per_pixel, int) or not 1 <= units_per_pixel <= 100:
        raise AdaptokError(
            f"units_per_pixel must be an integer in 1..100, got {units_per_pixel!r}; "
            "4 (quarter pixels) is usually plenty"
        )


def background_color(
    background: bool | str | None, colors: np.ndarray, area: Tensor, opacity: np.ndarray | None
) -> np.ndarray | None:
    """[3] int64 RGB of the background rectangle (None for none): for True the mean of the
    region colours weighted by area and opacity, the colour one sees (none under a single opaque
    shape), the parsed colour for a string."""
    if background is False or background is None:
        return None
    if background is True:
        if len(colors) == 1 and (opacity is None or opacity[0] >= 1):
            return None  # one opaque shape: no seams to hide, the same colour twice otherwise
        weights = area.numpy().astype(np.float64)
        if opacity is not None and (weights * opacity).sum() > 0:
            weights = weights * opacity  # a transparent region's colour is never seen
        return np.rint((colors * weights[:, None]).sum(0) / weights.sum()).astype(np.int64)
    return parse_color(background)


def parse_color(background: object) -> np.ndarray:
    """'#336699' (or '#369', with or without '#') -> [3] int64 RGB."""
    text = background.lstrip("#") if isinstance(background, str) else ""
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    try:
        if len(text) != 6:
            raise ValueError(text)
        return np.array([int(text[i : i + 2], 16) for i in (0, 2, 4)])
    except ValueError:
        raise AdaptokError(
            f"background must be True, False or a colour like '#336699', got {background!r}"
        ) from None
