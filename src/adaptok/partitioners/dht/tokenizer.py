"""The differentiable hierarchical tokenizer (∂HT) as a module: pixels -> features -> hierarchy ->
selection -> tokens, with mean-injected pixels that carry the gradient.

Pipeline (docs/design.md, "dHT"): pixel encoder (`encoder.py`) -> merge levels (Gaussian kernel,
ties to the largest neighbour, no self-edge at the pixel level and exactly flat areas joined
there, a learned self-edge above, optional compactness) -> selection by information criterion up
the hierarchy, the whole image the last candidate (per pixel, the best IC along its path:
compare="each"; or optimal pruning: compare="total") (`hierarchy.py`) -> relabel into
4-connected regions, thin pieces absorbed -> token budget ("auto", an int, or None for no cap)
(`selection.py`, `budget.py`) -> mean injection (here). `DHTTokenizer` holds the parameters and
the options, runs a batch in chunks on CPU and joins the chunks' results.
The partition is discrete; gradients reach the encoder, the self-edge projection and the
injection map through the similarity-weighted region features used by the mean injection.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import AdaptokError, check_images
from ...ops import imagenet_mean_std, summary_repr
from ...regions import Partition, lift
from .budget import AUTO, check_budget, resolve_budget
from .criteria import check_criterion
from .encoder import PixelEncoder, exact_sigmoid, mix_channels
from .hierarchy import Hierarchy, build_hierarchy, log_weights
from .selection import align_partition, select_partition

__all__ = ["DHTResult", "DHTTokenizer", "check_cell", "check_resolution", "working_size"]

INPUT_SPACES = ("unit", "imagenet")
POOLINGS = ("exact", "similarity")
COMPARES = ("total", "each")
MIN_SIZE = 2
# The criterion's scale (docs/design.md, "dHT", step 4). With ι = 1 a region without variance
# costs nothing (log(0 + 1) = 0), so under the per-pixel rule a flat area grows into one region
# whatever its size; the variance term is log(1 + prod_c(2π s²_c / variance_scale)), so a region
# stops growing where its feature variances reach about variance_scale / 2π. variance_scale
# was chosen by scripts/pretrain_dht.py (sweep_variance_scale) on held-out 224x224 crops of
# scikit-image photos that are not the benchmark photos (retina, colorwheel, logo and tinted
# grayscale ones): the largest scale (fewest regions) within 0.1 dB of the best mean-colour
# PSNR at the default budget (28.91 dB at 326 regions; 0.03: 28.79 dB, 0.01: 28.74 dB).
IOTA = 1.0
VARIANCE_SCALE = 0.02
# On CPU a batch runs in chunks of whole images of at most this many pixels (at least one image):
# per-pixel work touches a dozen arrays per pixel, and past a few hundred thousand pixels they fall
# out of the CPU caches and each call page-faults its buffers in again, so a batch of four 512x512
# images cost more per image than one (measured: 477 vs 370 ms per image on 1 thread, before
# chunking). A GPU takes the whole batch at once.
CHUNK_PIXELS = 1 << 18
# Regions thinner than this (pixels over the longer side of the box) are no candidates.
MIN_WIDTH = 3.0


def check_resolution(resolution: object) -> float:
    """A working resolution: a fraction of the image's side in (0, 1].

    Raises:
        AdaptokError: anything else.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int | float):
        raise AdaptokError(f"resolution must be a number in (0, 1], got {resolution!r}")
    if not 0 < resolution <= 1:
        raise AdaptokError(
            f"resolution must be a fraction of the image's side in (0, 1] (1: full size), got "
            f"{resolution}"
        )
    return float(resolution)


def working_size(height: int, width: int, resolution: float) -> tuple[int, int]:
    """(h, w) the hierarchy runs at for `resolution`, a fraction of the image's side in (0, 1].

    Raises:
        AdaptokError: resolution outside (0, 1], or a working size under 2 pixels.
    """
    resolution = check_resolution(resolution)
    size = (max(1, round(height * resolution)), max(1, round(width * resolution)))
    if min(size) < MIN_SIZE:
        raise AdaptokError(
            f"resolution {resolution} leaves {size[0]}x{size[1]} pixels of a {height}x{width} "
            f"image; the hierarchy needs at least {MIN_SIZE}x{MIN_SIZE}: raise resolution"
        )
    return size


def check_min_width(min_width: object) -> float:
    """A min_width in pixels (>= 0), as a float."""
    if isinstance(min_width, bool) or not isinstance(min_width, int | float) or not min_width >= 0:
        raise AdaptokError(f"min_width must be a number >= 0 pixels, got {min_width!r}")
    return float(min_width)


def check_cell(cell: object, height: int, width: int, resolution: float) -> int | None:
    """A cell side for aligned regions (None: not aligned), whole at the working size.

    Raises:
        AdaptokError: not a positive int, larger than the image, or not a whole number of
            working pixels at `resolution`.
    """
    if cell is None:
        return None
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise AdaptokError(
            f"cell must be a positive int (a ViT's patch side) or None, got {cell!r}"
        )
    if cell > min(height, width):
        raise AdaptokError(f"cell {cell} is larger than the {height}x{width} image; pass None")
    low_height, low_width = working_size(height, width, resolution)
    if (cell * low_height) % height or (cell * low_width) % width:
        raise AdaptokError(
            f"cell {cell} is {cell * low_height / height:g} working pixels at resolution "
            f"{resolution} of a {height}x{width} image; choose a resolution that makes it whole "
            "(a multiple of 1 / cell) or resolution=1"
        )
    return cell


class Inspection(NamedTuple):
    """The maps a DHTResult builds on first read (see DHTResult)."""

    features: Tensor
    levels: tuple[Tensor, ...]
    selection: Tensor


@dataclass(frozen=True)
class DHTResult:
    """What the tokenizer produces for a batch of B images of size H x W.

    Attributes:
        partition: the final Partition (N regions in the batch, each 4-connected, at most the
            budget per image).
        images: [B, C, H, W] the input images x (what the mean injection starts from).
        region_features: [N, d] similarity-weighted mean feature f̄_S of every final region.
        region_colors: [N, C] W·f̄_S in the input's space (the injected region means).
        inject_pixels: () -> pixels, built on their first read: a model that pools whole patches
            injects the means on its tokens instead (`pool_patches(region_colors=...)`), the
            same numbers without a pass over the full size.
        inspect: () -> Inspection, the maps below, built on their first read: a model reads
            none of them, and at full size they cost a ViT-S/16 retrofit about a tenth of its
            forward (benchmarks/results/inference_speed.md).

    Properties (built once, on first read):
        pixels: [B, C, H, W] mean-injected pixels x + (W·f̄_S - x̄_S), in the input's space
            (`Partition.inject_means`); carries gradient to the encoder, the self-edge
            projection and the injection map.
        features: [B, d, h, w] pixel features f from the encoder at the working size (H x W at
            resolution 1, and for every image when some of the batch fell back to full size);
            they carry gradient.
        levels: one [B, H, W] int64 map per merge level (vertex ids of that level, unique across
            the batch); each level's regions are unions of the previous level's.
        selection: [B, H, W] int64 regions chosen by the information criterion, relabelled into
            4-connected pieces, before the budget (ids consecutive, grouped by image).
    """

    partition: Partition
    images: Tensor
    region_features: Tensor
    region_colors: Tensor
    inject_pixels: Callable[[], Tensor] = field(repr=False)
    inspect: Callable[[], Inspection] = field(repr=False)

    __repr__ = summary_repr

    @cached_property
    def pixels(self) -> Tensor:
        return self.inject_pixels()

    @cached_property
    def _inspection(self) -> Inspection:
        return self.inspect()

    @property
    def features(self) -> Tensor:
        return self._inspection.features

    @property
    def levels(self) -> tuple[Tensor, ...]:
        return self._inspection.levels

    @property
    def selection(self) -> Tensor:
        return self._inspection.selection


def _chunks(images: Tensor) -> list[Tensor]:
    """The batch as consecutive chunks of whole images of at most CHUNK_PIXELS pixels on CPU (at
    least one image per chunk), as one chunk on other devices."""
    height, width = images.shape[-2:]
    if images.device.type != "cpu":
        return [images]
    per_chunk = max(1, CHUNK_PIXELS // (height * width))
    return list(images.split(per_chunk))


def _concatenate_results(results: list[DHTResult]) -> DHTResult:
    """One DHTResult from the results of consecutive chunks of a batch.

    Ids are offset to stay unique across the batch; a chunk whose merging stopped at fewer levels
    repeats its last level map.
    """

    def stack_ids(maps: list[Tensor]) -> Tensor:
        offsets = torch.tensor([0] + [int(ids.max()) + 1 for ids in maps[:-1]]).cumsum(0)
        return torch.cat([ids + int(offset) for ids, offset in zip(maps, offsets, strict=True)])

    def inspect() -> Inspection:
        depth = max(len(result.levels) for result in results)
        return Inspection(
            features=torch.cat([result.features for result in results]),
            levels=tuple(
                stack_ids([result.levels[min(at, len(result.levels) - 1)] for result in results])
                for at in range(depth)
            ),
            selection=stack_ids([result.selection for result in results]),
        )

    return DHTResult(
        partition=Partition.concatenate([result.partition for result in results]),
        images=torch.cat([result.images for result in results]),
        region_features=torch.cat([result.region_features for result in results]),
        region_colors=torch.cat([result.region_colors for result in results]),
        inject_pixels=lambda: torch.cat([result.pixels for result in results]),
        inspect=inspect,
    )


def _take_images(result: DHTResult, index: Tensor) -> DHTResult:
    """The DHTResult of images `index` of a batch, in that order, every region keeping its row
    of region_features / region_colors (`Partition.take`)."""
    part, rows = result.partition.take(index)

    def inspect() -> Inspection:
        selection = result.selection  # ids consecutive per image: shift each image's range
        lowest = selection.flatten(1).amin(1)
        spans = selection.flatten(1).amax(1) - lowest + 1
        shift = (spans[index].cumsum(0) - spans[index]) - lowest[index]
        return Inspection(
            features=result.features.index_select(0, index),
            levels=tuple(level.index_select(0, index) for level in result.levels),
            selection=selection.index_select(0, index) + shift.view(-1, 1, 1),
        )

    return DHTResult(
        partition=part,
        images=result.images.index_select(0, index),
        region_features=result.region_features.index_select(0, rows),
        region_colors=result.region_colors.index_select(0, rows),
        inject_pixels=lambda: result.pixels.index_select(0, index),
        inspect=inspect,
    )


def _working_cell(cell: int | None, small: Tensor, full: Tensor) -> int | None:
    """A cell side in pixels of `full` as working pixels of `small` (whole: `check_cell`)."""
    return None if cell is None else cell * small.shape[-2] // full.shape[-2]


def _batch_order(short: Tensor) -> Tensor:
    """Image i of a batch in [the batch's first results, then the results redone for the
    `short` images]: i itself where it is not short, else its place among the redone ones."""
    batch = short.numel()
    redone = batch + torch.cumsum(short.long(), 0) - 1
    return torch.where(short, redone, torch.arange(batch, device=short.device))


class DHTTokenizer(nn.Module):
    """Differentiable hierarchical tokenizer.

    Args:
        in_chans: C, image channels.
        features: d, pixel feature channels.
        hidden: width of the encoder's coarse branch.
        criterion: default information criterion ("aicc", "aic", "bic", "cic").
        iota: ι of the information criterion; at most 1 makes a flat area one region at any
            size (log(0 + ι) <= 0); above 1 the criterion picks a region size in flat areas.
        variance_scale: the criterion sees feature variances divided by this: a region stops
            growing where prod_c(2π s²_c / variance_scale) reaches about ι, so smaller ->
            more, more uniform regions.
        compactness: blend weight of the compactness term in edge values (0 disables it).
        min_width: regions thinner than this many pixels (area over the longer side of the
            box, at the working size) are never selected, and a selected piece that thin joins
            its most similar neighbour: one-pixel strips along edges are tokens a ViT wastes (0
            disables it). A call's `min_width` overrides it.
        min_regions: an image stops merging once it has this many regions or fewer.
        pooling: "exact" (count-weighted) or "similarity" (link-confidence-weighted) statistics
            for the merge levels.
        compare: how a coarser region replaces the finer selection inside it: "total" when its
            IC is at least the sum of their ICs (optimal pruning of the hierarchy for an additive
            criterion), "each" per pixel when its IC is at least that of the pixel's current
            region (the reference code's rule, the default: with the paper's criterion, whose
            fit term is weighted by m / n, the penalty of small regions dominates the summed
            IC and "total" keeps the whole image for most photos).
        input_space: "unit" for images in [0, 1], "imagenet" for ImageNet-normalised images; the
            encoder always sees ImageNet-normalised pixels and the injected pixels come back in
            the input's space.
        target_coefficient: budget="auto" means round(sqrt(H*W) / target_coefficient).
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        features: int = 8,
        hidden: int = 16,
        criterion: str = "aicc",
        iota: float = IOTA,
        variance_scale: float = VARIANCE_SCALE,
        compactness: float = 0.0,
        min_width: float = MIN_WIDTH,
        min_regions: int = 6,
        pooling: str = "exact",
        compare: str = "each",
        input_space: str = "unit",
        target_coefficient: float = 0.56,
    ) -> None:
        super().__init__()
        check_criterion(criterion)
        if pooling not in POOLINGS:
            raise AdaptokError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if compare not in COMPARES:
            raise AdaptokError(f"unknown compare rule {compare!r}; choose one of {COMPARES}")
        if input_space not in INPUT_SPACES:
            raise AdaptokError(f"unknown input_space {input_space!r}; choose one of {INPUT_SPACES}")
        if not 0.0 <= compactness <= 1.0:
            raise AdaptokError(f"compactness must be in [0, 1], got {compactness}")
        if not iota > 0:
            raise AdaptokError(f"iota must be positive, got {iota}")
        check_min_width(min_width)
        if not variance_scale > 0:
            raise AdaptokError(f"variance_scale must be positive, got {variance_scale}")
        self.in_chans = in_chans
        self.num_features = features
        self.criterion = criterion
        self.iota = float(iota)
        self.variance_scale = float(variance_scale)
        self.compactness = float(compactness)
        self.min_width = float(min_width)
        self.min_regions = int(min_regions)
        self.pooling = pooling
        self.compare = compare
        self.input_space = input_space
        self.target_coefficient = float(target_coefficient)
        self.encoder = PixelEncoder(in_chans=in_chans, features=features, hidden=hidden)
        # Self-edge above the pixel level: sigmoid(variance · w + b); b = -2π makes a fresh
        # tokenizer link nearly always.
        self.self_edge = nn.Linear(features, 1)
        nn.init.normal_(self.self_edge.weight, std=1e-2)
        nn.init.constant_(self.self_edge.bias, -2 * math.pi)
        # Injection W: features -> normalised image channels; trained (scripts/pretrain_dht.py)
        # so that W·f̄_S matches the region's mean colour, which makes the injection an identity.
        self.inject = nn.Linear(features, in_chans)
        imagenet_mean, imagenet_std = imagenet_mean_std()
        mean = imagenet_mean if in_chans == 3 else (0.5,) * in_chans
        std = imagenet_std if in_chans == 3 else (0.25,) * in_chans
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this tokenizer (saved with the weights)."""
        return {
            "in_chans": self.in_chans,
            "features": self.num_features,
            "hidden": self.encoder.down1.out_channels,
            "criterion": self.criterion,
            "iota": self.iota,
            "variance_scale": self.variance_scale,
            "compactness": self.compactness,
            "min_width": self.min_width,
            "min_regions": self.min_regions,
            "pooling": self.pooling,
            "compare": self.compare,
            "target_coefficient": self.target_coefficient,
        }

    # ------------------------------------------------------------------------------- helpers
    def _normalise(self, images: Tensor) -> Tensor:
        if self.input_space == "unit":
            return (images - self.pixel_mean) / self.pixel_std
        return images

    def _denormalise_colors(self, colors: Tensor) -> Tensor:
        """[N, C] normalised colours -> the input's space."""
        if self.input_space == "unit":
            return colors * self.pixel_std.view(1, -1) + self.pixel_mean.view(1, -1)
        return colors

    def _check(
        self,
        images: Tensor,
        budget: object,
        criterion: str | None,
        resolution: float,
        cell: int | None,
        min_width: float | None,
    ) -> tuple[int | None, str, float]:
        """(cap, criterion, min_width) of a call, its images, resolution and cell checked."""
        check_images(images, min_size=MIN_SIZE)
        if images.shape[1] != self.in_chans:
            fix = (
                "an alpha channel? composite it (adaptok.io.composite_alpha(images)) or drop it "
                "(images[:, :-1])"
                if images.shape[1] in (2, 4)
                else f"convert them to {self.in_chans} channels"
            )
            raise AdaptokError(
                f"this tokenizer takes {self.in_chans}-channel images, got "
                f"{images.shape[1]} channels (shape {tuple(images.shape)}); {fix}"
            )
        criterion = self.criterion if criterion is None else check_criterion(criterion)
        height, width = images.shape[-2:]
        cap = resolve_budget(check_budget(budget), height, width, self.target_coefficient)
        check_cell(cell, height, width, resolution)
        width = self.min_width if min_width is None else check_min_width(min_width)
        return cap, criterion, width

    # ------------------------------------------------------------------------------ algorithm
    def _hierarchy(
        self, images: Tensor, features: Tensor, criterion: str, min_width: float
    ) -> Hierarchy:
        """`build_hierarchy` with this tokenizer's options (no gradient needed: every choice
        is discrete; `_log_weights` replays the merges with gradient).

        Args:
            images: [B, C, H, W] the images the encoder read (for its flat areas).
            features: [B, d, H, W] their pixel features.
            min_width: thinnest selectable region (pixels of `images`).
        """
        height, width = features.shape[-2:]
        return build_hierarchy(
            images,
            features,
            self_edge=self._self_edge_of,
            receptive_field=self.encoder.receptive_field(height, width),
            criterion=criterion,
            iota=self.iota,
            variance_scale=self.variance_scale,
            compactness=self.compactness,
            min_width=min_width,
            min_regions=self.min_regions,
            pooling=self.pooling,
            compare=self.compare,
        )

    def _features(self, images: Tensor) -> Tensor:
        """[B, C, H, W] images in the input space -> [B, d, H, W] pixel features."""
        return self.encoder(self._normalise(images))

    def _self_edge_of(self, variance: Tensor) -> Tensor:
        """[V] self-edge value sigmoid(w · variance + b) of every vertex of a level (the same bits
        for a vertex whatever else is in the batch: see `mix_channels`)."""
        logit = mix_channels(variance, self.self_edge.weight, self.self_edge.bias)
        return exact_sigmoid(logit).squeeze(-1)

    def _log_weights(self, features: Tensor, tree: Hierarchy) -> Tensor:
        """[A] log similarity weight of every atom in its selected region (`log_weights`:
        the merges replayed with gradient when `features` carry it)."""
        return log_weights(
            features,
            tree,
            self_edge=self._self_edge_of,
            compactness=self.compactness,
            pooling=self.pooling,
        )

    @torch.no_grad()
    def _partition(
        self,
        images: Tensor,
        features: Tensor,
        cap: int | None,
        criterion: str,
        generator: torch.Generator | None,
        sample_budget: bool,
        cell: int | None,
        min_width: float,
    ) -> tuple[Partition, Hierarchy, Tensor]:
        """Hierarchy, selection, relabelling, alignment and budget (all discrete: no gradient).

        Args:
            images: [B, C, H, W] the images the encoder read.
            features: [B, d, H, W] their pixel features.
            cell: block side (working pixels) of aligned regions (`align_partition`), or None.
            min_width: thinnest selectable region (working pixels).

        Returns:
            (partition, hierarchy, pieces [A] selection piece of every atom).
        """
        tree = self._hierarchy(images, features, criterion, min_width)
        part, pieces = select_partition(
            tree,
            cap,
            min_width=min_width,
            generator=generator,
            sample_budget=sample_budget,
        )
        if cell is not None:
            part = align_partition(
                part, features, cell, cap, generator=generator, sample_budget=sample_budget
            )
        return part, tree, pieces

    # ---------------------------------------------------------------------------- public API
    def forward(
        self,
        images: Tensor,
        *,
        budget: int | str | None = AUTO,
        criterion: str | None = None,
        generator: torch.Generator | None = None,
        sample_budget: bool | None = None,
        resolution: float = 1.0,
        cell: int | None = None,
        min_width: float | None = None,
    ) -> DHTResult:
        """Tokenize a batch.

        Args:
            images: [B, C, H, W] float images (in [0, 1], or ImageNet-normalised when the
                tokenizer's input_space is "imagenet"), H and W >= 2, any size.
            budget: cap on regions per image: "auto" (default) caps at
                round(sqrt(H*W) / target_coefficient) (400 at 224x224), an int >= 1 caps at that
                many, None does not cap (the count then follows the image's content). Each image
                gets min(regions found, cap).
            criterion: information criterion overriding the tokenizer's default.
            generator: random source of the budget sampling (ignored when not sampling).
            sample_budget: choose the regions kept under the budget by sampling ∝ 1/sqrt(area)
                (the paper's training rule) instead of the deterministic merge-cost rule; None
                samples in training mode only.
            resolution: fraction of the image's side at which the hierarchy runs (1: full size).
                Below 1 the images are resampled (antialiased bilinear) to that size, tokenized
                there, and the regions lifted back to H x W (`lift`), so `pixels` and the
                partition are full size. The cost falls with the pixel count, and under a cap
                that binds, a smaller working image keeps larger, truer regions
                (benchmarks/results/dht_resolution.md). An image left with fewer regions than
                the cap at the working size (too little to split there) is tokenized at full
                size instead, so the cap, not the resolution, decides how many tokens an image
                gets; without a cap, or with `cell`, the working size is used as it is.
            cell: None, or a block side in pixels (a ViT's patch side, whole at the working
                size): regions are then made of whole blocks (`align_partition`: a block one
                region covers to ALIGN_PURITY joins it, a block a boundary runs through is a
                region of its own, and the cap merges the most alike), so a ViT trained on
                those patches reads each region as a union of patches it knows. Aligned images
                short of the cap at the working size are not redone at full size: their regions
                are whole cells either way (on held-out cluttered Fashion-MNIST, cap 31, cells
                of 16 px at resolution 0.5, redoing them changed accuracy by -0.7 points, 39.6
                against 40.3%, for 1.2 more tokens per image and 2.7x the time).
            min_width: thinnest selectable region in working pixels for this call (None: the
                tokenizer's `min_width`); a model whose regions are whole cells sets 0, since a
                cell is never a thin token (`derive_options`).

        Returns:
            DHTResult.
        """
        cap, criterion, width = self._check(images, budget, criterion, resolution, cell, min_width)
        sample = self.training if sample_budget is None else sample_budget

        def run(batch: Tensor, at: float) -> DHTResult:
            results = self._chunked(
                batch, at, lambda small, full: self._tokenize(
                    small, full, cap, criterion, generator, sample,
                    _working_cell(cell, small, full), width,
                )
            )  # fmt: skip
            return results[0] if len(results) == 1 else _concatenate_results(results)

        def join(first: DHTResult, redone: DHTResult, short: Tensor) -> DHTResult:
            def inspect() -> Inspection:  # features at the working size lifted to the full size
                features = F.interpolate(first.features, size=images.shape[-2:])
                return first._inspection._replace(features=features)

            lifted = dataclasses.replace(first, inspect=inspect)
            joined = _concatenate_results([lifted, redone])
            return _take_images(joined, _batch_order(short).to(images.device))

        return self._with_fallback(images, resolution, cap, cell, run, join)

    def _chunked(self, images: Tensor, resolution: float, step: Callable) -> list:
        """`step(small, full)` on each chunk of the batch: the chunk at the working size of
        `resolution` and the same images at their own size."""
        work = self._working_images(images, resolution)
        chunks = _chunks(work)
        fulls = images.split([len(chunk) for chunk in chunks])
        return [step(small, full) for small, full in zip(chunks, fulls, strict=True)]

    def _with_fallback(
        self,
        images: Tensor,
        resolution: float,
        cap: int | None,
        cell: int | None,
        run: Callable,
        join: Callable,
    ):
        """`run(images, resolution)`, with the images it left short of the cap (below full
        size) run again at full size and put back in their places by `join`. Aligned regions
        (`cell`) are kept as they are: they are whole cells, which the working size resolves
        as well as the full size (see `forward`)."""
        result = run(images, resolution)
        if resolution == 1 or cap is None or cell is not None:
            return result
        part = result if isinstance(result, Partition) else result.partition
        short = part.counts.cpu() < cap  # a smaller image had too little to split
        if not short.any():
            return result
        redone = run(images[short.to(images.device)], 1.0)
        return redone if bool(short.all()) else join(result, redone, short)

    def _working_images(self, images: Tensor, resolution: float) -> Tensor:
        """The images at the working size of `resolution` (the images themselves at 1)."""
        height, width = images.shape[-2:]
        size = working_size(height, width, resolution)
        if size == (height, width):
            return images
        return F.interpolate(
            images, size=size, mode="bilinear", antialias=True, align_corners=False
        )

    def _tokenize(
        self,
        images: Tensor,
        full: Tensor,
        cap: int | None,
        criterion: str,
        generator: torch.Generator | None,
        sample_budget: bool,
        cell: int | None,
        min_width: float,
    ) -> DHTResult:
        """`forward` on one chunk of the batch (checked arguments): `images` at the working
        size, `full` the same chunk at its own size (the same pixels at resolution 1), `cell`
        and `min_width` in working pixels."""
        features = self._features(images)
        part, tree, pieces = self._partition(
            images.detach(),
            features.detach(),
            cap,
            criterion,
            generator,
            sample_budget,
            cell,
            min_width,
        )
        log_weight = self._log_weights(features, tree).index_select(0, tree.atom_of_pixel)
        shape = part.labels.shape
        height, width = full.shape[-2:]

        def inspect() -> Inspection:
            def full_size(atom_ids: Tensor) -> Tensor:
                return lift(atom_ids.index_select(0, tree.atom_of_pixel).view(shape), height, width)

            levels = tuple(full_size(level) for level in tree.levels)
            return Inspection(features, levels, full_size(pieces))

        # Similarity-weighted region features: each pixel counts with the product of its
        # ancestors' link confidences, which carries gradient to the similarities (encoder) and
        # the self-edges (projection).
        weight = torch.exp(log_weight)
        flat = part.labels.flatten()
        dim = features.shape[1]
        pixel_features = features.permute(0, 2, 3, 1).reshape(-1, dim)
        total = weight.new_zeros(part.num_regions).index_add(0, flat, weight)
        region_features = (
            pixel_features.new_zeros(part.num_regions, dim).index_add(
                0, flat, weight[:, None] * pixel_features
            )
            / total[:, None]
        )
        region_colors = self._denormalise_colors(self.inject(region_features))
        # Injected over the working size's pixels when each is a block of full-size pixels: the
        # same means and pixels without a pass of ids over the full size.
        lifted = part.lift(height, width)
        if height % shape[-2] or width % shape[-1]:  # blocks of unequal sizes: at full size
            part = lifted
        return DHTResult(
            partition=lifted,
            images=full,
            region_features=region_features,
            region_colors=region_colors,
            inject_pixels=lambda: part.inject_means(full, region_colors),
            inspect=inspect,
        )

    @torch.no_grad()
    def partition(
        self,
        images: Tensor,
        *,
        budget: int | str | None = AUTO,
        criterion: str | None = None,
        generator: torch.Generator | None = None,
        sample_budget: bool | None = None,
        resolution: float = 1.0,
        cell: int | None = None,
        min_width: float | None = None,
    ) -> Partition:
        """Only the Partition (no injection, no gradient): the fast path of `dht_partition`.

        Args, budget contract, resolution, cell and min_width as in `forward`.
        """
        cap, criterion, width = self._check(images, budget, criterion, resolution, cell, min_width)
        sample = self.training if sample_budget is None else sample_budget

        def run(batch: Tensor, at: float) -> Partition:
            parts = self._chunked(
                batch, at, lambda small, full: self._partition(
                    small, self._features(small), cap, criterion, generator, sample,
                    _working_cell(cell, small, full), width,
                )[0]
            )  # fmt: skip
            part = Partition.concatenate(parts) if len(parts) > 1 else parts[0]
            return part.lift(*batch.shape[-2:])

        def join(first: Partition, redone: Partition, short: Tensor) -> Partition:
            joined = Partition.concatenate([first, redone])
            return joined.take(_batch_order(short))[0]

        return self._with_fallback(images, resolution, cap, cell, run, join)
