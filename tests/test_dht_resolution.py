"""dHT at a working resolution below full size: the hierarchy runs on resampled images and the
regions are lifted back, so every invariant of a partition holds at full size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import adaptok
from adaptok import AdaptokError, Partition
from adaptok.graph import label_components
from adaptok.partitioners.dht import derive_options, load_default_tokenizer
from adaptok.partitioners.dht.tokenizer import working_size
from adaptok.regions import check_partition, lift
from conftest import assert_gradients_reach
from test_dht import canonical, smooth_images


@pytest.mark.parametrize("size", [(17, 20), (21, 27), (14, 36)])  # unequal and equal blocks
def test_lift_is_nearest_block_upsampling_and_keeps_regions_connected(size) -> None:
    generator = torch.Generator().manual_seed(0)
    small = torch.randint(0, 5, (2, 7, 9), generator=generator)
    lifted = lift(small, *size)
    for y in range(size[0]):  # the oracle: each pixel reads the working pixel it falls in
        for x in range(size[1]):
            assert torch.equal(lifted[:, y, x], small[:, y * 7 // size[0], x * 9 // size[1]])
    # Regions of the small map stay regions (4-connected pieces, same ids, same order).
    pieces = label_components(small)
    check_partition(Partition.from_labels(lift(pieces, 17, 20), relabel=False))
    assert torch.equal(canonical(lift(pieces, 17, 20)), lift(pieces, 17, 20))
    assert torch.equal(lift(small, 7, 9), small)


@pytest.mark.parametrize("resolution", [0.5, 0.37])
def test_a_partition_at_a_resolution_is_the_lifted_partition_of_the_smaller_image(
    resolution: float,
) -> None:
    """Images that reach the cap at the working size get its regions lifted; the others (a
    flat image here) are partitioned at full size."""
    images = torch.cat([smooth_images(3, 48, 40, seed=11), torch.full((1, 3, 48, 40), 0.4)])
    model = load_default_tokenizer().eval()
    part = model.partition(images, budget=12, resolution=resolution)
    size = working_size(48, 40, resolution)
    small = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    for index in range(4):
        low = model.partition(small[index : index + 1], budget=12)
        if int(low.counts[0]) == 12:
            expected = lift(low.labels, 48, 40)
        else:
            expected = model.partition(images[index : index + 1], budget=12).labels
        assert torch.equal(canonical(part.select([index]).labels), canonical(expected)), index
    assert part.counts.tolist()[3] == 1  # the flat image fell back (one region either way)
    check_partition(part)
    assert part.labels.shape == (4, 48, 40) and int(part.counts.max()) <= 12
    assert int(label_components(part.labels).max()) + 1 == part.num_regions  # 4-connected
    # The module's forward gives the same regions and full-size pixels and maps.
    result = model(images, budget=12, resolution=resolution)
    assert torch.equal(result.partition.labels, part.labels)
    check_partition(result.partition)  # boxes, areas and images carried over, not recomputed
    assert result.pixels.shape == images.shape
    assert result.features.shape[-2:] == (48, 40)  # some fell back: all lifted to full size
    # Every region keeps its row of region colours: the injected pixels rebuild from them.
    rebuilt = images + result.partition.scatter(
        result.region_colors - result.partition.region_mean(images)
    )
    torch.testing.assert_close(result.pixels, rebuilt)
    assert result.region_features.shape[0] == result.partition.num_regions
    assert all(level.shape == (4, 48, 40) for level in result.levels)
    assert result.selection.shape == (4, 48, 40)
    check_partition(Partition.from_labels(result.selection, relabel=False))
    # Without a fallback the features stay at the working size.
    kept = model(images[:1], budget=3, resolution=resolution)
    assert kept.features.shape[-2:] == size


def test_working_resolution_is_batch_independent_deterministic_and_trainable() -> None:
    images = smooth_images(3, 40, 36, seed=12)
    model = load_default_tokenizer().train()
    together = model(images, budget=10, resolution=0.5, sample_budget=False)
    again = model(images, budget=10, resolution=0.5, sample_budget=False)
    assert torch.equal(together.partition.labels, again.partition.labels)
    for index in range(3):
        alone = model(images[index : index + 1], budget=10, resolution=0.5, sample_budget=False)
        assert torch.equal(
            together.partition.select([index]).labels, canonical(alone.partition.labels)
        )
    # Gradients reach the encoder, the self-edge and the injection through the lifted regions.
    (together.pixels * torch.linspace(-1, 1, 36)).sum().backward()
    assert_gradients_reach(model.inject, model.self_edge)
    assert any(bool(p.grad.abs().sum() > 0) for p in model.encoder.parameters())


def test_full_resolution_is_the_default_and_unchanged() -> None:
    images = smooth_images(2, 32, 32, seed=13)
    model = load_default_tokenizer().eval()
    assert torch.equal(
        model.partition(images, budget=9).labels,
        model.partition(images, budget=9, resolution=1.0).labels,
    )
    assert torch.equal(
        adaptok.partition(images, "dht", budget=9).labels,
        adaptok.partition(images, "dht", budget=9, resolution=1).labels,
    )


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), True, "half"])
def test_resolution_outside_the_unit_interval_is_refused(bad: object) -> None:
    images = smooth_images(1, 32, 32)
    with pytest.raises(AdaptokError, match="resolution must be"):
        adaptok.partition(images, "dht", budget=9, resolution=bad)


def test_a_working_size_under_two_pixels_is_refused_with_the_fix() -> None:
    with pytest.raises(AdaptokError, match="raise resolution"):
        adaptok.partition(smooth_images(1, 8, 8), "dht", resolution=0.1)


def test_a_vits_dht_works_at_eight_pixels_per_patch_side_or_two_per_cell() -> None:
    assert derive_options(224, 16, {})["resolution"] == 0.5
    assert derive_options(64, 8, {})["resolution"] == 1.0
    assert derive_options(224, 32, {})["resolution"] == 0.25
    assert derive_options(224, 16, {"resolution": 1.0})["resolution"] == 1.0  # the user's wins
    assert "min_width" not in derive_options(224, 16, {})  # the tokenizer's own
    aligned = derive_options(224, 16, {"cell": 16})
    assert (aligned["resolution"], aligned["min_width"]) == (0.125, 0.0)
    assert derive_options(224, 14, {"cell": 14})["resolution"] == 1 / 7  # 32 x 32 working pixels
    assert derive_options(224, 16, {"cell": 16, "min_width": 1})["min_width"] == 1
    dense = adaptok.retrofit(_tiny_vit(), "dht", task="dense")  # pixel-precise regions
    assert dense.tokenizer.call_options["resolution"] == 0.5
    assert "min_width" not in dense.tokenizer.call_options
    vit = adaptok.retrofit(_tiny_vit(), "dht")  # classification: whole patches
    assert vit.tokenizer.call_options["resolution"] == 0.125
    assert vit.tokenizer.call_options["min_width"] == 0.0
    logits = vit(smooth_images(2, 64, 64, seed=14))
    assert logits.shape == (2, 10)
    unaligned = adaptok.retrofit(_tiny_vit(), "dht", partition_options={"cell": None})
    assert unaligned.tokenizer.call_options["resolution"] == 0.5
    with pytest.raises(AdaptokError, match="resolution must be"):
        adaptok.retrofit(_tiny_vit(), "dht", partition_options={"resolution": 2.0})


def _tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=10, depth=1
    ).eval()


def test_configs_stored_before_the_working_resolution_keep_the_full_size() -> None:
    from adaptok.models import ModelConfig

    fresh = ModelConfig(method="dht", image_size=64, patch_size=16)
    assert fresh.partition_options["resolution"] == 0.5
    stored = {**fresh.to_dict(), "partition_options": {"budget": 8}}  # a 0.2-era checkpoint
    assert ModelConfig.from_dict(stored).partition_options == {"budget": 8, "resolution": 1.0}
    assert ModelConfig.from_dict(fresh.to_dict()) == fresh
    # Aligned before whole-cell regions derived min_width 0: the tokenizer's own min_width.
    aligned = ModelConfig(method="dht", image_size=64, patch_size=8, partition_options={"cell": 8})
    assert aligned.partition_options["min_width"] == 0.0
    stored = {**aligned.to_dict(), "partition_options": {"budget": 32, "cell": 8, "resolution": 1}}
    assert ModelConfig.from_dict(stored).partition_options["min_width"] is None


@pytest.mark.cuda
def test_the_working_resolution_and_its_fallback_on_cuda() -> None:
    """A mixed batch (one flat image falls back) on the GPU: a valid partition within the cap,
    every region keeping its row of region colours, the same counts as on the CPU."""
    images = torch.cat([smooth_images(3, 48, 40, seed=11), torch.full((1, 3, 48, 40), 0.4)])
    model = load_default_tokenizer().eval()
    cpu = model.partition(images, budget=12, resolution=0.5)
    model = model.cuda()
    result = model(images.cuda(), budget=12, resolution=0.5)
    check_partition(result.partition)
    assert result.partition.counts.tolist() == cpu.counts.tolist()
    rebuilt = images.cuda() + result.partition.scatter(
        result.region_colors - result.partition.region_mean(images.cuda())
    )
    torch.testing.assert_close(result.pixels, rebuilt)
