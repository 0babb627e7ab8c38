"""Pictures of partitions: token boundaries over the image, the mosaic of region colours, and
panel titles.

Boundaries are drawn in a colour chosen per pixel against what lies under it (`contrast_color`:
black over light pixels, white over dark ones), so they show on any background: white
paper, a yellow jacket and a black sky alike.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .regions import Partition

__all__ = [
    "boundary_mask",
    "contrast_color",
    "draw_boundaries",
    "side_by_side",
    "titled",
    "token_picture",
]

# Boundary colours: over light pixels (luma above LIGHT) the dark one, elsewhere the light one.
DARK_LINE = (0.0, 0.0, 0.0)
LIGHT_LINE = (1.0, 1.0, 1.0)
LIGHT = 0.5


def boundary_mask(part: Partition) -> Tensor:
    """[B, H, W] bool: pixels whose right or lower neighbour lies in another region."""
    labels = part.labels
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :-1, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    return edge


def contrast_color(rgb: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, 3, H, W] a line colour that stands out from every pixel:
    `DARK_LINE` where the pixel is light (Rec. 601 luma > 0.5), `LIGHT_LINE` where it is dark."""
    weights = rgb.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    light = (rgb * weights).sum(1, keepdim=True) > LIGHT
    dark_line = rgb.new_tensor(DARK_LINE).view(1, 3, 1, 1)
    light_line = rgb.new_tensor(LIGHT_LINE).view(1, 3, 1, 1)
    return torch.where(light, dark_line, light_line)


def draw_boundaries(
    images: Tensor, part: Partition, color: tuple[float, float, float] | None = None
) -> Tensor:
    """Overlay region boundaries on the images.

    Args:
        images: [B, C, H, W] in [0, 1] (C = 1 or 3).
        part: the images' Partition.
        color: RGB of the boundary lines; None (default): chosen per pixel against the image
            (`contrast_color`), so the lines show on any background.

    Returns:
        [B, 3, H, W] RGB images with boundary pixels painted.
    """
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
    if color is None:
        paint = contrast_color(rgb)
    else:
        paint = torch.tensor(color, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return torch.where(boundary_mask(part)[:, None], paint, rgb)


def side_by_side(*panels: Tensor, gap: int = 4) -> Tensor:
    """Concatenate [B, 3, H, W] panels horizontally with a white gap."""
    spacer = panels[0].new_ones(panels[0].shape[0], 3, panels[0].shape[2], gap)
    pieces: list[Tensor] = []
    for panel in panels:
        pieces += [panel.expand(-1, 3, -1, -1) if panel.shape[1] == 1 else panel, spacer]
    return torch.cat(pieces[:-1], dim=3)


def titled(panel: Tensor, title: str, *, font_size: int | None = None) -> Tensor:
    """Put a one-line title in black on a white strip above a panel.

    Args:
        panel: [B, 3, H, W] in [0, 1].
        title: the text, e.g. "quadtree · 64 tokens"; shrunk to fit the panel's width (down to
            8 pixels, then cut short with "…").
        font_size: pixels; None: W / 16, between 10 and 18.

    Returns:
        [B, 3, h + H, W], the same title over every image of the batch.
    """
    width = panel.shape[-1]
    size = font_size or min(18, max(10, width // 16))
    font = ImageFont.load_default(size=size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    while size > 8 and probe.textlength(title, font=font) > width - 4:
        size -= 1
        font = ImageFont.load_default(size=size)
    while len(title) > 1 and probe.textlength(title, font=font) > width - 4:
        title = title[:-2] + "…"  # still too wide at the smallest size: cut the end
    strip = Image.new("L", (width, size + size // 2 + 4), 255)
    ImageDraw.Draw(strip).text((2, 2), title, fill=0, font=font)
    values = torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255).to(panel)
    top = values.view(1, 1, *values.shape).expand(panel.shape[0], 3, -1, -1)
    return torch.cat([top, panel[:, :3].expand(-1, 3, -1, -1)], dim=2)


def token_picture(images: Tensor, part: Partition, *, title: str | None = None) -> Tensor:
    """The picture `adaptok tokenize` writes: boundaries over the image | region-colour mosaic.

    Args:
        images: [B, C, H, W] in [0, 1].
        part: their Partition.
        title: when given, the boundary panel is titled `title` (e.g. "dht · 256 tokens") and
            the mosaic "mean colour of each token".

    Returns:
        [B, 3, H, 2 W + 4] (with a title, a strip higher).
    """
    mosaic = draw_boundaries(part.mean_image(images).clamp(0, 1), part)
    drawn = draw_boundaries(images, part)
    if title is None:
        return side_by_side(drawn, mosaic)
    return side_by_side(titled(drawn, title), titled(mosaic, "mean colour of each token"))
