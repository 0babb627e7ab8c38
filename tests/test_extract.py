"""Tests for the general box extractor (adaptok.extract)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import adaptok
from adaptok import AdaptokError, Partition
from adaptok.partitioners.grid import grid_partition
from adaptok.tokens import (
    boxes,
    extract_regions,
    extract_squares,
    extract_tokens,
    gradient_histogram,
    position_histogram,
)
from adaptok.tokens.boxes import box_taps
from conftest import random_partition


def rectangle_partition(batch: int, rows: list[int], cols: list[int]) -> Partition:
    """A tiling of each image by rectangles (cuts at the given row/column positions)."""
    height, width = rows[-1], cols[-1]
    row_id = torch.bucketize(torch.arange(height), torch.tensor(rows[1:-1]), right=True)
    col_id = torch.bucketize(torch.arange(width), torch.tensor(cols[1:-1]), right=True)
    cell = row_id[:, None] * (len(cols) - 1) + col_id[None, :]
    return Partition.from_labels(cell.expand(batch, height, width).clone())


def oracle_regions(
    images: Tensor, part: Partition, patch_size: int, samples: int
) -> tuple[Tensor, Tensor]:
    """Slow reference: one region at a time, crop the box, grid_sample with border clamping, and
    average the sub-samples of every cell."""
    patches, masks = [], []
    for region in range(part.num_regions):
        b = int(part.batch_index[region])
        y0, x0, y1, x1 = part.box[region].tolist()
        crop = images[b : b + 1, :, y0:y1, x0:x1]
        inside = (part.labels[b, y0:y1, x0:x1] == region).to(images.dtype)[None, None]
        height, width = y1 - y0, x1 - x0
        s_y = min(math.ceil(height / patch_size), samples)
        s_x = min(math.ceil(width / patch_size), samples)
        # Sample coordinates in pixel units (pixel centres on integers), then normalised for
        # align_corners=False; padding_mode="border" clamps them to the crop like the extractor.
        u = (torch.arange(patch_size * s_y, dtype=torch.float64) + 0.5) / s_y * height / patch_size
        v = (torch.arange(patch_size * s_x, dtype=torch.float64) + 0.5) / s_x * width / patch_size
        u = (u - 0.5).clamp(0, height - 1)
        v = (v - 0.5).clamp(0, width - 1)
        grid_y = (u + 0.5) / height * 2 - 1
        grid_x = (v + 0.5) / width * 2 - 1
        grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), -1)[None].to(images.dtype)
        sampled = F.grid_sample(
            crop, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        mask = F.grid_sample(
            inside, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        patches.append(F.avg_pool2d(sampled, (s_y, s_x))[0].flatten())
        masks.append(F.avg_pool2d(mask, (s_y, s_x))[0, 0].flatten())
    return torch.stack(patches), torch.stack(masks)


Tensor = torch.Tensor


# ------------------------------------------------------------------------------------ exactness
def test_grid_boxes_reproduce_pixels_exactly() -> None:
    images = torch.rand(2, 3, 48, 64)
    part = grid_partition(images, patch_size=16)
    tokens = extract_regions(images, part, patch_size=16)
    unfolded = F.unfold(images, 16, stride=16).transpose(1, 2)  # [B, T, C*P*P] channel-major
    assert torch.equal(tokens.patches, unfolded)
    assert torch.equal(tokens.mask, torch.ones_like(tokens.mask))
    assert bool(tokens.patch_valid.all())


def test_aligned_squares_equal_area_average() -> None:
    # Quadtree-like: aligned 64x64 and 32x32 squares among 16x16 ones. With `samples` bilinear
    # samples per cell, squares up to 2 * samples * P are exact area averages.
    part = Partition.from_labels(grid_labels_mixed())
    images = torch.rand(2, 3, 96, 96)
    reference = extract_squares(images, part, 16)
    for samples in (2, 4):
        tokens = extract_regions(images, part, patch_size=16, samples=samples)
        torch.testing.assert_close(tokens.patches[tokens.patch_valid], reference)
    one = extract_regions(images, part, patch_size=16, samples=1).patches[tokens.patch_valid]
    large = (part.box[:, 2] - part.box[:, 0]) > 16
    assert not torch.allclose(one[large], reference[large])  # one point sample is not an average


def grid_labels_mixed() -> Tensor:
    cells = torch.arange(36).view(6, 6).repeat_interleave(16, 0).repeat_interleave(16, 1)
    first = cells.clone()
    first[0:64, 0:64] = 100
    first[64:96, 64:96] = 200
    second = cells.clone()
    second[32:64, 32:64] = 100
    return torch.stack([first, second])


def test_matches_grid_sample_oracle_values_and_gradients() -> None:
    part = random_partition(2, 23, 31, classes=3, seed=0)
    images = torch.rand(2, 3, 23, 31, dtype=torch.float64, requires_grad=True)
    for patch_size, samples in ((4, 1), (4, 3), (8, 2)):
        tokens = extract_regions(images, part, patch_size=patch_size, samples=samples)
        want_patches, want_mask = oracle_regions(images, part, patch_size, samples)
        got_patches = tokens.patches[tokens.patch_valid]
        torch.testing.assert_close(got_patches, want_patches)
        torch.testing.assert_close(tokens.mask[tokens.patch_valid], want_mask)
        weights = torch.randn_like(want_patches)
        (grad_got,) = torch.autograd.grad((got_patches * weights).sum(), images)
        (grad_want,) = torch.autograd.grad((want_patches * weights).sum(), images)
        torch.testing.assert_close(grad_got, grad_want)


def test_long_boxes_match_the_oracle_with_two_taps_per_sample() -> None:
    # Boxes far longer than P * samples: each cell reads 2 * samples pixels, not the whole band
    # between its first and last sample.
    part = rectangle_partition(2, [0, 5, 61, 64], [0, 40, 43, 90])
    images = torch.rand(2, 3, 64, 90, dtype=torch.float64, requires_grad=True)
    tokens = extract_regions(images, part, patch_size=4, samples=2)
    want_patches, want_mask = oracle_regions(images, part, 4, 2)
    torch.testing.assert_close(tokens.patches[tokens.patch_valid], want_patches)
    torch.testing.assert_close(tokens.mask[tokens.patch_valid], want_mask)
    index, weight = box_taps(torch.tensor([3]), torch.tensor([1000]), 8, 2)
    assert index.shape == weight.shape == (1, 8, 4)
    assert int(index.min()) >= 3 and int(index.max()) <= 1002
    torch.testing.assert_close(weight.sum(-1), torch.ones(1, 8, dtype=torch.float64))


def test_runs_of_regions_match_one_gather(monkeypatch) -> None:
    part = random_partition(3, 29, 35, classes=4, seed=2)
    images = torch.rand(3, 3, 29, 35, requires_grad=True)
    weights = torch.randn(part.num_regions, 3 * 16)
    results = []
    for chunk_taps in (1 << 30, 100):  # one gather; one region per run
        monkeypatch.setattr(boxes, "CHUNK_TAPS", chunk_taps)
        tokens = extract_regions(images, part, patch_size=4, samples=2)
        patches = tokens.patches[tokens.patch_valid]
        (grad,) = torch.autograd.grad((patches * weights).sum(), images)
        results.append((patches, tokens.mask[tokens.patch_valid], grad))
    (patches, mask, grad), (run_patches, run_mask, run_grad) = results
    assert torch.equal(patches, run_patches) and torch.equal(mask, run_mask)
    torch.testing.assert_close(grad, run_grad)  # summed run by run: rounding may differ


# ---------------------------------------------------------------------------------------- masks
def test_mask_is_one_for_rectangles_that_fill_their_box() -> None:
    # Rectangles smaller and larger than P, with odd sizes.
    part = rectangle_partition(2, [0, 3, 11, 40], [0, 5, 30, 57])
    images = torch.rand(2, 3, 40, 57)
    tokens = extract_regions(images, part, patch_size=8, samples=3)
    assert torch.equal(tokens.mask[tokens.patch_valid], torch.ones(18, 64))


def test_mask_is_fractional_at_boundaries_of_irregular_regions() -> None:
    part = random_partition(1, 40, 40, classes=2, seed=3)
    images = torch.rand(1, 3, 40, 40)
    tokens = extract_regions(images, part, patch_size=4, samples=2)
    mask = tokens.mask[tokens.patch_valid]
    assert bool(((mask >= 0) & (mask <= 1)).all())
    fractional = (mask > 0.01) & (mask < 0.99)
    assert bool(fractional.any())
    # Regions that do not fill their box have cells that are not entirely theirs; regions that
    # fill it (rectangles) have a mask of exactly one.
    irregular = part.area < (part.box[:, 2] - part.box[:, 0]) * (part.box[:, 3] - part.box[:, 1])
    assert bool(irregular.any()) and bool((~irregular).any())
    assert bool((mask[irregular].amin(1) < 1).all())
    assert bool((mask[~irregular] == 1).all())


# ------------------------------------------------------------------------------------ positions
def oracle_position(part: Partition, grid: int) -> Tensor:
    """Split every pixel into grid x grid sub-pixels: each falls inside exactly one cell."""
    height, width = part.image_size
    fine = part.labels.repeat_interleave(grid, 1).repeat_interleave(grid, 2)  # [B, H*p, W*p]
    row_cell = torch.arange(height * grid) // height
    col_cell = torch.arange(width * grid) // width
    cell = (row_cell[:, None] * grid + col_cell[None, :]).expand_as(fine)
    counts = torch.zeros(part.num_regions, grid * grid, dtype=torch.float64)
    counts.index_put_(
        (fine.flatten(), cell.flatten()),
        torch.ones(fine.numel(), dtype=torch.float64),
        accumulate=True,
    )
    return (counts / counts.sum(1, keepdim=True)).float()


def test_position_histogram_is_one_hot_for_grid_cells() -> None:
    images = torch.rand(2, 3, 64, 96)
    part = grid_partition(images, patch_size=16)  # 4 x 6 patches
    tokens = extract_regions(images, part, patch_size=16, position_grid=4)
    # A 4 x 4 grid over a 64 x 96 image has 16 x 24 cells: a patch's pixels split 2:1 or 1:2
    # between columns, never between rows, and the histogram sums to one.
    torch.testing.assert_close(tokens.position.sum(-1), torch.ones(2, 24))
    square = torch.rand(2, 3, 64, 64)
    grid_part = grid_partition(square, patch_size=16)
    tokens = extract_regions(square, grid_part, patch_size=16, position_grid=4)
    assert torch.equal(tokens.position, torch.eye(16).expand(2, 16, 16))


@pytest.mark.parametrize(
    ("height", "width", "grid"), [(23, 31, 5), (20, 20, 7), (17, 40, 17), (20, 30, 5), (24, 24, 6)]
)
def test_position_histogram_matches_subpixel_oracle(height: int, width: int, grid: int) -> None:
    part = random_partition(2, height, width, classes=3, seed=height)
    hist = position_histogram(part, grid)
    torch.testing.assert_close(hist, oracle_position(part, grid))
    torch.testing.assert_close(hist.sum(1), torch.ones(part.num_regions))


@pytest.mark.parametrize(
    ("min_patch", "budget", "grid"), [(8, 34, 8), (16, 10, 8), (4, 34, 8), (8, 34, 4)]
)
def test_position_histogram_of_squares_matches_the_oracle(
    min_patch: int, budget: int, grid: int
) -> None:
    """Quadtree squares of whole cells take the boxes' path; smaller ones (4 px in 8-px
    cells) and cells that split patches the pixels' path: every one equals the oracle."""
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(min_patch))
    part = adaptok.partition(images, "quadtree", budget=budget, min_patch=min_patch, max_patch=32)
    hist = position_histogram(part, grid)
    torch.testing.assert_close(hist, oracle_position(part, grid), rtol=0, atol=0)


def test_position_histogram_of_whole_cell_regions_matches_the_oracle() -> None:
    """Regions of whole cells that are not boxes (aligned dHT) take the cells' path, a region
    that owns part of a cell the pixels' path; both equal the oracle."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    aligned = adaptok.partition(images, "dht", budget=12, cell=8, resolution=0.25, min_width=0)
    assert not bool(
        (
            aligned.area
            == (aligned.box[:, 2] - aligned.box[:, 0]) * (aligned.box[:, 3] - aligned.box[:, 1])
        ).all()
    )  # some region is not its box
    torch.testing.assert_close(position_histogram(aligned, 8), oracle_position(aligned, 8))
    labels = aligned.labels.clone()
    labels[0, 0, 39] = labels[0, 0, 40]  # a pixel of one cell joins the next cell's region
    assert labels[0, 0, 39] != aligned.labels[0, 0, 39]
    moved = Partition.from_labels(labels)
    torch.testing.assert_close(position_histogram(moved, 8), oracle_position(moved, 8))


# ------------------------------------------------------------------------------------ gradients
def test_gradient_histogram_rotates_with_the_image() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 24, 24, generator=generator)
    image = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, 1)  # some structure
    part = Partition.from_labels(torch.zeros(1, 24, 24, dtype=torch.long))
    bins = 16
    hist = gradient_histogram(image, part, bins)
    rotated = gradient_histogram(torch.rot90(image, 1, (2, 3)), part, bins)
    torch.testing.assert_close(hist.sum(), torch.tensor(1.0))
    # A 90-degree turn of the image turns every gradient by 90 degrees: a shift of bins / 4.
    shifted = torch.roll(hist, bins // 4, 1)
    back = torch.roll(hist, -bins // 4, 1)
    assert torch.allclose(rotated, shifted, atol=1e-5) or torch.allclose(rotated, back, atol=1e-5)


def test_gradient_histogram_of_ramps_and_flat_regions() -> None:
    bins = 8  # bin k is centred on angle -pi + (k + 0.5) * 2 pi / 8
    ramp = torch.arange(16.0).expand(1, 3, 16, 16).clone()  # brightness grows with x: angle 0
    whole = Partition.from_labels(torch.zeros(1, 16, 16, dtype=torch.long))
    expected = torch.zeros(1, bins)
    expected[0, 3] = expected[0, 4] = 0.5
    torch.testing.assert_close(gradient_histogram(ramp, whole, bins), expected)
    down = ramp.transpose(2, 3)  # brightness grows with y: angle pi / 2, bins 5 and 6
    expected = torch.zeros(1, bins)
    expected[0, 5] = expected[0, 6] = 0.5
    torch.testing.assert_close(gradient_histogram(down, whole, bins), expected)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.equal(gradient_histogram(flat, whole, bins), torch.zeros(1, bins))


def test_gradient_flows_from_tokens_to_pixels() -> None:
    part = random_partition(2, 20, 26, classes=3, seed=1)
    images = torch.rand(2, 3, 20, 26, requires_grad=True)
    tokens = extract_regions(images, part, patch_size=4, position_grid=5, gradient=True)
    loss = (
        tokens.patches.square().sum() + (tokens.gradient * torch.randn_like(tokens.gradient)).sum()
    )
    loss.backward()
    assert torch.isfinite(images.grad).all()
    assert bool((images.grad != 0).all())


# ------------------------------------------------------------------------------ batch, dispatch
def test_batch_independence() -> None:
    part = random_partition(3, 18, 22, classes=3, seed=2)
    images = torch.rand(3, 3, 18, 22)
    tokens = extract_regions(images, part, patch_size=4, position_grid=6, gradient=True)
    for b in range(3):
        single = extract_regions(
            images[b : b + 1], part.select([b]), patch_size=4, position_grid=6, gradient=True
        )
        count = int(part.counts[b])
        for name in ("patches", "mask", "position", "gradient"):
            torch.testing.assert_close(getattr(tokens, name)[b, :count], getattr(single, name)[0])
        assert not bool(tokens.patch_valid[b, count:].any())


def test_extract_tokens_dispatches_non_square_partitions_to_the_extractor() -> None:
    part = random_partition(2, 21, 19, classes=3, seed=4)
    images = torch.rand(2, 3, 21, 19)
    tokens = adaptok.extract_tokens(images, part, patch_size=4, position_grid=3)
    direct = extract_regions(images, part, patch_size=4, position_grid=3)
    assert tokens.mask is not None and tokens.position is not None
    torch.testing.assert_close(tokens.patches, direct.patches)
    torch.testing.assert_close(tokens.mask, direct.mask)
    assert torch.equal(tokens.region_index[tokens.patch_valid], torch.arange(part.num_regions))


def test_square_partitions_stay_exact_whatever_else_is_asked() -> None:
    # A quadtree patch of 8P is its exact area average, also when position histograms or
    # gradient histograms are requested (they must not switch the resampler).
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    part = adaptok.partition(images, method="quadtree", budget=1, min_patch=32, max_patch=64)
    plain = adaptok.extract_tokens(images, part, patch_size=8)
    extra = adaptok.extract_tokens(images, part, patch_size=8, position_grid=4, gradient=True)
    want = F.avg_pool2d(images, 8).flatten(2)  # the single 64-pixel patch -> 8 x 8
    assert part.num_regions == 1
    torch.testing.assert_close(plain.patches[0, 0], want[0].flatten())
    torch.testing.assert_close(extra.patches, plain.patches)
    assert extra.mask is None and extra.position is not None and extra.gradient is not None
    torch.testing.assert_close(extra.position.sum(-1), torch.ones(1, 1))


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    part = random_partition(2, 40, 36, classes=3, seed=6)
    images = torch.rand(2, 3, 40, 36)
    options = {"patch_size": 8, "position_grid": 7, "gradient": True}
    cpu = extract_regions(images, part, **options)
    gpu = extract_regions(images.cuda(), part.to("cuda"), **options)
    for name in ("patches", "mask", "position", "gradient"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name))


# ------------------------------------------------------------------------------------ bad input
def test_bad_input() -> None:
    images = torch.rand(2, 3, 16, 16)
    part = grid_partition(images, patch_size=8)
    with pytest.raises(AdaptokError, match="B, H, W"):
        extract_regions(torch.rand(2, 3, 16, 17), part)
    with pytest.raises(AdaptokError, match="patch_size"):
        extract_regions(images, part, patch_size=0)
    for bad in (0, -8, 2.5):  # the public entry point too (0 ended in ZeroDivisionError)
        with pytest.raises(AdaptokError, match="patch_size must be a positive integer"):
            extract_tokens(images, part, patch_size=bad)
    with pytest.raises(AdaptokError, match="samples"):
        extract_regions(images, part, patch_size=8, samples=0)
    with pytest.raises(AdaptokError, match="position_grid 17"):
        extract_regions(images, part, patch_size=8, position_grid=17)
    with pytest.raises(AdaptokError, match="position_grid"):
        extract_regions(images, part, patch_size=8, position_grid=0)
    with pytest.raises(AdaptokError, match="NaN"):
        extract_regions(torch.full((2, 3, 16, 16), float("nan")), part)
    with pytest.raises(TypeError):
        extract_regions(images, part, 8)  # keyword-only options
