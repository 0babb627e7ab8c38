"""The differentiable hierarchical tokenizer (∂HT): pixels -> hierarchy -> IC selection -> tokens.

Pipeline (DESIGN.md section 4): pixel encoder -> merge levels (Gaussian kernel, learned
self-edge, optional compactness) -> selection by information criterion up the hierarchy (per
pixel, the best IC along its path: compare="each"; or optimal pruning: compare="total") ->
relabel into 4-connected regions -> token budget -> mean injection.
The partition is discrete; gradients reach the encoder, the self-edge projection and the
injection map through the similarity-weighted region features used by the mean injection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import AdaptokError, check_images
from ...graph import connected_components
from ...regions import Partition
from .budget import enforce_budget
from .criteria import check_criterion, information_criterion
from .encoder import ImageGradient, PixelEncoder
from .merge import RegionGraph, link_vertices, pixel_graph, pool_vertices

__all__ = ["DHTResult", "DHTTokenizer", "check_budget", "default_budget"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SPACES = ("unit", "imagenet")
POOLINGS = ("exact", "similarity")
COMPARES = ("total", "each")
MIN_SIZE = 2


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
        gradient: [B, 2, H, W] squashed image gradient (d/dy, d/dx), or None when the tokenizer
            was built with gradient=False.
    """

    partition: Partition
    pixels: Tensor
    features: Tensor
    region_features: Tensor
    region_colors: Tensor
    levels: tuple[Tensor, ...]
    selection: Tensor
    gradient: Tensor | None = None


@dataclass(frozen=True)
class _Hierarchy:
    """Internal: the merge levels and the selection, tracked per level-1 region ("atom").

    Attributes:
        atom_of_pixel: [P] int64 atom of every pixel (P = B*H*W).
        pixel_log_weight: [P] log link confidence of every pixel at level 0 -> 1.
        atoms: the level-1 RegionGraph (A vertices).
        selected: [A] int64 selection key (equal keys = the same selected region).
        selected_log_weight: [A] log similarity weight of each atom in its selected region.
        levels: one [A] int64 vertex map per level (level 1 first).
    """

    atom_of_pixel: Tensor
    pixel_log_weight: Tensor
    atoms: RegionGraph
    selected: Tensor
    selected_log_weight: Tensor
    levels: tuple[Tensor, ...]


def _unique_pairs(first: Tensor, second: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Distinct unordered pairs (low < high) among the given pairs, dropping equal ends."""
    differ = first != second
    low = torch.minimum(first, second)[differ]
    high = torch.maximum(first, second)[differ]
    keys = torch.unique(low * size + high)
    return keys // size, keys % size


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
    index = region_of_atom[:, None].expand(-1, 2)
    low = atoms.box.new_full((num_regions, 2), max(height, width)).scatter_reduce(
        0, index, atoms.box[:, :2], reduce="amin"
    )
    high = atoms.box.new_zeros(num_regions, 2).scatter_reduce(
        0, index, atoms.box[:, 2:], reduce="amax"
    )
    batch_index = atoms.image.new_zeros(num_regions).scatter_(0, region_of_atom, atoms.image)
    labels = region_of_atom[atom_of_pixel].view(batch, height, width)
    return Partition(
        labels=labels, batch_index=batch_index, box=torch.cat([low, high], 1), area=area
    )


def default_budget(height: int, width: int, coefficient: float = 0.56) -> int:
    """The default token target round(sqrt(H*W) / 0.56) per image."""
    return max(1, round(math.sqrt(height * width) / coefficient))


def check_budget(budget: object) -> int | None:
    """Validate a token budget: None (the default target) or an int >= 1."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise AdaptokError(
            f"budget must be a positive int or None (default round(sqrt(H*W)/0.56)), "
            f"got {budget!r} of type {type(budget).__name__}; pass int(budget)"
        )
    if budget < 1:
        raise AdaptokError(f"budget must be at least 1 region per image, got {budget}")
    return budget


class DHTTokenizer(nn.Module):
    """Differentiable hierarchical tokenizer.

    Args:
        in_channels: C, image channels.
        features: d, pixel feature channels.
        hidden: width of the encoder's coarse branch.
        criterion: default information criterion ("aicc", "aic", "bic", "cic").
        iota: ι of the information criterion (larger -> larger regions in flat areas).
        compactness: blend weight of the compactness term in edge values (0 disables it).
        min_regions: an image stops merging once it has this many regions or fewer.
        pooling: "exact" (count-weighted) or "similarity" (link-confidence-weighted) statistics
            for the merge levels.
        compare: how a coarser region replaces the finer selection inside it: "total" when its
            IC is at least the sum of their ICs (optimal pruning of the hierarchy for an additive
            criterion: flat areas become one region), "each" per pixel when its IC is at least
            that of the pixel's current region (the reference code's rule).
        gradient: also compute image-gradient channels (returned in the result for extractors).
        input_space: "unit" for images in [0, 1], "imagenet" for ImageNet-normalised images; the
            encoder always sees ImageNet-normalised pixels and the injected pixels come back in
            the input's space.
        target_coefficient: default budget is round(sqrt(H*W) / target_coefficient).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        features: int = 8,
        hidden: int = 16,
        criterion: str = "aicc",
        iota: float = 5.0,
        compactness: float = 0.0,
        min_regions: int = 6,
        pooling: str = "exact",
        compare: str = "each",
        gradient: bool = False,
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
        self.in_channels = in_channels
        self.num_features = features
        self.criterion = criterion
        self.iota = float(iota)
        self.compactness = float(compactness)
        self.min_regions = int(min_regions)
        self.pooling = pooling
        self.compare = compare
        self.input_space = input_space
        self.target_coefficient = float(target_coefficient)
        self.encoder = PixelEncoder(in_channels=in_channels, features=features, hidden=hidden)
        self.gradient = ImageGradient() if gradient else None
        # Self-edge: sigmoid(variance · w + b); b = -2π makes a fresh tokenizer link nearly always.
        self.self_edge = nn.Linear(features, 1)
        nn.init.normal_(self.self_edge.weight, std=1e-2)
        nn.init.constant_(self.self_edge.bias, -2 * math.pi)
        # Injection W: features -> normalised image channels; trained (scripts/pretrain_dht.py)
        # so that W·f̄_S matches the region's mean colour, which makes the injection an identity.
        self.inject = nn.Linear(features, in_channels)
        mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
        std = IMAGENET_STD if in_channels == 3 else (0.25,) * in_channels
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this tokenizer (saved with the weights)."""
        return {
            "in_channels": self.in_channels,
            "features": self.num_features,
            "hidden": self.encoder.down1.out_channels,
            "criterion": self.criterion,
            "iota": self.iota,
            "compactness": self.compactness,
            "min_regions": self.min_regions,
            "pooling": self.pooling,
            "compare": self.compare,
            "gradient": self.gradient is not None,
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
        if images.shape[1] != self.in_channels:
            raise AdaptokError(
                f"this tokenizer takes {self.in_channels}-channel images, got "
                f"{images.shape[1]} channels (shape {tuple(images.shape)})"
            )
        criterion = self.criterion if criterion is None else check_criterion(criterion)
        return check_budget(budget), criterion

    # ------------------------------------------------------------------------------ algorithm
    def _hierarchy(self, features: Tensor, criterion: str) -> _Hierarchy:
        """Merge levels and the information-criterion selection.

        After level 1 every pixel's history is that of its level-1 region (its "atom"), so the
        selection is tracked per atom, not per pixel: a few times fewer elements per level.
        """
        batch, _, height, width = features.shape
        pixels_per_image = height * width
        graph = pixel_graph(features)
        max_levels = math.ceil(math.log2(math.sqrt(pixels_per_image)))
        if max_levels < 1 or pixels_per_image <= self.min_regions:
            index = torch.arange(graph.num_vertices, device=features.device)
            zeros = features.new_zeros(graph.num_vertices)
            return _Hierarchy(index, zeros, graph, index, zeros, (index,))

        def ic_of(level_graph: RegionGraph) -> Tensor:
            return information_criterion(
                level_graph.variance.detach(),
                level_graph.count,
                pixels_per_image,
                criterion=criterion,
                iota=self.iota,
            )

        def self_edge_of(level_graph: RegionGraph) -> Tensor:
            return torch.sigmoid(self.self_edge(level_graph.variance)).squeeze(-1)

        links = link_vertices(graph, self_edge_of(graph), compactness=self.compactness)
        atoms = pool_vertices(graph, links, pooling=self.pooling)
        num_atoms = atoms.num_vertices
        vertex = torch.arange(num_atoms, device=features.device)
        # Level 1 beats the single pixels (their IC is -inf), so every atom starts selected.
        best_ic = ic_of(atoms)
        total = best_ic  # per current vertex: summed IC of the selection inside it
        selected = num_atoms + vertex
        log_weight = features.new_zeros(num_atoms)
        selected_log_weight = log_weight
        count_before = atoms.count
        active = torch.ones(batch, dtype=torch.bool, device=features.device)
        levels = [vertex]
        graph = atoms
        for level in range(2, max_levels + 1):
            regions = torch.bincount(graph.image, minlength=batch)
            active = active & (regions > self.min_regions)
            if not bool(active.any()):
                break
            step = link_vertices(graph, self_edge_of(graph), compactness=self.compactness)
            graph = pool_vertices(graph, step, pooling=self.pooling, boxes=self.compactness > 0)
            log_weight = log_weight + torch.log(step.confidence)[vertex]
            vertex = step.parent[vertex]
            levels.append(vertex)
            ic = ic_of(graph)
            if self.compare == "total":
                # Optimal pruning of the tree: a region replaces the selection inside it when
                # its IC is at least the sum of the selected regions' ICs.
                inside = ic.new_zeros(graph.num_vertices).index_add(0, step.parent, total)
                grew = torch.bincount(step.parent, minlength=graph.num_vertices) > 1
                choose = active[graph.image] & (ic >= inside)
                total = torch.where(choose, ic, inside)
                better = choose[vertex]
                improved = (choose & grew)[vertex]
            else:
                # The reference rule: per pixel, the best IC seen along its path.
                atom_ic = ic[vertex]
                count = graph.count[vertex]
                better = active[atoms.image] & (atom_ic >= best_ic)
                improved = better & (atom_ic > best_ic) & (count > count_before)
                count_before = count
                best_ic = torch.where(better, atom_ic, best_ic)
            selected = torch.where(better, level * num_atoms + vertex, selected)
            selected_log_weight = torch.where(better, log_weight, selected_log_weight)
            active = active & (torch.bincount(atoms.image[improved], minlength=batch) > 0)
        return _Hierarchy(
            atom_of_pixel=links.parent,
            pixel_log_weight=torch.log(links.confidence),
            atoms=atoms,
            selected=selected,
            selected_log_weight=selected_log_weight,
            levels=tuple(levels),
        )

    def _partition(
        self,
        images: Tensor,
        budget: int | None,
        criterion: str,
        generator: torch.Generator | None,
        sample_budget: bool,
    ) -> tuple[Tensor, Partition, _Hierarchy, Tensor, Tensor | None]:
        """Encoder, hierarchy, selection, relabelling and budget.

        Returns:
            (features [B, d, H, W], partition, hierarchy, pieces [A] selection piece of every
             atom, gradient channels or None).
        """
        batch, _, height, width = images.shape
        normalised = self._normalise(images)
        features = self.encoder(normalised)
        gradient = self.gradient(normalised) if self.gradient is not None else None
        tree = self._hierarchy(features, criterion)
        atoms = tree.atoms
        # Relabel into 4-connected pieces: atoms are connected, so pieces are the components of
        # the atom graph restricted to edges whose ends were selected into the same region.
        same = tree.selected[atoms.src] == tree.selected[atoms.dst]
        pieces = connected_components(atoms.num_vertices, atoms.src[same], atoms.dst[same])
        num_pieces = int(pieces.max()) + 1
        area = atoms.count.new_zeros(num_pieces).index_add(0, pieces, atoms.count)
        piece_image = atoms.image.new_zeros(num_pieces).scatter_(0, pieces, atoms.image)
        mean = atoms.mean.detach()
        piece_features = (
            mean.new_zeros(num_pieces, mean.shape[1]).index_add(
                0, pieces, atoms.count[:, None] * mean
            )
            / area[:, None]
        )
        target = (
            default_budget(height, width, self.target_coefficient) if budget is None else budget
        )
        if int(torch.bincount(piece_image, minlength=batch).max()) > target:
            low, high = _unique_pairs(pieces[atoms.src], pieces[atoms.dst], num_pieces)
            group = enforce_budget(
                area,
                piece_image,
                piece_features,
                low,
                high,
                target,
                generator=generator,
                random=sample_budget,
            )
        else:
            group = torch.arange(num_pieces, device=pieces.device)
        kept = group == torch.arange(num_pieces, device=group.device)
        region_of_atom = (torch.cumsum(kept, 0) - 1)[group][pieces]
        part = _partition_from_atoms(
            region_of_atom, tree.atom_of_pixel, atoms, batch, height, width
        )
        return features, part, tree, pieces, gradient

    # ---------------------------------------------------------------------------- public API
    def forward(
        self,
        images: Tensor,
        *,
        budget: int | None = None,
        criterion: str | None = None,
        generator: torch.Generator | None = None,
        sample_budget: bool | None = None,
    ) -> DHTResult:
        """Tokenize a batch.

        Args:
            images: [B, C, H, W] float images (in [0, 1], or ImageNet-normalised when the
                tokenizer's input_space is "imagenet"), H and W >= 2, any size.
            budget: regions allowed per image, an upper bound: each image gets
                min(regions found, budget). None uses round(sqrt(H*W) / 0.56).
            criterion: information criterion overriding the tokenizer's default.
            generator: random source of the budget sampling (ignored when not sampling).
            sample_budget: choose the regions kept under the budget by sampling ∝ 1/sqrt(area)
                (the paper's training rule) instead of the deterministic merge-cost rule; None
                samples in training mode only.

        Returns:
            DHTResult.
        """
        budget, criterion = self._check(images, budget, criterion)
        sample = self.training if sample_budget is None else sample_budget
        features, part, tree, pieces, gradient = self._partition(
            images, budget, criterion, generator, sample
        )
        log_weight = tree.pixel_log_weight + tree.selected_log_weight[tree.atom_of_pixel]
        shape = part.labels.shape
        levels = tuple(level[tree.atom_of_pixel].view(shape) for level in tree.levels)
        selection = pieces[tree.atom_of_pixel].view(shape)
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
            gradient=gradient,
        )

    @torch.no_grad()
    def partition(
        self,
        images: Tensor,
        *,
        budget: int | None = None,
        criterion: str | None = None,
        generator: torch.Generator | None = None,
        sample_budget: bool | None = None,
    ) -> Partition:
        """Only the Partition (no injection, no gradient): the fast path of `dht_partition`."""
        budget, criterion = self._check(images, budget, criterion)
        sample = self.training if sample_budget is None else sample_budget
        return self._partition(images, budget, criterion, generator, sample)[1]
