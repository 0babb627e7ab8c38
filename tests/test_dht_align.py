"""dHT regions aligned to a ViT's patches: every region a union of whole cells, boundary cells on
their own, the cap met, and the retrofit default that turns it on."""

from __future__ import annotations

import pytest
import torch

from adaptok import AdaptokError, retrofit
from adaptok.graph import label_components
from adaptok.partitioners.dht import load_default_tokenizer
from adaptok.partitioners.dht.tokenizer import check_cell
from adaptok.regions import Partition, align_to_cells, check_partition
from conftest import assert_gradients_reach, random_vit
from test_dht import canonical, smooth_images


def per_block_oracle(labels: torch.Tensor, cell: int, purity: float) -> torch.Tensor:
    """`align_to_cells` block by block: the largest region (lowest id on ties) takes a block it
    covers to `purity`, any other block is its own region; then 4-connected pieces."""
    batch, height, width = labels.shape
    out = torch.empty_like(labels)
    own = int(labels.max()) + 1
    for b in range(batch):
        for y in range(0, height, cell):
            for x in range(0, width, cell):
                block = labels[b, y : y + cell, x : x + cell]
                values, counts = torch.unique(block, return_counts=True)
                top = counts.max()
                region = values[counts == top].min()
                out[b, y : y + cell, x : x + cell] = (
                    region if top >= purity * block.numel() else own
                )
                own += 1
    return label_components(out)


def is_made_of_cells(labels: torch.Tensor, cell: int) -> bool:
    height, width = labels.shape[-2:]
    rows = torch.arange(height) // cell * cell
    columns = torch.arange(width) // cell * cell
    return bool((labels == labels[:, rows][:, :, columns]).all())


@pytest.mark.parametrize("cell,purity", [(4, 0.5), (4, 1.0), (3, 0.75), (5, 0.9)])
def test_align_to_cells_equals_the_per_block_oracle(cell: int, purity: float) -> None:
    generator = torch.Generator().manual_seed(cell)
    labels = label_components(torch.randint(0, 3, (2, 13, 18), generator=generator))
    aligned = align_to_cells(labels, cell, purity)
    assert torch.equal(aligned, per_block_oracle(labels, cell, purity))
    assert is_made_of_cells(aligned, cell)  # edge blocks of 13 and 18 pixels are smaller
    check_partition(Partition.from_labels(aligned, relabel=False))


def test_align_to_cells_refuses_bad_arguments() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(AdaptokError, match="purity"):
        align_to_cells(labels, 4, 0.0)
    with pytest.raises(AdaptokError, match="cell"):
        align_to_cells(labels, 0, 0.5)


@pytest.mark.parametrize("resolution", [1.0, 0.5])
def test_aligned_dht_regions_are_whole_cells_under_the_cap(resolution: float) -> None:
    images = smooth_images(3, 48, 40, seed=11)
    model = load_default_tokenizer().eval()
    part = model.partition(images, budget=12, resolution=resolution, cell=8)
    check_partition(part)  # 4-connected, fields consistent
    assert is_made_of_cells(part.labels, 8)
    assert int(part.counts.max()) <= 12
    result = model(images, budget=12, resolution=resolution, cell=8)
    assert torch.equal(result.partition.labels, part.labels)
    assert result.region_colors.shape[0] == part.num_regions
    # Batch independence and determinism: each image alone gives its regions in the batch.
    for index in range(3):
        alone = model.partition(images[index : index + 1], budget=12, resolution=resolution, cell=8)
        assert torch.equal(canonical(alone.labels), canonical(part.select([index]).labels))


def test_aligned_images_short_of_the_cap_keep_their_working_size_regions() -> None:
    """With cells, the working size's aligned regions are kept even under the cap (no second
    pass at full size): the partition is the lifted one of the half-size images."""
    import torch.nn.functional as F

    images = torch.cat([smooth_images(2, 48, 40, seed=4), torch.full((1, 3, 48, 40), 0.4)])
    model = load_default_tokenizer().eval()
    part = model.partition(images, budget=30, resolution=0.5, cell=8)
    small = F.interpolate(images, size=(24, 20), mode="bilinear", antialias=True)
    low = model.partition(small, budget=30, cell=4)
    assert int(part.counts[:2].min()) < 30  # a textured image short of the cap: kept
    assert torch.equal(canonical(part.labels), canonical(low.lift(48, 40).labels))


def test_aligned_dht_keeps_gradients_to_the_tokenizer() -> None:
    model = load_default_tokenizer().train()
    images = smooth_images(2, 32, 32, seed=3)
    result = model(images, budget=6, cell=8, sample_budget=False)
    (result.pixels * torch.linspace(-1, 1, 32)).sum().backward()
    assert_gradients_reach(model.encoder.pointwise, model.self_edge, model.inject)


def test_check_cell_refuses_what_cannot_be_whole_cells() -> None:
    assert check_cell(None, 64, 64, 1.0) is None
    assert check_cell(16, 224, 224, 0.5) == 16
    for bad in (0, -2, 2.5, True):
        with pytest.raises(AdaptokError, match="positive int"):
            check_cell(bad, 64, 64, 1.0)
    with pytest.raises(AdaptokError, match="larger than"):
        check_cell(80, 64, 64, 1.0)
    with pytest.raises(AdaptokError, match="working pixels"):
        check_cell(3, 64, 64, 0.5)  # 1.5 working pixels


def test_retrofit_aligns_pooled_dht_to_the_vit_patches_unless_told_not_to() -> None:
    vit = random_vit(64, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    model = retrofit(vit, "dht").eval()
    assert model.tokenizer.call_options["cell"] == 8
    with torch.no_grad():
        output = model.forward_output(smooth_images(2, 64, 64, seed=5))
    assert is_made_of_cells(output.partition.labels, 8)
    assert (
        retrofit(vit, "dht", partition_options={"cell": None}).tokenizer.call_options["cell"]
        is None
    )
    assert "cell" not in retrofit(vit, "dht", embedder="patch").tokenizer.call_options
    # two working pixels per cell, min_width off (a cell is never a thin token)
    assert model.tokenizer.call_options["resolution"] == 0.25
    assert model.tokenizer.call_options["min_width"] == 0.0
    dense = retrofit(vit, "dht", task="dense", num_classes=3)  # boundaries stay pixel-precise
    assert "cell" not in dense.tokenizer.call_options
    with pytest.raises(AdaptokError, match="working pixels"):
        retrofit(vit, "dht", partition_options={"resolution": 0.3})
