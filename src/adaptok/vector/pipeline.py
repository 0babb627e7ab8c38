"""`vectorize`: one image (or a batch) to SVG, through its partition into regions.

The pipeline (docs/design.md, "Raster to vector"): partition the image (or take a ready
Partition), average each region's colour (alpha-weighted with transparency), then per image
`trace_boundaries` -> `refine_chains` -> `smooth_chains` -> `douglas_peucker` -> `fit_beziers` ->
`write_svg`. The loop runs over images; everything inside is array work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import AdaptokError
from ..graph import connected_components
from ..io import DEFAULT_MAX_PIXELS, ImageLike, as_images, composite_alpha
from ..partitioners.registry import get_spec, partition
from ..regions import Partition
from .bezier import fit_beziers
from .boundaries import trace_boundaries
from .options import (
    DEFAULT_METHOD,
    DENSE,
    background_color,
    check_style,
    corner_length_for,
    default_budget,
)
from .simplify import douglas_peucker, refine_chains, smooth_chains
from .svg import write_svg

__all__ = ["vectorize", "vectorize_batch"]


def vectorize(
    image: ImageLike,
    method: str | Partition = DEFAULT_METHOD,
    *,
    budget: int | str | None = DENSE,
    smoothness: float = 1.0,
    tolerance: float = 0.3,
    corner_length: float | None = None,
    units_per_pixel: int = 4,
    background: bool | str = False,
    crisp_edges: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    input_space: str = "unit",
    **partition_options: Any,
) -> str:
    """Convert one image to SVG through its partition into regions.

    Args:
        image: one image in any form `adaptok.io.as_images` takes: [C, H, W] or [1, C, H, W]
            float in [0, 1] (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA), a numpy array, a PIL
            image, or the path of an image file.
        method: a partition method name (see `adaptok.available_methods()`) or a ready
            `Partition` of this image (then `budget` and `partition_options` must be unset).
        budget: the partitioner's budget, as `partition` takes it (its meaning is the
            method's: exact for quadtree, where a count that is not N0 + 3j is refused naming
            the nearest valid ones; a cap for dht; a target for slic); "dense" (default,
            `DENSE`) asks `default_budget(H, W)`, one region per 24 pixels (rounded to a valid
            quadtree budget), from methods that take a budget (grid takes none); None and
            "auto" are passed on: no cap for dht (a flat logo gives a handful of shapes), the
            method's token default otherwise.
        smoothness: 0 gives the exact pixel outlines (lossless polygons: the SVG renders to the
            partition's mean-colour image); 1 (default) smooth Bézier curves whose points stay
            within a quarter of a pixel (plus `tolerance`) of the pixel outlines; larger values
            smooth more (more filter passes, points move up to 0.25 * smoothness pixels).
        tolerance: simplification tolerance in pixels (Douglas-Peucker); larger gives smaller
            files and coarser outlines (with smoothness 0 every turn is a kept corner, so only
            an explicit corner_length > 0 lets it simplify).
        corner_length: turns between two boundary runs at least this long (pixels) stay sharp;
            None: 0 (every turn) when smoothness is 0, else 2 (so only one-pixel steps are
            smoothed away).
        units_per_pixel: coordinate precision (1/units_per_pixel pixel); coordinates are written
            as integers in a viewBox scaled by this factor.
        background: False for none, True for a rectangle of the image's mean colour under the
            regions, or a "#rrggbb" colour.
        crisp_edges: ask renderers not to anti-alias the shapes (default). Anti-aliased
            neighbours leave faint seams of what lies below (conflation); turn it off for smoother
            edges, ideally with `background`.
        max_pixels: largest image read from a file.
        input_space: "unit" for [0, 1] values, "imagenet" for ImageNet-normalised tensors.
        **partition_options: further options of the partitioner (e.g. scorer for quadtree).

    Returns:
        SVG 1.1 text with one filled path per region, in region order. With a method name,
        touching regions whose 8-bit colours and opacities are equal are one path
        (`merge_equal_fills`: a flat image is one path); a given Partition keeps one path per
        region.

    Raises:
        AdaptokError: bad image, options or partition.
    """
    image = as_images(
        image, input_space=input_space, keep_alpha=True, name="image", max_pixels=max_pixels
    )
    if image.shape[0] != 1:
        raise AdaptokError(
            f"vectorize takes one image [C, H, W] or [1, C, H, W], got {tuple(image.shape)}; "
            "use vectorize_batch for [B, C, H, W]"
        )
    return vectorize_batch(
        image,
        method,
        budget=budget,
        smoothness=smoothness,
        tolerance=tolerance,
        corner_length=corner_length,
        units_per_pixel=units_per_pixel,
        background=background,
        crisp_edges=crisp_edges,
        **partition_options,
    )[0]


def vectorize_batch(
    images: ImageLike,
    method: str | Partition = DEFAULT_METHOD,
    *,
    budget: int | str | None = DENSE,
    smoothness: float = 1.0,
    tolerance: float = 0.3,
    corner_length: float | None = None,
    units_per_pixel: int = 4,
    background: bool | str = False,
    crisp_edges: bool = True,
    **partition_options: Any,
) -> list[str]:
    """Convert a batch of images to SVG texts (see `vectorize` for the arguments).

    Args:
        images: [B, C, H, W] float in [0, 1], C in 1..4 (grey, grey + alpha, RGB, RGBA).

    Returns:
        B SVG texts; text b has one path per region of image b, in region order (with a method
        name, touching regions of one written fill joined, see `merge_equal_fills`).
    """
    images = as_images(images, keep_alpha=True)
    channels = images.shape[1]
    if channels not in (1, 2, 3, 4):
        raise AdaptokError(
            f"images must have 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels, got "
            f"{channels}"
        )
    check_style(smoothness, tolerance, corner_length, units_per_pixel, background)
    images = images.detach().float().clamp(0, 1)
    color, alpha = _split_alpha(images)
    if isinstance(method, Partition):
        if budget != DENSE or partition_options:
            raise AdaptokError(
                "budget and partition options only apply when a method name is given; a ready "
                "Partition was passed as method"
            )
        part = method
        if part.batch_size != images.shape[0] or tuple(part.image_size) != tuple(images.shape[2:]):
            raise AdaptokError(
                f"the Partition is for {part.batch_size} image(s) of {part.image_size}, but the "
                f"images are {tuple(images.shape)}"
            )
    elif isinstance(method, str):
        options = dict(partition_options)
        spec = get_spec(method)
        height, width = images.shape[2:]
        if budget != DENSE:
            options["budget"] = budget
        elif spec.budget is not None:  # a derived count: rounded to a valid one (N0 + 3j)
            options["budget"] = spec.fit(height, width, default_budget(height, width), options)
        # Partitioners see colour; transparent pixels are shown on mid grey.
        visible = composite_alpha(images)
        if visible.shape[1] == 1:
            visible = visible.expand(-1, 3, -1, -1)
        part = partition(visible, method, **options)
    else:
        raise AdaptokError(
            f"method must be a method name or a Partition, got {type(method).__name__}"
        )
    return _draw_partition(
        part,
        color,
        alpha,
        smoothness=smoothness,
        tolerance=tolerance,
        corner_length=corner_length,
        units_per_pixel=units_per_pixel,
        background=background,
        crisp_edges=crisp_edges,
        join_equal_fills=isinstance(method, str),  # a given Partition keeps path i = region i
    )


def _draw_partition(
    part: Partition,
    color: Tensor,
    alpha: Tensor | None,
    *,
    smoothness: float,
    tolerance: float,
    corner_length: float | None,
    units_per_pixel: int,
    background: bool | str,
    crisp_edges: bool,
    join_equal_fills: bool,
) -> list[str]:
    """The SVG text of every image: region fills (joined where equal, if asked), then the vector
    stages image by image."""
    part = part.to("cpu")
    color, alpha = color.cpu(), None if alpha is None else alpha.cpu()
    if alpha is None:
        mean = part.region_mean(color)
        opacity = None
    else:  # colour averaged over the opaque part of every region (alpha-weighted)
        weight = part.region_mean(alpha)
        mean = part.region_mean(color * alpha) / weight.clamp_min(1e-6)
        opacity = weight[:, 0].numpy()
    if mean.shape[1] == 1:
        mean = mean.expand(-1, 3)
    colors = (mean.clamp(0, 1) * 255).round().to(torch.int64)
    if join_equal_fills:
        part, colors, opacity = merge_equal_fills(part, colors, opacity)
    else:
        colors = colors.numpy()
    offsets = part.offsets.tolist()
    labels = part.labels.numpy()
    corners = corner_length_for(smoothness, corner_length)
    texts = []
    for b in range(part.batch_size):  # loop over images; everything inside is array work
        first, last = offsets[b], offsets[b + 1]
        boundaries = trace_boundaries(labels[b] - first)
        chains = refine_chains(
            boundaries.points,
            boundaries.chain_offsets,
            boundaries.closed,
            corner_length=corners,
        )
        chains = smooth_chains(chains, passes=round(smoothness), max_shift=0.25 * smoothness)
        chains = douglas_peucker(chains, tolerance)
        curves = fit_beziers(chains, min(smoothness, 1.0))
        texts.append(
            write_svg(
                boundaries,
                curves,
                colors[first:last],
                opacity=None if opacity is None else opacity[first:last],
                units_per_pixel=units_per_pixel,
                background=background_color(
                    background,
                    colors[first:last],
                    part.area[first:last],
                    None if opacity is None else opacity[first:last],
                ),
                crisp_edges=crisp_edges,
            )
        )
    return texts


def merge_equal_fills(
    part: Partition, colors: Tensor, opacity: np.ndarray | None
) -> tuple[Partition, np.ndarray, np.ndarray | None]:
    """Join touching regions that would be written with the same fill into one shape.

    Two neighbours of one 8-bit colour (and one written opacity, in hundredths) are
    indistinguishable in the SVG; written apart they only cost bytes and, anti-aliased, show a
    seam. A flat image is one path whatever the partition (the grid's 16 squares of a flat
    64x64 image included). The work is on the region graph: only pixel pairs across a region
    border are compared, and the common case (no two neighbours of one fill) returns at once.

    Args:
        part: the Partition (on the CPU).
        colors: [N, 3] int64 0..255 fill of every region.
        opacity: [N] float in [0, 1] fill opacity of every region, or None.

    Returns:
        The Partition of the shapes (unions of regions joined through touching neighbours of one
        fill; 4-connected when the regions are), and their [M, 3] colours and [M] opacities
        (numpy), shapes numbered in raster order of their first pixel per image.
    """
    level = torch.zeros_like(colors[:, 0])
    if opacity is not None:  # hundredths, as write_svg writes them
        level = torch.from_numpy(np.rint(np.clip(opacity, 0, 1) * 100).astype(np.int64))
    key = ((colors[:, 0] * 256 + colors[:, 1]) * 256 + colors[:, 2]) * 101 + level
    labels = part.labels
    key_map = key[labels]
    sources, targets = [], []
    for first, second, first_key, second_key in (
        (labels[:, :, 1:], labels[:, :, :-1], key_map[:, :, 1:], key_map[:, :, :-1]),
        (labels[:, 1:, :], labels[:, :-1, :], key_map[:, 1:, :], key_map[:, :-1, :]),
    ):  # horizontal, then vertical neighbours of another region with the same fill (rare)
        joined = (first != second) & (first_key == second_key)
        sources.append(first[joined])
        targets.append(second[joined])
    source, target = torch.cat(sources), torch.cat(targets)
    if source.numel() == 0:  # nothing to join: keep the region order
        return part, colors.numpy(), opacity
    group = connected_components(part.num_regions, source, target)
    shapes, shape_of_region = _join_regions(part, group)
    # every region of a shape has the same key: any of them gives the shape's fill
    shape_key = key.new_zeros(shapes.num_regions).scatter_(0, shape_of_region, key)
    level_of_shape, rgb = shape_key % 101, shape_key // 101
    shape_colors = torch.stack([rgb // 65536, rgb // 256 % 256, rgb % 256], 1).numpy()
    shape_opacity = None if opacity is None else (level_of_shape.double() / 100).numpy()
    return shapes, shape_colors, shape_opacity


def _join_regions(part: Partition, group: Tensor) -> tuple[Partition, Tensor]:
    """The Partition of the unions of regions given by `group` ([N] int64 group of every region,
    0..M-1), numbered as `Partition.from_labels` numbers them (image by image, in raster order of
    each union's first pixel), and [N] the new id of every region. Only the first pixel of
    every region and the final label map are pixel work; areas and boxes follow from the
    regions'."""
    labels, count = part.labels, part.labels.numel()
    num_groups = int(group.max()) + 1
    pixel = torch.arange(count)
    region_first = torch.full((part.num_regions,), count).scatter_reduce_(
        0, labels.flatten(), pixel, reduce="amin"
    )
    group_first = torch.full((num_groups,), count).scatter_reduce_(
        0, group, region_first, reduce="amin"
    )
    new_id = torch.empty(num_groups, dtype=torch.long)
    new_id[torch.argsort(group_first)] = torch.arange(num_groups)  # flat index: image-major
    shape_of_region = new_id[group]
    index = shape_of_region[:, None].expand(-1, 2)
    corner = max(part.image_size) + 1
    low = torch.full((num_groups, 2), corner).scatter_reduce_(0, index, part.box[:, :2], "amin")
    high = torch.full((num_groups, 2), -1).scatter_reduce_(0, index, part.box[:, 2:], "amax")
    shapes = Partition(
        labels=shape_of_region[labels],
        batch_index=part.batch_index.new_zeros(num_groups).scatter_(
            0, shape_of_region, part.batch_index
        ),
        box=torch.cat([low, high], 1),
        area=part.area.new_zeros(num_groups).index_add_(0, shape_of_region, part.area),
    )
    return shapes, shape_of_region


def _split_alpha(images: Tensor) -> tuple[Tensor, Tensor | None]:
    """Colour channels and the alpha channel (None without transparency) of [B, C, H, W]."""
    if images.shape[1] in (2, 4):
        return images[:, :-1], images[:, -1:]
    return images, None
