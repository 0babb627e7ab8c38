"""From the dHT merge tree to the Partition: the selected regions relabelled into 4-connected
pieces, thin pieces absorbed into their most similar neighbour, the budget cap, and the
Partition's areas and boxes summed from the atoms, not from the pixels (docs/design.md, "dHT",
steps 5 and 6). All discrete: run without gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...graph import connected_components
from ...regions import Partition, align_to_cells
from .budget import absorb_regions, compact_groups, enforce_budget, region_adjacency
from .hierarchy import Hierarchy, is_thin
from .merge import RegionGraph, group_boxes, pairs_between, sum_columns

__all__ = [
    "ALIGN_PURITY",
    "absorb_thin",
    "align_partition",
    "partition_from_atoms",
    "piece_statistics",
    "select_partition",
]

# A cell joins the region covering at least this share of it (`align_to_cells`): 1, a cell joins
# a region only when it lies wholly inside it. Chosen on held-out images
# (benchmarks/results/align_probe.md: the last 1,000 training images of Fashion-MNIST 64 and
# cluttered Fashion-MNIST 128, the grid parents of the accuracy benchmark, cap 31): 1.0 kept
# 72.2 / 39.6% of the parents' 80.4 / 40.2% (the quadtree at 31 tokens 72.4 / 30.5%), 0.9 kept
# 73.1 / 38.0%, 0.75 72.6 / 35.3%, 0.5 71.5 / 28.5%; the highest mean over the two.
ALIGN_PURITY = 1.0


def select_partition(
    tree: Hierarchy,
    cap: int | None,
    *,
    min_width: float,
    generator: torch.Generator | None,
    sample_budget: bool,
) -> tuple[Partition, Tensor]:
    """The Partition a hierarchy selects, cut down to `cap` regions per image.

    Args:
        tree: the hierarchy (`build_hierarchy`).
        cap: regions allowed per image, or None for no cap.
        min_width: selected pieces thinner than this join a neighbour (`absorb_thin`).
        generator: random source of the budget sampling.
        sample_budget: choose the kept regions by sampling instead of by merge cost.

    Returns:
        (partition, pieces [A] selection piece of every atom, before the budget).
    """
    batch, height, width = tree.grid
    atoms = tree.atoms
    # Relabel into 4-connected pieces: atoms are connected, so pieces are the components of
    # the atom graph restricted to edges whose ends were selected into the same region.
    same = tree.selected.index_select(0, atoms.src) == tree.selected.index_select(0, atoms.dst)
    same = torch.nonzero(same).flatten()
    pieces = connected_components(
        atoms.num_vertices, atoms.src.index_select(0, same), atoms.dst.index_select(0, same)
    )
    pieces, area, piece_features, pairs = absorb_thin(pieces, atoms, min(min_width, height, width))
    num_pieces = area.shape[0]
    piece_image = atoms.image.new_zeros(num_pieces).scatter_(0, pieces, atoms.image)
    if cap is not None and int(torch.bincount(piece_image, minlength=batch).max()) > cap:
        if pairs is None:
            pairs = pairs_between(
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
        region_of_atom = compact_groups(group).index_select(0, pieces)
    else:
        region_of_atom = pieces
    part = partition_from_atoms(region_of_atom, tree.atom_of_pixel, atoms, batch, height, width)
    return part, pieces


def piece_statistics(pieces: Tensor, num_pieces: int, atoms: RegionGraph) -> tuple[Tensor, Tensor]:
    """([K] pixel count, [K, d] mean feature) of pieces made of atoms (no gradient)."""
    columns = torch.cat([atoms.count[None], atoms.mean.detach().t() * atoms.count])
    sums = sum_columns(columns, pieces, num_pieces)
    area = sums[:, 0]
    return area, sums[:, 1:] / area[:, None]


def absorb_thin(
    pieces: Tensor, atoms: RegionGraph, min_width: float
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
    area, piece_features = piece_statistics(pieces, num_pieces, atoms)
    if min_width <= 0:
        return pieces, area, piece_features, None
    thin = is_thin(area, group_boxes(atoms.box, pieces, num_pieces), min_width)
    if not bool(thin.any()):
        return pieces, area, piece_features, None
    first, second = pairs_between(
        pieces.index_select(0, atoms.src), pieces.index_select(0, atoms.dst), num_pieces
    )
    group = absorb_regions(~thin, piece_features, first, second)
    new_id = compact_groups(group)
    size = int(new_id.max()) + 1
    new_area = area.new_zeros(size).index_add(0, new_id, area)
    new_features = (
        piece_features.new_zeros(size, piece_features.shape[1]).index_add(
            0, new_id, area[:, None] * piece_features
        )
        / new_area[:, None]
    )
    pairs = pairs_between(new_id.index_select(0, first), new_id.index_select(0, second), size)
    return new_id.index_select(0, pieces), new_area, new_features, pairs


def partition_from_atoms(
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


def align_partition(
    part: Partition,
    features: Tensor,
    cell: int,
    cap: int | None,
    *,
    generator: torch.Generator | None,
    sample_budget: bool,
) -> Partition:
    """The Partition made of whole cell x cell blocks (`align_to_cells` at ALIGN_PURITY: a ViT's
    patches), cut down to `cap` regions per image by the budget rule (`enforce_budget`: blocks
    that boundaries run through, each a region of its own, are what it merges first).

    Args:
        part: the selected Partition.
        features: [B, d, H, W] pixel features (the similarity the budget rule reads).
        cell: block side in pixels.
        cap: regions allowed per image, or None for no cap.
        generator, sample_budget: the budget rule's sampling, as in `select_partition`.
    """
    labels = align_to_cells(part.labels, cell, ALIGN_PURITY)
    aligned = Partition.from_labels(labels, relabel=False)
    if cap is None or int(aligned.counts.max()) <= cap:
        return aligned
    group = enforce_budget(
        aligned.area.to(features.dtype),
        aligned.batch_index,
        aligned.region_mean(features),
        *region_adjacency(labels),
        cap,
        generator=generator,
        random=sample_budget,
    )
    new_id = compact_groups(group).index_select(0, labels.flatten())
    return Partition.from_labels(new_id.view(labels.shape), relabel=False)
