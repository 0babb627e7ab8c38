"""Render SVG text back to pixels with resvg (the `resvg-py` package), to check and preview."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..errors import AdaptokError

__all__ = ["render_svg"]


def render_svg(svg: str, *, background: str | None = None) -> np.ndarray:
    """Rasterise an SVG at its own pixel size.

    Args:
        svg: SVG text (with width and height attributes, as `vectorize` writes).
        background: CSS colour painted under the drawing (e.g. "#ff00ff"), or None for a
            transparent canvas.

    Returns:
        [H, W, 4] uint8 RGBA pixels (not premultiplied).

    Raises:
        AdaptokError: resvg-py is missing or the SVG cannot be rendered.
    """
    try:
        import resvg_py
    except ImportError as error:
        raise AdaptokError(
            "rendering SVG needs the resvg-py package: pip install resvg-py"
        ) from error
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, background=background)
    except ValueError as error:
        raise AdaptokError(f"resvg could not render the SVG: {error}") from error
    with Image.open(io.BytesIO(bytes(png))) as image:
        return np.asarray(image.convert("RGBA")).copy()
