"""The general box extractor: any Partition -> fixed-size token inputs (docs/design.md, "dHT").

Every region's bounding box is resampled to P x P from the pixels, together with the region's soft
mask M+ (the region's indicator resampled the same way), a p x p histogram of the region's pixel
positions over the whole image, and optionally a histogram of gradient orientations.

Resampling is bilinear at pixel centres, roi-align style: output cell (i, j) of a box of h x w
pixels averages s_y x s_x bilinear samples placed evenly inside the cell, with
s = min(ceil(side / P), samples) per axis. Sample positions are clamped to the box's pixel
centres, so nothing outside the box is read and a rectangle that fills its box has a mask of
exactly one. Consequences that the tests check:

* a P x P box reproduces its pixels exactly (s = 1, samples land on pixel centres);
* an aligned square of side P * 2^k (k <= log2(2 * samples)) is its exact area average, the same
  as `adaptok.tokens.extract_squares`;
* larger boxes are low-pass filtered by the sub-samples (fewer alias artefacts than one sample per
  cell); `samples` trades this against memory (cost grows with samples^2).

Regions are gathered with one index tensor per group of equal samples-per-cell (at most
samples^2 groups): memory is at most O(N * C * P * P * (2 * samples)^2), never O(N * H * W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AdaptokError, check_images
from ..regions import Partition
from ..validate import check_int
from .core import Tokens, assemble_tokens

__all__ = [
    "box_taps",
    "extract_regions",
    "gradient_histogram",
    "position_histogram",
    "resample_boxes",
]

# Taps per run of regions resampled together on CPU (see `resample_boxes`).
CHUNK_TAPS = 1 << 20


def box_taps(start: Tensor, length: Tensor, patch_size: int, samples: int) -> tuple[Tensor, Tensor]:
    """Pixel indices and weights that resample a run of pixels to `patch_size` cells (one axis).

    Cell i of a run [start, start + length) covers [start + i * length / P, start + (i + 1) *
    length / P) in continuous pixel coordinates (pixel y covers [y, y + 1), centre y + 0.5). It
    averages s = min(ceil(length / P), samples) bilinear samples placed at the centres of s equal
    sub-cells; each sample position is clamped to the run's first and last pixel centres. Every
    sample has two taps, the pixels below and above it, so a cell has 2 s taps whatever the run's
    length (a band of consecutive pixels from the first sample to the last would be up to
    length / P + 2 wide for a long run, mostly zero weights).

    Args:
        start: [N] int64 first pixel of each run.
        length: [N] int64 number of pixels in each run (>= 1).
        patch_size: P.
        samples: largest number of samples per cell.

    Returns:
        (index [N, P, T] int64 pixel indices, weight [N, P, T] float64 weights summing to one over
        the last axis), T = 2 * the largest s; the taps of unused sample slots weigh zero (and
        repeat a used pixel, so they read nothing outside the run).
    """
    start = start.double()[:, None, None]
    length_f = length.double()[:, None, None]
    per_cell = torch.clamp(torch.ceil(length.double() / patch_size), 1, samples)  # [N]
    most = int(per_cell.max()) if per_cell.numel() else 1
    per_cell = per_cell[:, None, None]
    cell = torch.arange(patch_size, device=length.device, dtype=torch.float64)[None, :, None]
    sub = torch.arange(most, device=length.device, dtype=torch.float64)[None, None, :]
    used = sub < per_cell
    # Continuous coordinate of each sample, shifted so that pixel centres sit on integers; unused
    # sample slots repeat the first sample with weight zero.
    position = start + (cell + (torch.where(used, sub, 0) + 0.5) / per_cell) * length_f / patch_size
    last = start + length_f - 1
    position = torch.minimum(torch.maximum(position - 0.5, start), last)
    low = torch.floor(position)
    frac = position - low
    high = torch.minimum(low + 1, last)
    share = used.double() / per_cell  # each sample's share of the cell
    index = torch.cat([low, high], 2).long()
    weight = torch.cat([(1 - frac) * share, frac * share], 2)
    return index, weight


def resample_boxes(
    values: Tensor, part: Partition, patch_size: int, *, samples: int = 2
) -> tuple[Tensor, Tensor]:
    """Resample every region's box to P x P, with the region's soft mask.

    Regions are grouped by their number of samples per cell (at most samples^2 groups, a loop
    over sizes, not regions) so that small boxes do not pay for the taps of large ones.

    Args:
        values: [B, C, H, W] pixels (or pixel features) on the Partition's grid.
        part: the Partition.
        patch_size: P.
        samples: most bilinear samples per output cell and axis (see the module docstring).

    Returns:
        (patches [N, C, P, P] differentiable with respect to values, mask [N, P, P] in [0, 1]: the
        share of each cell's samples that fall on the region's own pixels).
    """
    box = part.box
    side = torch.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], 1)
    per_cell = torch.clamp(-(-side // patch_size), 1, samples)  # [N, 2] samples per cell
    group = per_cell[:, 0] * (samples + 1) + per_cell[:, 1]
    # Channel planes + index_select: the fastest gather on CPU for a few channels.
    planes = values.transpose(0, 1).reshape(values.shape[1], -1)
    labels = part.labels.flatten()
    order, patches, masks = [], [], []
    for key in torch.unique(group).tolist():
        members = torch.nonzero(group == key).flatten()
        # On CPU, runs of regions whose taps fit the caches (ids are grouped by image, so a run
        # reads a few neighbouring images): measured 1.8x faster, forward and backward, than one
        # gather for all 4096 regions of 64 images of 128x128 at P = 8.
        taps = patch_size * patch_size * 4 * (key // (samples + 1)) * (key % (samples + 1))
        run = max(1, CHUNK_TAPS // taps) if values.device.type == "cpu" else members.numel()
        for chosen in members.split(run):
            patch, mask = _resample_group(
                planes,
                labels,
                values.shape,
                part.batch_index[chosen],
                box[chosen],
                chosen,
                patch_size,
                samples,
            )
            order.append(chosen)
            patches.append(patch)
            masks.append(mask)
    if len(order) == 1:
        return patches[0], masks[0]
    inverse = torch.argsort(torch.cat(order))
    return torch.cat(patches)[inverse], torch.cat(masks)[inverse]


def _resample_group(
    planes: Tensor,
    labels: Tensor,
    shape: torch.Size,
    batch_index: Tensor,
    box: Tensor,
    region: Tensor,
    patch_size: int,
    samples: int,
) -> tuple[Tensor, Tensor]:
    """`resample_boxes` for a set of regions: planes [C, B*H*W], labels [B*H*W], box [n, 4],
    region [n] ids; returns patches [n, C, P, P] and mask [n, P, P]."""
    _, channels, height, width = shape
    rows, row_weight = box_taps(box[:, 0], box[:, 2] - box[:, 0], patch_size, samples)
    cols, col_weight = box_taps(box[:, 1], box[:, 3] - box[:, 1], patch_size, samples)
    # [n, P, T, P, U] flat pixel index of every (row tap, column tap) pair.
    base = (batch_index * height)[:, None, None, None, None]
    flat = (base + rows[:, :, :, None, None]) * width + cols[:, None, None, :, :]
    row_weight = row_weight.to(planes.dtype)[:, :, :, None]  # [n, P, T, 1]
    col_weight = col_weight.to(planes.dtype)[:, None, None]  # [n, 1, 1, P, U]
    gathered = planes.index_select(1, flat.flatten()).view(channels, *flat.shape)
    patches = ((gathered * col_weight).sum(-1) * row_weight).sum(3)  # [C, n, P, P]
    outside = labels.index_select(0, flat.flatten()).view(flat.shape)
    outside = (outside != region[:, None, None, None, None]).to(planes.dtype)
    # One minus the weight on other regions' pixels, so a region that fills its box has a mask
    # of exactly one (the tap weights themselves sum to one only up to rounding).
    mask = 1 - ((outside * col_weight).sum(-1) * row_weight).sum(2)
    return patches.transpose(0, 1), mask


def _cell_split(size: int, grid: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Split every pixel of an axis of `size` pixels over `grid` equal cells, by overlap.

    Pixel y covers [y, y + 1) * grid / size in cell units (at most one cell long since grid <=
    size), so it overlaps at most two cells.

    Returns:
        (first cell [size] int64, its share [size] float64, next cell [size] int64 clamped to the
        grid; the next cell's share is 1 - first share).
    """
    y = torch.arange(size, device=device, dtype=torch.float64)
    begin = y * grid / size
    end = (y + 1) * grid / size
    first = torch.floor(begin)
    share = (torch.minimum(first + 1, end) - begin) * size / grid
    second = torch.clamp(first + 1, max=grid - 1)
    return first.long(), share.clamp(0, 1), second.long()


def cell_owners(part: Partition, cell_height: int, cell_width: int) -> Tensor | None:
    """[B, rows, cols] the region of every cell of a grid that divides the image, when each
    cell lies inside one region (grid, quadtree and whole-cell dHT partitions), else None.

    Checked from the boxes where every region fills a box of whole cells, otherwise against
    the labels; a region whose area is not whole cells rules it out first (one pass over N)."""
    if not bool((part.area % (cell_height * cell_width) == 0).all()):
        return None
    owner = part.labels[:, ::cell_height, ::cell_width]  # each cell's first pixel
    box = part.box
    filled = bool(
        (part.area == (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).all()
        and (box[:, 0::2] % cell_height == 0).all()
        and (box[:, 1::2] % cell_width == 0).all()
    )
    if filled:
        return owner
    batch, rows, cols = owner.shape
    blocks = part.labels.reshape(batch, rows, cell_height, cols, cell_width)
    return owner if bool((blocks == owner[:, :, None, :, None]).all()) else None


def owner_histogram(part: Partition, owner: Tensor) -> Tensor:
    """`position_histogram` on a grid whose every cell lies in one region: [N, rows*cols], a
    region's cells sharing it equally.

    Args:
        part: the Partition.
        owner: [B, rows, cols] the region of every cell (`cell_owners`).
    """
    cells_per_image = owner[0].numel()
    owner = owner.reshape(-1)  # [B * rows * cols]
    cells = torch.bincount(owner, minlength=part.num_regions).double()
    index = owner * cells_per_image + torch.arange(cells_per_image, device=owner.device).repeat(
        part.batch_size
    )
    hist = torch.zeros(part.num_regions * cells_per_image, device=owner.device, dtype=torch.float64)
    hist[index] = 1.0 / cells.index_select(0, owner)
    return hist.view(part.num_regions, cells_per_image).float()


def position_histogram(part: Partition, grid: int | tuple[int, int]) -> Tensor:
    """Where each region lies in its image: a grid histogram of its pixels, summing to one.

    The image is cut into equal cells (of H / rows x W / cols pixels, fractional when H or W is
    not a multiple of the grid); each pixel's unit mass is split between the cells it overlaps
    in proportion to the overlap, so a grid-aligned patch (H / rows x W / cols pixels) gives a
    one-hot histogram, as the position embedding of a ViT with that patch grid expects. On the
    patch grid of a ViT, entry g of a region's row is the share of the region inside patch g:
    the coverage weights of pooled tokens (`extract_tokens(..., pooled=True)`).

    Args:
        part: the Partition; needs H >= rows and W >= cols.
        grid: p (p x p cells) or (rows, cols).

    Returns:
        [N, rows*cols] float32, row-major cells, each row sums to one.
    """
    height, width = part.image_size
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    check_int("position_grid", rows)
    check_int("position_grid", cols)
    if rows > height or cols > width:
        raise AdaptokError(
            f"position_grid {rows}x{cols} is larger than the image ({height}x{width}); a pixel "
            f"would span several cells: use at most {height}x{width} cells"
        )
    device = part.device
    labels = part.labels  # [B, H, W]
    if height % rows == 0 and width % cols == 0:
        cell_height, cell_width = height // rows, width // cols
        owner = cell_owners(part, cell_height, cell_width)
        if owner is not None:
            return owner_histogram(part, owner)
        # Every pixel lies in one cell: counts of (region, cell) pairs, exact (what a ViT's
        # pooled tokens read, whose patches divide the image).
        y_cell = torch.arange(height, device=device) // (height // rows)
        x_cell = torch.arange(width, device=device) // (width // cols)
        index = (labels * (rows * cols)).add_(y_cell[:, None] * cols + x_cell[None, :])
        counts = torch.bincount(index.flatten(), minlength=part.num_regions * rows * cols)
        hist = counts.view(part.num_regions, rows * cols).double() / part.area[:, None].double()
        return hist.float()
    y_first, y_share, y_next = _cell_split(height, rows, device)
    x_first, x_share, x_next = _cell_split(width, cols, device)
    cells = []
    weights = []
    # A pixel's share of the next cell is zero on an axis that is a multiple of the grid: those
    # terms are skipped.
    y_terms = [(y_first, y_share)] + ([(y_next, 1 - y_share)] if height % rows else [])
    x_terms = [(x_first, x_share)] + ([(x_next, 1 - x_share)] if width % cols else [])
    for y_cell, y_weight in y_terms:
        for x_cell, x_weight in x_terms:
            cells.append(y_cell[:, None] * cols + x_cell[None, :])
            weights.append(y_weight[:, None] * x_weight[None, :])
    cell = torch.stack(cells)  # [terms, H, W]
    weight = torch.stack(weights)
    index = labels[None] * (rows * cols) + cell[:, None]  # [terms, B, H, W]
    mass = weight[:, None].expand_as(index)
    hist = torch.zeros(part.num_regions * rows * cols, device=device, dtype=torch.float64)
    hist.index_add_(0, index.flatten(), mass.flatten())
    hist = hist.view(part.num_regions, rows * cols) / part.area[:, None].double()
    return hist.float()


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def gradient_histogram(images: Tensor, part: Partition, bins: int) -> Tensor:
    """Histogram of gradient orientations per region, weighted by gradient magnitude.

    The gradient is a Sobel filter on the channel mean (replicate padding). Orientations in
    (-pi, pi] are soft-binned into `bins` circular bins (each pixel's magnitude is split linearly
    between its two nearest bin centres). Gradients flow through the magnitudes; the orientation
    is treated as a constant (atan2 has no derivative where the image is flat).

    Args:
        images: [B, C, H, W].
        part: the Partition.
        bins: number of orientation bins (P * P in the extractor).

    Returns:
        [N, bins] histogram normalised to sum to one; all zeros for a region without any gradient.
    """
    gray = images.mean(1, keepdim=True)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    kernel = _SOBEL.to(images.device, images.dtype)
    kernels = torch.stack([kernel, kernel.t()])[:, None]  # d/dx, d/dy
    grad = F.conv2d(padded, kernels)  # [B, 2, H, W]
    grad_x, grad_y = grad[:, 0], grad[:, 1]
    magnitude = torch.sqrt(grad_x.square() + grad_y.square() + 1e-12) - 1e-6
    magnitude = magnitude.clamp(min=0)
    angle = torch.atan2(grad_y, grad_x).detach()
    position = (angle + math.pi) / (2 * math.pi) * bins - 0.5
    low = torch.floor(position)
    frac = position - low
    low = low.long() % bins
    high = (low + 1) % bins
    labels = part.labels
    index = torch.cat([(labels * bins + low).flatten(), (labels * bins + high).flatten()])
    mass = torch.cat([(magnitude * (1 - frac)).flatten(), (magnitude * frac).flatten()])
    hist = mass.new_zeros(part.num_regions * bins).index_add(0, index, mass)
    hist = hist.view(part.num_regions, bins)
    return hist / hist.sum(1, keepdim=True).clamp(min=1e-8)


def extract_regions(
    images: Tensor,
    part: Partition,
    *,
    patch_size: int = 16,
    position_grid: int | None = None,
    gradient: bool = False,
    samples: int = 2,
) -> Tokens:
    """Turn any Partition into padded token inputs: resampled boxes, soft masks, positions.

    Args:
        images: [B, C, H, W] pixels (or pixel features) on the Partition's grid; gradients flow
            back to them through patches (and gradient histograms).
        part: the Partition.
        patch_size: P, side of every resampled box.
        position_grid: p; when given, `Tokens.position` holds each region's p x p position
            histogram (see `position_histogram`). For a ViT with a 14 x 14 patch grid use 14.
        gradient: when True, `Tokens.gradient` holds a P*P-bin gradient-orientation histogram.
        samples: most bilinear samples per output cell and axis (anti-aliasing of large boxes;
            memory grows with samples^2).

    Returns:
        Tokens with patches [B, T, C*P*P] (channel-major), mask [B, T, P*P], position [B, T, p*p]
        (or None), gradient [B, T, P*P] (or None), padded to the largest region count.
    """
    check_images(images)
    part._check_pixels(images)
    check_int("patch_size", patch_size)
    check_int("samples", samples, hint="(1 = no anti-aliasing)")
    if images.device != part.device:
        raise AdaptokError(
            f"images are on {images.device} but the Partition is on {part.device}; "
            "move one with .to(device)"
        )
    patches, mask = resample_boxes(images, part, patch_size, samples=samples)
    per_region: dict[str, Tensor] = {"mask": mask.flatten(1)}
    if position_grid is not None:
        per_region["position"] = position_histogram(part, position_grid).to(images.dtype)
    if gradient:
        per_region["gradient"] = gradient_histogram(images, part, patch_size * patch_size)
    return assemble_tokens(part, patch_size, patches.flatten(1), **per_region)
