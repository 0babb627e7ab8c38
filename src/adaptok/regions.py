"""`Partition`: the one data type every stage of the pipeline speaks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import AdaptokError
from .graph import label_components
from .ops import add_blocks, counted, sum_blocks

__all__ = ["Partition", "PartitionError", "align_to_cells", "check_partition", "lift"]


class PartitionError(AdaptokError):
    """A Partition's invariants do not hold."""


def lift(maps: Tensor, height: int, width: int) -> Tensor:
    """[B, h, w] integer maps -> [B, H, W] (H >= h, W >= w): every pixel takes the value of the
    coarse pixel it falls in (row y reads row y * h // H). Each coarse pixel covers a block of
    whole pixels and neighbouring pixels cover neighbouring blocks, so a 4-connected region stays
    4-connected, keeps its id and its order by first pixel."""
    coarse_height, coarse_width = maps.shape[-2:]
    if height % coarse_height == 0 and width % coarse_width == 0:  # equal blocks: repetition,
        rows, cols = height // coarse_height, width // coarse_width  # a tenth of the gathers
        lead = maps.shape[:-2]
        blocks = maps[..., :, None, :, None].expand(*lead, coarse_height, rows, coarse_width, cols)
        return blocks.reshape(*lead, height, width)
    rows = torch.arange(height, device=maps.device) * maps.shape[-2] // height
    columns = torch.arange(width, device=maps.device) * maps.shape[-1] // width
    return maps.index_select(-2, rows).index_select(-1, columns)


def align_to_cells(labels: Tensor, cell: int, purity: float) -> Tensor:
    """Regions made of whole cell x cell blocks: every block that one region covers to at least
    `purity` of its pixels joins that region, every other block (one a boundary runs through)
    is a region of its own, and the result is cut into 4-connected pieces.

    A ViT trained on P x P patches reads such regions as unions of the patches it knows (a mean
    of its patch embeddings, exact), while boundaries keep their patches to themselves.

    Args:
        labels: [B, H, W] int64 region ids, unique across the batch.
        cell: block side in pixels; blocks at the right and bottom edges may be smaller.
        purity: in (0, 1], the share of a block its largest region needs to take it (ties go to
            the lower id).

    Returns:
        [B, H, W] int64 ids as `label_components` numbers them (consecutive, image by image,
        raster order of first pixels).
    """
    if not 0 < purity <= 1:
        raise AdaptokError(f"purity must be in (0, 1], got {purity}")
    if cell < 1:
        raise AdaptokError(f"cell must be >= 1 pixel, got {cell}")
    batch, height, width = labels.shape
    device = labels.device
    rows = torch.arange(height, device=device) // cell
    columns = torch.arange(width, device=device) // cell
    grid_h, grid_w = int(rows[-1]) + 1, int(columns[-1]) + 1
    images = torch.arange(batch, device=device).view(batch, 1, 1) * (grid_h * grid_w)
    block = (images + rows.view(1, height, 1) * grid_w + columns.view(1, 1, width)).flatten()
    flat = labels.flatten()
    ids = int(flat.max()) + 1
    # Pixels per (block, region) pair, then each block's largest region in one scatter: the
    # count above the reversed id, so ties go to the lower id.
    pairs, count = torch.unique(block * ids + flat, return_counts=True)
    pair_block, pair_region = pairs // ids, pairs % ids
    blocks = batch * grid_h * grid_w
    best = torch.zeros(blocks, dtype=torch.long, device=device)
    best.scatter_reduce_(0, pair_block, (count << 32) | (ids - 1 - pair_region), reduce="amax")
    largest = best >> 32
    region = ids - 1 - (best & 0xFFFFFFFF)
    size = torch.bincount(block, minlength=blocks)
    pure = largest >= purity * size
    block_label = torch.where(pure, region, ids + torch.arange(blocks, device=device))
    pieces = label_components(block_label.view(batch, grid_h, grid_w))
    return pieces.index_select(1, rows).index_select(2, columns)


def _block_starts(coarse: int, fine: int, device: torch.device) -> Tensor:
    """[coarse + 1] the first of the `fine` rows that `lift` maps to each coarse row, then
    `fine`: row y reads y * coarse // fine, so coarse row r starts at ceil(r * fine / coarse)."""
    rows = torch.arange(coarse + 1, device=device)
    return (rows * fine + coarse - 1) // coarse


@dataclass(frozen=True)
class Partition:
    """A batch of images cut into regions: each pixel belongs to exactly one region.

    Regions are numbered 0..N-1 across the whole batch, image by image (all regions of image 0,
    then those of image 1, ...), so the regions of one image are a contiguous run of ids.
    Build one with `Partition.from_labels`, which derives every field from the label map.

    Attributes:
        labels: [B, H, W] int64 region id of every pixel.
        batch_index: [N] int64 image of every region (non-decreasing).
        box: [N, 4] int64 bounding box (y0, x0, y1, x1), end-exclusive.
        area: [N] int64 pixel count of every region.
    """

    labels: Tensor
    batch_index: Tensor
    box: Tensor
    area: Tensor

    @classmethod
    def from_labels(cls, labels: Tensor, *, relabel: bool = True) -> Partition:
        """Build a Partition from a label map.

        Args:
            labels: [B, H, W] integer region ids.
            relabel: renumber ids to 0..N-1, image by image, in order of each region's first pixel;
                ids may then repeat across images and need not be consecutive. With False the ids
                must already be 0..N-1 and ordered by image.

        Returns:
            The Partition with batch_index, box and area computed from the labels.
        """
        if not isinstance(labels, Tensor) or labels.ndim != 3:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise PartitionError(f"labels must be a [B, H, W] tensor, got {shape}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise PartitionError(f"labels must be an integer tensor, got {labels.dtype}")
        labels = labels.long()
        if labels.numel() and int(labels.min()) < 0:
            raise PartitionError(f"labels must be >= 0 region ids, got {int(labels.min())}")
        batch, height, width = labels.shape
        if relabel:
            offset = (labels.flatten(1).amax(1) + 1).cumsum(0) - (labels.flatten(1).amax(1) + 1)
            global_ids = (labels + offset.view(batch, 1, 1)).flatten()
            # Order by (image, first pixel) so the numbering is deterministic and image-grouped.
            first_pixel = torch.full(
                (int(global_ids.max()) + 1,), labels.numel(), device=labels.device, dtype=torch.long
            )
            first_pixel.scatter_reduce_(
                0, global_ids, torch.arange(labels.numel(), device=labels.device), reduce="amin"
            )
            used = first_pixel < labels.numel()
            order = torch.argsort(first_pixel[used])
            new_id = torch.empty(int(used.sum()), device=labels.device, dtype=torch.long)
            new_id[order] = torch.arange(order.numel(), device=labels.device)
            lookup = torch.full_like(first_pixel, -1)
            lookup[used] = new_id
            labels = lookup[global_ids].view(batch, height, width)
        return cls._derive(labels)

    @classmethod
    def _derive(cls, labels: Tensor) -> Partition:
        batch, height, width = labels.shape
        flat = labels.flatten()
        num_regions = int(flat.max()) + 1 if flat.numel() else 0
        device = labels.device
        if bool((flat < 0).any()):
            raise PartitionError("labels must be non-negative region ids")
        area = torch.bincount(flat, minlength=num_regions)
        ys = torch.arange(height, device=device).view(1, height, 1).expand_as(labels).flatten()
        xs = torch.arange(width, device=device).view(1, 1, width).expand_as(labels).flatten()
        bs = torch.arange(batch, device=device).view(batch, 1, 1).expand_as(labels).flatten()
        big = max(height, width, batch) + 1
        lows = torch.full((num_regions, 3), big, device=device, dtype=torch.long)
        highs = torch.full((num_regions, 3), -1, device=device, dtype=torch.long)
        coords = torch.stack([ys, xs, bs], 1)
        index = flat[:, None].expand(-1, 3)
        lows.scatter_reduce_(0, index, coords, reduce="amin")
        highs.scatter_reduce_(0, index, coords, reduce="amax")
        if bool((area == 0).any()):
            missing = torch.nonzero(area == 0).flatten()[:5].tolist()
            raise PartitionError(f"region ids must be consecutive; ids {missing} have no pixels")
        if bool((lows[:, 2] != highs[:, 2]).any()):
            raise PartitionError("a region id is used in more than one image; ids must be unique")
        batch_index = lows[:, 2]
        if num_regions > 1 and bool((batch_index[1:] < batch_index[:-1]).any()):
            raise PartitionError("region ids must be ordered by image (use relabel=True)")
        box = torch.stack([lows[:, 0], lows[:, 1], highs[:, 0] + 1, highs[:, 1] + 1], 1)
        return cls(labels=labels, batch_index=batch_index, box=box, area=area)

    # ----------------------------------------------------------------------------------- sizes
    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return self.labels.shape[1], self.labels.shape[2]

    @property
    def num_regions(self) -> int:
        """N, the number of regions in the whole batch."""
        return self.area.shape[0]

    @property
    def counts(self) -> Tensor:
        """[B] int64 number of regions (tokens) in each image."""
        return torch.bincount(self.batch_index, minlength=self.batch_size)

    @property
    def offsets(self) -> Tensor:
        """[B + 1] int64 first region id of each image, then N: regions of image b are
        offsets[b]:offsets[b+1] (the packed layout)."""
        return torch.nn.functional.pad(self.counts.cumsum(0), (1, 0))

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def __repr__(self) -> str:
        # A summary: the default dataclass repr prints every tensor.
        counts = self.counts.tolist()
        shown = ", ".join(map(str, counts[:8])) + (", ..." if len(counts) > 8 else "")
        height, width = self.image_size
        return (
            f"Partition({counted(self.batch_size, 'image')} of {height}x{width}, "
            f"{counted(self.num_regions, 'region')}: [{shown}] per image, "
            f"device={self.device.type})"
        )

    def to(self, device: torch.device | str) -> Partition:
        """The same Partition on another device."""
        return Partition(
            *(t.to(device) for t in (self.labels, self.batch_index, self.box, self.area))
        )

    def lift(self, height: int, width: int) -> Partition:
        """This Partition on a finer grid of H x W pixels (H >= h, W >= w), every pixel in the
        region of the coarse pixel it falls in (`lift`): same ids, order and images; boxes and
        areas follow from the blocks instead of a pass over the H x W pixels. Itself at its own
        size."""
        coarse = self.image_size
        if (height, width) == coarse:
            return self
        if height < coarse[0] or width < coarse[1]:
            raise AdaptokError(
                f"lift goes to at least the Partition's {coarse[0]}x{coarse[1]} pixels, got "
                f"{height}x{width}; a coarser Partition needs partitioning again"
            )
        rows = _block_starts(coarse[0], height, self.device)
        columns = _block_starts(coarse[1], width, self.device)
        box = torch.stack(
            [
                rows[self.box[:, 0]],
                columns[self.box[:, 1]],
                rows[self.box[:, 2]],
                columns[self.box[:, 3]],
            ],
            1,
        )
        block = rows.diff()[:, None] * columns.diff()[None, :]  # pixels under each coarse pixel
        area = torch.zeros_like(self.area).index_add_(
            0, self.labels.flatten(), block.expand_as(self.labels).flatten()
        )
        return Partition(lift(self.labels, height, width), self.batch_index, box, area)

    def select(self, index: Tensor | list[int]) -> Partition:
        """The Partition of a subset of the images, renumbered from 0."""
        index = torch.as_tensor(index, device=self.device, dtype=torch.long)
        return Partition.from_labels(self.labels[index])

    def take(self, index: Tensor | list[int]) -> tuple[Partition, Tensor]:
        """(the Partition of images `index` in that order, [N'] the old id of each new region).

        Unlike `select`, which renumbers every image's regions by first pixel, each image keeps
        its regions' order (ids offset image after image), so per-region values of this
        Partition follow along by indexing with the second result; boxes and areas are carried
        over, not recomputed.
        """
        index = torch.as_tensor(index, device=self.device, dtype=torch.long)
        counts = self.counts
        taken = counts[index]
        first = taken.cumsum(0) - taken  # new first id of each taken image
        starts = counts.cumsum(0) - counts  # old first id of every image
        rows = torch.repeat_interleave(starts[index] - first, taken) + torch.arange(
            int(taken.sum()), device=self.device
        )
        new_id = torch.full((self.num_regions,), -1, dtype=torch.long, device=self.device)
        new_id[rows] = torch.arange(rows.numel(), device=self.device)
        image = torch.repeat_interleave(torch.arange(index.numel(), device=self.device), taken)
        labels = new_id[self.labels[index]]
        return Partition(labels, image, self.box[rows], self.area[rows]), rows

    @classmethod
    def concatenate(cls, parts: Sequence[Partition]) -> Partition:
        """One Partition of the images of `parts` in order (e.g. the chunks of a batch
        partitioned one after another): region ids and images are offset, nothing recomputed.

        Raises:
            PartitionError: no parts, or parts of different image sizes.
        """
        if not parts:
            raise PartitionError("concatenate takes at least one Partition, got none")
        sizes = sorted({part.image_size for part in parts})
        if len(sizes) > 1:
            raise PartitionError(
                f"concatenate takes Partitions of one image size, got {sizes}; partition the "
                "images at one size (or pad them) first"
            )
        region_offsets = itertools.accumulate([0] + [part.num_regions for part in parts[:-1]])
        image_offsets = itertools.accumulate([0] + [part.batch_size for part in parts[:-1]])
        return cls(
            labels=torch.cat(
                [part.labels + offset for part, offset in zip(parts, region_offsets, strict=True)]
            ),
            batch_index=torch.cat(
                [
                    part.batch_index + offset
                    for part, offset in zip(parts, image_offsets, strict=True)
                ]
            ),
            box=torch.cat([part.box for part in parts]),
            area=torch.cat([part.area for part in parts]),
        )

    # ------------------------------------------------------------------------ regions <-> pixels
    def scatter(self, values: Tensor) -> Tensor:
        """Spread per-region values back to pixels (the "reverse quadtree").

        Args:
            values: [N, C] one vector per region (or [N] for one channel).

        Returns:
            [B, C, H, W] map where every pixel holds its region's vector (or [B, H, W] for [N]).
        """
        self._check_rows(values)
        # index_select rather than values[labels]: twice as fast with its backward on CPU.
        spread = values.index_select(0, self.labels.flatten())
        if values.ndim == 1:
            return spread.view(self.labels.shape)
        return spread.view(*self.labels.shape, *values.shape[1:]).permute(0, 3, 1, 2)

    def region_mean(self, images: Tensor) -> Tensor:
        """Mean of every region's pixels.

        Args:
            images: [B, C, H, W] values on the Partition's pixel grid, or on a grid a whole
                multiple finer (each pixel of the Partition a block of pixels, as `lift` makes
                them: the same means as `self.lift(*images.shape[-2:]).region_mean(images)`,
                summed block by block first).

        Returns:
            [N, C] mean value of each region (differentiable with respect to images).
        """
        area = self.area
        if isinstance(images, Tensor) and images.ndim == 4 and self._is_finer(images.shape[2:]):
            rows, cols = self._block_factor(images.shape[2:])
            images = sum_blocks(images, rows, cols)
            area = area * (rows * cols)
        self._check_pixels(images)
        channels = images.shape[1]
        pixels = images.permute(0, 2, 3, 1).reshape(-1, channels)
        sums = pixels.new_zeros(self.num_regions, channels).index_add_(
            0, self.labels.flatten(), pixels
        )
        return sums / area[:, None].to(sums.dtype)

    def inject_means(self, images: Tensor, colors: Tensor) -> Tensor:
        """`images` with every region's mean replaced by `colors` (dHT's mean injection):
        images + (colors - region mean), in one new tensor, differentiable in both.

        Args:
            images: [B, C, H, W] on the Partition's pixel grid, or on a grid a whole multiple
                finer (as `region_mean`: ids are read on the Partition's grid only).
            colors: [N, C] every region's new mean.
        """
        return add_blocks(images, self.scatter(colors - self.region_mean(images)))

    def mean_image(self, images: Tensor) -> Tensor:
        """Each region filled with its mean colour: [B, C, H, W] -> [B, C, H, W]."""
        return self.scatter(self.region_mean(images))

    def padded_rows(self) -> tuple[Tensor, int]:
        """Where `pad` puts every region: ([N] int64 row of each region in the padded batch
        flattened to [B * T], T the largest region count)."""
        counts = self.counts
        longest = int(counts.max()) if counts.numel() else 0
        slot = torch.arange(self.num_regions, device=self.device) - self.offsets[self.batch_index]
        return self.batch_index * longest + slot, longest

    def pad(self, values: Tensor, fill: float = 0.0) -> tuple[Tensor, Tensor]:
        """Group per-region values by image into a padded batch.

        Args:
            values: [N, ...] one entry per region.
            fill: value of the padding entries.

        Returns:
            (padded [B, T, ...] with T the largest region count, valid [B, T] bool).
        """
        self._check_rows(values)
        counts = self.counts
        if self.num_regions and bool((counts == counts[0]).all()):
            # Every image has as many regions (grid, quadtree): padding is a reshape.
            valid = torch.ones(
                self.batch_size, int(counts[0]), dtype=torch.bool, device=self.device
            )
            return values.reshape(self.batch_size, -1, *values.shape[1:]), valid
        rows, longest = self.padded_rows()
        shape = (self.batch_size * longest, *values.shape[1:])
        padded = values.new_full(shape, fill).index_copy_(0, rows, values)
        valid = torch.zeros(self.batch_size * longest, dtype=torch.bool, device=self.device)
        valid[rows] = True
        return padded.view(self.batch_size, longest, *values.shape[1:]), valid.view(
            self.batch_size, longest
        )

    def unpad(self, padded: Tensor, valid: Tensor) -> Tensor:
        """Inverse of `pad`: [B, T, ...] + valid [B, T] -> [N, ...] in region order."""
        return padded[valid]

    def _check_rows(self, values: Tensor) -> None:
        if (
            not isinstance(values, Tensor)
            or values.ndim == 0
            or values.shape[0] != self.num_regions
        ):
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise AdaptokError(
                f"values must have one row per region: expected {self.num_regions}, got {shape}"
            )

    def _is_finer(self, size: Sequence[int]) -> bool:
        """A grid of `size` pixels larger than the Partition's on some axis and no smaller."""
        height, width = self.image_size
        return size[0] >= height and size[1] >= width and (size[0], size[1]) != (height, width)

    def _block_factor(self, size: Sequence[int]) -> tuple[int, int]:
        """(rows, cols) of the blocks a finer grid of `size` pixels makes of this Partition's
        pixels; refuses sizes that are not whole multiples."""
        height, width = self.image_size
        fine = tuple(int(s) for s in size)
        if len(fine) != 2 or fine[0] % height or fine[1] % width:
            raise AdaptokError(
                f"a finer grid must be a whole multiple of the Partition's {height}x{width} "
                f"pixels, got {'x'.join(map(str, fine))}; lift the Partition to it first "
                "(part.lift(H, W))"
            )
        return fine[0] // height, fine[1] // width

    def _check_pixels(self, images: Tensor) -> None:
        expected = (self.batch_size, *self.image_size)
        if images.ndim != 4 or (images.shape[0], *images.shape[2:]) != expected:
            raise AdaptokError(
                f"images must be [B, C, H, W] with B, H, W = {expected} to match the Partition, "
                f"got {tuple(images.shape)}"
            )


def check_partition(part: Partition, *, connected: bool = True) -> None:
    """Verify every invariant of a Partition (for tests and for debugging a new partitioner).

    Checks that ids are 0..N-1 and grouped by image, every pixel is in exactly one region, the
    derived fields agree with the labels, and (optionally) that every region is 4-connected.

    Raises:
        PartitionError: naming the first invariant that fails.
    """
    labels = part.labels
    if labels.dtype != torch.long or labels.ndim != 3:
        raise PartitionError(f"labels must be [B, H, W] int64, got {labels.dtype} {labels.shape}")
    derived = Partition._derive(labels)
    for name in ("batch_index", "box", "area"):
        if not torch.equal(getattr(derived, name), getattr(part, name)):
            raise PartitionError(f"{name} does not match the labels")
    if int(part.area.sum()) != labels.numel():
        raise PartitionError("region areas do not add up to the number of pixels")
    if connected:
        pieces = label_components(labels)
        split = int(pieces.max()) + 1 - part.num_regions
        if split:
            raise PartitionError(
                f"{counted(split, 'region')} {'is' if split == 1 else 'are'} not 4-connected "
                "(a region's pixels must form one 4-connected piece; graph.label_components "
                "splits them)"
            )
