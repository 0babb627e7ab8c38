"""Pictures of partitions: token boundaries over the image, and the mosaic of region colours."""

from __future__ import annotations

import torch
from torch import Tensor

from .regions import Partition

__all__ = ["boundary_mask", "draw_boundaries", "side_by_side", "token_picture"]


def boundary_mask(part: Partition) -> Tensor:
    """[B, H, W] bool: pixels whose right or lower neighbour lies in another region."""
    labels = part.labels
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :-1, :] |= labels[:, 1:, :] != labels[:, :-1, :]
    return edge


def draw_boundaries(
    images: Tensor, part: Partition, color: tuple[float, float, float] = (1.0, 0.9, 0.1)
) -> Tensor:
    """Overlay region boundaries on the images.

    Args:
        images: [B, C, H, W] in [0, 1] (C = 1 or 3).
        part: the images' Partition.
        color: RGB of the boundary lines.

    Returns:
        [B, 3, H, W] RGB images with boundary pixels painted.
    """
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
    paint = torch.tensor(color, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return torch.where(boundary_mask(part)[:, None], paint, rgb)


def side_by_side(*panels: Tensor, gap: int = 4) -> Tensor:
    """Concatenate [B, 3, H, W] panels horizontally with a white gap."""
    spacer = panels[0].new_ones(panels[0].shape[0], 3, panels[0].shape[2], gap)
    pieces: list[Tensor] = []
    for panel in panels:
        pieces += [panel.expand(-1, 3, -1, -1) if panel.shape[1] == 1 else panel, spacer]
    return torch.cat(pieces[:-1], dim=3)


def token_picture(images: Tensor, part: Partition) -> Tensor:
    """The picture `adaptok tokenize` writes: boundaries over the image | region-colour mosaic."""
    mosaic = draw_boundaries(part.mean_image(images).clamp(0, 1), part, color=(0.0, 0.0, 0.0))
    return side_by_side(draw_boundaries(images, part), mosaic)
