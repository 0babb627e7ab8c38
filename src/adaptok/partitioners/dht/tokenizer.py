"""The differentiable hierarchical tokenizer (∂HT): pixels -> hierarchy -> IC selection -> tokens.

Pipeline (docs/design.md, "dHT"): pixel encoder -> merge levels (Gaussian kernel, ties to the
largest neighbour, no self-edge at the pixel level and exactly flat areas joined there, a learned
self-edge above, optional compactness) -> selection by information criterion up the
hierarchy, the whole image the last candidate (per pixel, the best IC along its path:
compare="each"; or optimal pruning: compare="total") -> relabel into 4-connected regions, thin
pieces absorbed -> token budget ("auto", an int, or None for no cap) -> mean injection.
The partition is discrete; gradients reach the encoder, the self-edge projection and the
injection map through the similarity-weighted region features used by the mean injection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ...errors import AdaptokError, check_images
from ...graph import connected_components
from ...ops import imagenet_mean_std, summary_repr
from ...regions import Partition
from .budget import absorb_regions, enforce_budget
from .criteria import check_criterion, information_criterion
from .encoder import PixelEncoder, exact_sigmoid, mix_channels
from .merge import (
    Links,
    RegionGraph,
    channel_major,
    distinct_pairs,
    flat_edges,
    group_boxes,
    join_across,
    link_confidence,
    link_vertices,
    pixel_graph,
    pool_statistics,
    pool_vertices,
    sum_columns,
)

__all__ = ["AUTO", "DHTResult", "DHTTokenizer", "check_budget", "default_budget", "resolve_budget"]

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


@dataclass(frozen=True)
class DHTResult:
    """What the tokenizer produces for a batch of B images of size H x W.

    Attributes:
        partition: the final Partition (N regions in the batch, each 4-connected, at most the
            budget per image).
        pixels: [B, C, H, W] mean-injected pixels x + (W·f̄_S - x̄_S), in the input's space;
            carries gradient to the encoder, the self-edge projection and the injection map.
        features: [B, d, H, W] pixel features f from the encoder.
        region_features: [N, d] similarity-weighted mean feature f̄_S of every final region.
        region_colors: [N, C] W·f̄_S in the input's space (the injected region means).
        levels: one [B, H, W] int64 map per merge level (vertex ids of that level, unique across
            the batch); each level's regions are unions of the previous level's.
        selection: [B, H, W] int64 regions chosen by the information criterion, relabelled into
            4-connected pieces, before the budget (ids consecutive, grouped by image).
    """

    partition: Partition
    pixels: Tensor
    features: Tensor
    region_features: Tensor
    region_colors: Tensor
    levels: tuple[Tensor, ...]
    selection: Tensor

    __repr__ = summary_repr


@dataclass(frozen=True)
class _Merge:
    """Internal: one merge above the pixel level, as the differentiable replay needs it.

    Attributes:
        graph: the level that linked (no gradient; its mean and variance are recomputed with
            gradient by the replay, its counts and boxes are read as they are; no edges).
        links: the links it made (parent and neighbour are what the replay reuses).
        must_join: [V] bool vertices made to join, or None.
        better: [A] bool atoms whose selection moved to the level this merge made.
    """

    graph: RegionGraph
    links: Links
    must_join: Tensor | None
    better: Tensor


@dataclass(frozen=True)
class _Hierarchy:
    """Internal: the merge levels and the selection, tracked per level-1 region ("atom").

    Built without gradient; `DHTTokenizer._log_weights` replays the merges with gradient.

    Attributes:
        atom_of_pixel: [P] int64 atom of every pixel (P = B*H*W).
        pixel_links: the links of the pixel level (every pixel joins a neighbour).
        grid: (B, H, W).
        atoms: the level-1 RegionGraph (A vertices).
        selected: [A] int64 selection key (equal keys = the same selected region).
        levels: one [A] int64 vertex map per level (level 1 first).
        merges: the merges above the pixel level, one per level after the first.
        whole_better: [A] bool atoms whose selection is the whole image.
    """

    atom_of_pixel: Tensor
    pixel_links: Links
    grid: tuple[int, int, int]
    atoms: RegionGraph
    selected: Tensor
    levels: tuple[Tensor, ...]
    merges: tuple[_Merge, ...]
    whole_better: Tensor


def _unique_pairs(first: Tensor, second: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Distinct unordered pairs (low < high) among the given pairs, dropping equal ends."""
    differ = torch.nonzero(first != second).flatten()
    return distinct_pairs(first.index_select(0, differ), second.index_select(0, differ), size)


def _thin(graph: RegionGraph, min_width: float) -> Tensor:
    """[V] bool: regions thinner than `min_width` (pixels over the longer side of the box)."""
    side = (graph.box[:, 2:] - graph.box[:, :2]).amax(1).to(graph.count.dtype)
    return graph.count < min_width * side


def _piece_statistics(pieces: Tensor, num_pieces: int, atoms: RegionGraph) -> tuple[Tensor, Tensor]:
    """([K] pixel count, [K, d] mean feature) of pieces made of atoms (no gradient)."""
    columns = torch.cat([atoms.count[None], atoms.mean.detach().t() * atoms.count])
    sums = sum_columns(columns, pieces, num_pieces)
    area = sums[:, 0]
    return area, sums[:, 1:] / area[:, None]


def _concatenate(parts: list[Partition]) -> Partition:
    """One Partition from the Partitions of consecutive chunks of a batch."""
    region_offsets = torch.tensor([0] + [part.num_regions for part in parts]).cumsum(0).tolist()
    image_offsets = torch.tensor([0] + [part.batch_size for part in parts]).cumsum(0).tolist()
    return Partition(
        labels=torch.cat(
            [part.labels + offset for part, offset in zip(parts, region_offsets, strict=False)]
        ),
        batch_index=torch.cat(
            [part.batch_index + offset for part, offset in zip(parts, image_offsets, strict=False)]
        ),
        box=torch.cat([part.box for part in parts]),
        area=torch.cat([part.area for part in parts]),
    )


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

    depth = max(len(result.levels) for result in results)
    return DHTResult(
        partition=_concatenate([result.partition for result in results]),
        pixels=torch.cat([result.pixels for result in results]),
        features=torch.cat([result.features for result in results]),
        region_features=torch.cat([result.region_features for result in results]),
        region_colors=torch.cat([result.region_colors for result in results]),
        levels=tuple(
            stack_ids([result.levels[min(level, len(result.levels) - 1)] for result in results])
            for level in range(depth)
        ),
        selection=stack_ids([result.selection for result in results]),
    )


def _partition_from_atoms(
    region_of_atom: Tensor,
    atom_of_pixel: Tensor,
    atoms: RegionGraph,
    batch: int,
    height: int,
    width: int,
) -> Partition:
    """Build the Partition from atom-level ids (consecutive, grouped by image) without another
    pass over the pixels for areas and boxes."""
    num_regions = int(region_of_atom.max()) + 1
    area = torch.zeros(num_regions, dtype=torch.long, device=atoms.box.device)
    area.index_add_(0, region_of_atom, atoms.count.round().long())
    batch_index = atoms.image.new_zeros(num_regions).scatter_(0, region_of_atom, atoms.image)
    labels = region_of_atom.index_select(0, atom_of_pixel).view(batch, height, width)
    box = group_boxes(atoms.box, region_of_atom, num_regions)
    return Partition(labels=labels, batch_index=batch_index, box=box, area=area)


AUTO = "auto"


def default_budget(height: int, width: int, coefficient: float = 0.56) -> int:
    """The default token target round(sqrt(H*W) / 0.56) per image (what budget="auto" means)."""
    return max(1, round(math.sqrt(height * width) / coefficient))


def check_budget(budget: object) -> int | str | None:
    """Validate a token budget: "auto" (the default target), None (no cap) or an int >= 1."""
    if budget is None or budget == AUTO:
        return budget
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise AdaptokError(
            f'budget must be a positive int (a cap on regions per image), "auto" (the default '
            f"cap round(sqrt(H*W)/0.56)) or None (no cap), got {budget!r} of type "
            f'{type(budget).__name__}; pass int(budget), "auto" or None'
        )
    if budget < 1:
        raise AdaptokError(
            f"budget must be at least 1 region per image, got {budget}; pass None for no cap"
        )
    return budget


def resolve_budget(
    budget: int | str | None, height: int, width: int, coefficient: float = 0.56
) -> int | None:
    """The cap on regions per image a (checked) budget means at H x W: None for no cap."""
    if budget == AUTO:
        return default_budget(height, width, coefficient)
    return budget  # type: ignore[return-value]


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
            box) are never selected, and a selected piece that thin joins its most similar
            neighbour: one-pixel strips along edges are tokens a ViT wastes (0 disables it).
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
        if not min_width >= 0:
            raise AdaptokError(f"min_width must be >= 0 pixels, got {min_width}")
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
        self, images: Tensor, budget: object, criterion: str | None
    ) -> tuple[int | None, str]:
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
        return cap, criterion

    def _ic(
        self, graph: RegionGraph, pixels_per_image: int, criterion: str, min_width: float
    ) -> Tensor:
        """IC of every vertex; -inf for regions thinner than `min_width`: a one- or two-pixel
        strip along an edge has no variance, so the criterion would keep it, and such strips
        are tokens a ViT wastes (docs/design.md, "dHT", step 5)."""
        ic = information_criterion(
            graph.variance.detach() / self.variance_scale,
            graph.count,
            pixels_per_image,
            criterion=criterion,
            iota=self.iota,
        )
        return torch.where(_thin(graph, min_width), -math.inf, ic)

    def _whole_image_ic(
        self, atoms: RegionGraph, batch: int, pixels_per_image: int, criterion: str
    ) -> Tensor:
        """[B] IC of every image scored as one region (the last candidate of the hierarchy)."""
        dim = atoms.mean.shape[1]
        mean, variance = atoms.mean.detach(), atoms.variance.detach()
        # Rows into B sums: here index_add of whole rows is the fast form (column scatters into
        # a few bins wait on each other's adds).
        moments = torch.cat(
            [
                atoms.count[:, None],
                atoms.count[:, None] * mean,
                atoms.count[:, None] * (variance + mean.square()),
            ],
            1,
        )
        sums = moments.new_zeros(batch, moments.shape[1]).index_add(0, atoms.image, moments)
        count = sums[:, 0]
        image_mean = sums[:, 1 : 1 + dim] / count[:, None]
        image_variance = (sums[:, 1 + dim :] / count[:, None] - image_mean.square()).clamp(min=0)
        return information_criterion(
            image_variance / self.variance_scale,
            count,
            pixels_per_image,
            criterion=criterion,
            iota=self.iota,
        )

    # ------------------------------------------------------------------------------ algorithm
    def _hierarchy(self, images: Tensor, features: Tensor, criterion: str) -> _Hierarchy:
        """Merge levels and the information-criterion selection (no gradient: every choice here
        is discrete; `_log_weights` replays the merges with gradient).

        After level 1 every pixel's history is that of its level-1 region (its "atom"), so the
        selection is tracked per atom, not per pixel: a few times fewer elements per level.

        Args:
            images: [B, C, H, W] the images the encoder read (for its flat areas).
            features: [B, d, H, W] their pixel features.
        """
        batch, _, height, width = features.shape
        pixels_per_image = height * width
        graph = pixel_graph(features)
        max_levels = math.ceil(math.log2(math.sqrt(pixels_per_image)))
        # An image thinner than min_width still has candidates.
        min_width = min(self.min_width, height, width)

        # No self-edge at the pixel level: every pixel joins a neighbour (the authors' rule; a
        # pixel self-edge left single pixels alone, about 5x more regions on noise).
        links = link_vertices(graph, None, compactness=self.compactness)
        # Pixels whose receptive fields are one colour (the same) share an atom, so a connected,
        # exactly flat area is one atom and no later step can cut it: its links alone leave
        # several atoms in it, bordered where the tie rule's chains happen to end, and the
        # selection used to keep them at different levels, which drew straight seams through
        # flat backgrounds (issue 20; docs/design.md, "dHT", step 2).
        flat = flat_edges(images, *self.encoder.receptive_field(height, width))
        links = join_across(links, graph, flat)
        atoms = pool_vertices(graph, links, pooling=self.pooling)
        num_atoms = atoms.num_vertices
        vertex = torch.arange(num_atoms, device=features.device)
        # Level 1 beats the single pixels (their IC is -inf), so every atom starts selected.
        best_ic = self._ic(atoms, pixels_per_image, criterion, min_width)
        total = best_ic  # per current vertex: summed IC of the selection inside it
        selected = num_atoms + vertex
        count_before = atoms.count
        merges = []
        active = torch.ones(batch, dtype=torch.bool, device=features.device)
        levels = [vertex]
        graph = atoms
        for level in range(2, max_levels + 1):
            regions = torch.bincount(graph.image, minlength=batch)
            active = active & (regions > self.min_regions)
            if not bool(active.any()):
                break
            # A region too thin to be selected has no self-edge either: it must join a neighbour.
            must_join = _thin(graph, min_width)
            step = link_vertices(
                graph,
                self._self_edge_of(graph.variance),
                compactness=self.compactness,
                must_join=must_join,
            )
            linked_graph = graph
            graph = pool_vertices(graph, step, pooling=self.pooling)
            vertex = step.parent.index_select(0, vertex)
            levels.append(vertex)
            ic = self._ic(graph, pixels_per_image, criterion, min_width)
            if self.compare == "total":
                # Optimal pruning of the tree: a region replaces the selection inside it when
                # its IC is at least the sum of the selected regions' ICs.
                inside = ic.new_zeros(graph.num_vertices).index_add(0, step.parent, total)
                grew = torch.bincount(step.parent, minlength=graph.num_vertices) > 1
                choose = active.index_select(0, graph.image) & (ic >= inside)
                total = torch.where(choose, ic, inside)
                better = choose.index_select(0, vertex)
                improved = (choose & grew).index_select(0, vertex)
            else:
                # The reference rule: per pixel, the best IC seen along its path.
                atom_ic = ic.index_select(0, vertex)
                count = graph.count.index_select(0, vertex)
                better = active.index_select(0, atoms.image) & (atom_ic >= best_ic)
                # A region that grew out of a thin one (IC -inf) improves even while still thin.
                rose = (atom_ic > best_ic) | (best_ic == -math.inf)
                improved = better & rose & (count > count_before)
                count_before = count
                best_ic = torch.where(better, atom_ic, best_ic)
            selected = torch.where(better, level * num_atoms + vertex, selected)
            no_edges = linked_graph.src[:0]
            merges.append(
                _Merge(
                    graph=replace(linked_graph, src=no_edges, dst=no_edges, edge_distance=None),
                    links=step,
                    must_join=must_join,
                    better=better,
                )
            )
            active = active & (torch.bincount(atoms.image[improved], minlength=batch) > 0)
        # The whole image is the last candidate (the authors score it as one more level).
        whole = self._whole_image_ic(atoms, batch, pixels_per_image, criterion)
        if self.compare == "total":
            current = whole.new_zeros(batch).index_add(0, graph.image, total)
            better = (whole >= current).index_select(0, atoms.image)
        else:
            better = whole.index_select(0, atoms.image) >= best_ic
        selected = torch.where(better, (max_levels + 1) * num_atoms + atoms.image, selected)
        return _Hierarchy(
            atom_of_pixel=links.parent,
            pixel_links=links,
            grid=(batch, height, width),
            atoms=atoms,
            selected=selected,
            levels=tuple(levels),
            merges=tuple(merges),
            whole_better=better,
        )

    def _features(self, images: Tensor) -> Tensor:
        """[B, C, H, W] images in the input space -> [B, d, H, W] pixel features."""
        return self.encoder(self._normalise(images))

    def _self_edge_of(self, variance: Tensor) -> Tensor:
        """[V] self-edge value sigmoid(w · variance + b) of every vertex of a level (the same bits
        for a vertex whatever else is in the batch: see `mix_channels`)."""
        logit = mix_channels(variance, self.self_edge.weight, self.self_edge.bias)
        return exact_sigmoid(logit).squeeze(-1)

    def _log_weights(self, features: Tensor, tree: _Hierarchy) -> Tensor:
        """[A] log similarity weight of every atom in its selected region.

        With gradient (features that require it, autograd on), the merges are replayed with the
        choices of the no-gradient pass (parents, best neighbours, forced joins, selections) and
        the same arithmetic (`pool_statistics`, `link_confidence`), so the values are those of a
        pass with gradient throughout, while the discrete work (edges, boxes, ties, components,
        criteria) runs once, without autograd bookkeeping. Without gradient the link
        confidences the no-gradient pass computed are summed as they are (the same values).
        """
        replay = torch.is_grad_enabled() and features.requires_grad
        if replay:
            mean = channel_major(features)
            ones = mean.new_ones(mean.shape[0])
            empty = tree.atom_of_pixel[:0]
            pixels = RegionGraph(
                mean=mean,
                variance=torch.zeros_like(mean),
                count=ones,
                mass=ones,
                box=empty[:, None],
                image=empty,
                src=empty,
                dst=empty,
                grid=tree.grid,
            )
            mean, variance, _, mass = pool_statistics(
                pixels, tree.pixel_links, pooling=self.pooling
            )
        log_weight = features.new_zeros(tree.atoms.num_vertices)
        selected = log_weight
        for number, (merge, vertex) in enumerate(zip(tree.merges, tree.levels, strict=False)):
            confidence = merge.links.confidence
            if replay:
                graph = replace(merge.graph, mean=mean, variance=variance, mass=mass)
                confidence, _ = link_confidence(
                    graph,
                    merge.links.neighbour,
                    self._self_edge_of(variance),
                    compactness=self.compactness,
                    must_join=merge.must_join,
                )
                if number + 1 < len(tree.merges):
                    links = replace(merge.links, confidence=confidence)
                    mean, variance, _, mass = pool_statistics(graph, links, pooling=self.pooling)
            log_weight = log_weight + torch.log(confidence).index_select(0, vertex)
            selected = torch.where(merge.better, log_weight, selected)
        return torch.where(tree.whole_better, log_weight, selected)

    @torch.no_grad()
    def _partition(
        self,
        images: Tensor,
        features: Tensor,
        cap: int | None,
        criterion: str,
        generator: torch.Generator | None,
        sample_budget: bool,
    ) -> tuple[Partition, _Hierarchy, Tensor]:
        """Hierarchy, selection, relabelling and budget (all discrete: no gradient).

        Args:
            images: [B, C, H, W] the images the encoder read.
            features: [B, d, H, W] their pixel features.

        Returns:
            (partition, hierarchy, pieces [A] selection piece of every atom).
        """
        batch, _, height, width = features.shape
        tree = self._hierarchy(images, features, criterion)
        atoms = tree.atoms
        # Relabel into 4-connected pieces: atoms are connected, so pieces are the components of
        # the atom graph restricted to edges whose ends were selected into the same region.
        same = tree.selected.index_select(0, atoms.src) == tree.selected.index_select(0, atoms.dst)
        same = torch.nonzero(same).flatten()
        pieces = connected_components(
            atoms.num_vertices, atoms.src.index_select(0, same), atoms.dst.index_select(0, same)
        )
        pieces, area, piece_features, pairs = self._absorb_thin(
            pieces, atoms, min(self.min_width, height, width)
        )
        num_pieces = area.shape[0]
        piece_image = atoms.image.new_zeros(num_pieces).scatter_(0, pieces, atoms.image)
        if cap is not None and int(torch.bincount(piece_image, minlength=batch).max()) > cap:
            if pairs is None:
                pairs = _unique_pairs(
                    pieces.index_select(0, atoms.src), pieces.index_select(0, atoms.dst), num_pieces
                )
            group = enforce_budget(
                area,
                piece_image,
                piece_features,
                *pairs,
                cap,
                generator=generator,
                random=sample_budget,
            )
            kept = group == torch.arange(num_pieces, device=group.device)
            region_of_atom = (
                (torch.cumsum(kept, 0) - 1).index_select(0, group).index_select(0, pieces)
            )
        else:
            region_of_atom = pieces
        part = _partition_from_atoms(
            region_of_atom, tree.atom_of_pixel, atoms, batch, height, width
        )
        return part, tree, pieces

    def _absorb_thin(
        self, pieces: Tensor, atoms: RegionGraph, min_width: float
    ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Selected pieces thinner than `min_width` join their most similar thicker neighbour.

        The criterion never selects a thin region, but the per-pixel rule (compare="each") can
        take part of a coarser region and leave the rest of it, a strip, selected on its own.
        A piece joined by thin neighbours can come out thinner than `min_width` by the measure
        (pixels over the longer side), but its box is at least `min_width` on both sides.

        Returns:
            (pieces [A] of every atom after absorption, area [K], mean feature [K, d], the
             adjacent piece pairs (low [E], high [E]) when they were needed, else None).
        """
        num_pieces = int(pieces.max()) + 1
        area, piece_features = _piece_statistics(pieces, num_pieces, atoms)
        if min_width <= 0:
            return pieces, area, piece_features, None
        box = group_boxes(atoms.box, pieces, num_pieces)
        thin = area < min_width * (box[:, 2:] - box[:, :2]).amax(1).to(area.dtype)
        if not bool(thin.any()):
            return pieces, area, piece_features, None
        first, second = _unique_pairs(
            pieces.index_select(0, atoms.src), pieces.index_select(0, atoms.dst), num_pieces
        )
        group = absorb_regions(~thin, piece_features, first, second)
        kept = group == torch.arange(num_pieces, device=group.device)
        new_id = (torch.cumsum(kept, 0) - 1).index_select(0, group)
        size = int(kept.sum())
        new_area = area.new_zeros(size).index_add(0, new_id, area)
        new_features = (
            piece_features.new_zeros(size, piece_features.shape[1]).index_add(
                0, new_id, area[:, None] * piece_features
            )
            / new_area[:, None]
        )
        pairs = _unique_pairs(new_id.index_select(0, first), new_id.index_select(0, second), size)
        return new_id.index_select(0, pieces), new_area, new_features, pairs

    # ---------------------------------------------------------------------------- public API
    def forward(
        self,
        images: Tensor,
        *,
        budget: int | str | None = AUTO,
        criterion: str | None = None,
        generator: torch.Generator | None = None,
        sample_budget: bool | None = None,
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

        Returns:
            DHTResult.
        """
        cap, criterion = self._check(images, budget, criterion)
        sample = self.training if sample_budget is None else sample_budget
        results = [
            self._tokenize(chunk, cap, criterion, generator, sample) for chunk in _chunks(images)
        ]
        return results[0] if len(results) == 1 else _concatenate_results(results)

    def _tokenize(
        self,
        images: Tensor,
        cap: int | None,
        criterion: str,
        generator: torch.Generator | None,
        sample_budget: bool,
    ) -> DHTResult:
        """`forward` on one chunk of the batch (checked arguments)."""
        features = self._features(images)
        part, tree, pieces = self._partition(
            images.detach(), features.detach(), cap, criterion, generator, sample_budget
        )
        log_weight = self._log_weights(features, tree).index_select(0, tree.atom_of_pixel)
        shape = part.labels.shape
        levels = tuple(
            level.index_select(0, tree.atom_of_pixel).view(shape) for level in tree.levels
        )
        selection = pieces.index_select(0, tree.atom_of_pixel).view(shape)
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
        correction = region_colors - part.region_mean(images)
        pixels = images + part.scatter(correction)
        return DHTResult(
            partition=part,
            pixels=pixels,
            features=features,
            region_features=region_features,
            region_colors=region_colors,
            levels=levels,
            selection=selection,
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
    ) -> Partition:
        """Only the Partition (no injection, no gradient): the fast path of `dht_partition`.

        Args and budget contract as in `forward`.
        """
        cap, criterion = self._check(images, budget, criterion)
        sample = self.training if sample_budget is None else sample_budget
        parts = [
            self._partition(chunk, self._features(chunk), cap, criterion, generator, sample)[0]
            for chunk in _chunks(images)
        ]
        return parts[0] if len(parts) == 1 else _concatenate(parts)
