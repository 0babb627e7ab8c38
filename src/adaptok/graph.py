"""Connected components on the GPU or CPU, without Python loops over vertices or edges.

Hooking and pointer jumping (Shiloach-Vishkin style): each round, every edge hooks the larger of its
two roots under the smaller, then every vertex jumps to its root. The number of rounds grows with
the logarithm of the component size for the graphs we meet (pixel grids, merge forests).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["connected_components", "label_components"]


def connected_components(num_vertices: int, src: Tensor, dst: Tensor) -> Tensor:
    """Label the connected components of an undirected graph.

    Args:
        num_vertices: number of vertices V.
        src: [E] int64 one end of each edge.
        dst: [E] int64 the other end.

    Returns:
        [V] int64 component ids, consecutive from 0, numbered in order of each component's smallest
        vertex (so the numbering is deterministic).
    """
    device = src.device
    parent = torch.arange(num_vertices, device=device)
    if src.numel() == 0:
        return parent
    while True:
        root_src, root_dst = parent.index_select(0, src), parent.index_select(0, dst)
        low = torch.minimum(root_src, root_dst)
        high = torch.maximum(root_src, root_dst)
        hooked = parent.scatter_reduce(0, high, low, reduce="amin")
        # Pointer jumping: compress every chain to its root.
        while True:
            jumped = hooked.index_select(0, hooked)
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, parent):
            break
        parent = hooked
    # Roots are the smallest vertex of each component, so unique() orders components by it.
    return torch.unique(parent, return_inverse=True)[1]


def label_components(labels: Tensor) -> Tensor:
    """Split every region of a label map into its 4-connected pieces.

    Args:
        labels: [B, H, W] int64 region ids (ids may repeat across images: pixels of different
            images are never connected).

    Returns:
        [B, H, W] int64 ids, consecutive from 0 and unique across the batch, numbered in raster
        order of each piece's first pixel (image by image), so pieces of image b come before those
        of image b + 1.
    """
    batch, height, width = labels.shape
    index = torch.arange(batch * height * width, device=labels.device).view(batch, height, width)
    same_right = labels[:, :, 1:] == labels[:, :, :-1]
    same_down = labels[:, 1:, :] == labels[:, :-1, :]
    src = torch.cat([index[:, :, :-1][same_right], index[:, :-1, :][same_down]])
    dst = torch.cat([index[:, :, 1:][same_right], index[:, 1:, :][same_down]])
    return connected_components(batch * height * width, src, dst).view(batch, height, width)
