import pytest
import torch
import torch.nn.functional as F

import adaptok
from adaptok import AdaptokError
from adaptok.ops import sincos_2d
from adaptok.partitioners.grid import grid_partition
from adaptok.regions import check_partition
from adaptok.tokens import extract_squares, is_square_partition


def test_grid_regions_are_the_patches(photos: torch.Tensor) -> None:
    part = adaptok.partition(photos, method="grid", patch_size=16)
    check_partition(part)
    assert part.counts.tolist() == [4 * 6, 4 * 6]
    assert (part.area == 256).all()
    assert is_square_partition(part, 16)
    # Region r of image b is the r-th patch in row-major order.
    assert part.box[7].tolist() == [16, 16, 32, 32]


def test_grid_tokens_equal_unfolded_patches(photos: torch.Tensor) -> None:
    part = adaptok.partition(photos, method="grid", patch_size=16)
    tokens = adaptok.extract_tokens(photos, part, patch_size=16)
    expected = F.unfold(photos, 16, stride=16).transpose(1, 2)  # [B, T, C*P*P] channel-major
    torch.testing.assert_close(tokens.patches, expected)
    assert tokens.patch_valid.all()
    assert tokens.patch_coord[0, 7].tolist() == [1.5, 1.5]
    assert (tokens.level == 0).all()


def test_extract_squares_area_averages_big_patches() -> None:
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    part = adaptok.partition(images, method="grid", patch_size=32)
    patches = extract_squares(images, part, patch_size=8)
    pooled = F.avg_pool2d(images, 4)
    expected = F.unfold(pooled, 8, stride=8).transpose(1, 2).reshape(-1, 3 * 64)
    torch.testing.assert_close(patches, expected)


def test_tokens_carry_gradient_to_pixels(photos: torch.Tensor) -> None:
    images = photos.clone().requires_grad_(True)
    part = adaptok.partition(images, method="grid", patch_size=32)
    adaptok.extract_tokens(images, part, patch_size=16).patches.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("images", "options", "match"),
    [
        (torch.rand(1, 64, 64, 3), {}, r"channels-last"),
        (torch.rand(1, 3, 64, 64) * 255, {}, "divide them by 255"),
        (torch.randn(1, 3, 64, 64) * 2, {}, "input_space"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int32), {}, "uint8"),
        (torch.full((1, 3, 64, 64), float("nan")), {}, "NaN"),
        (torch.rand(1, 3, 64, 64), {"patch_size": 0}, "positive integer"),
        (torch.rand(1, 3, 64, 64), {"patches": 3}, "unknown option"),
    ],
)
def test_grid_rejects_bad_input(images: torch.Tensor, options: dict, match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        adaptok.partition(images, method="grid", **options)


def test_grid_partition_itself_names_the_padding_and_the_crop() -> None:
    # partition() pads (see test_api_takes_any_size); the bare partitioner names both fixes.
    with pytest.raises(AdaptokError, match=r"pad to 64x80 .*or crop to 64x64"):
        grid_partition(torch.rand(1, 3, 64, 72))
    with pytest.raises(AdaptokError, match="too small"):
        grid_partition(torch.rand(1, 3, 8, 8))


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(AdaptokError, match="known methods: dht, grid, quadtree, slic"):
        adaptok.partition(torch.rand(1, 3, 32, 32), method="voronoi")


def test_sincos_2d_halves() -> None:
    coords = torch.tensor([[0.0, 0.0], [2.0, 3.0]])
    emb = sincos_2d(coords, 8)
    # x first: sin(3 * omega), cos(3 * omega) with omega = [1, 1/100]
    x, y = torch.tensor([3.0, 0.03]), torch.tensor([2.0, 0.02])
    torch.testing.assert_close(emb[1, :4], torch.cat([x.sin(), x.cos()]))
    torch.testing.assert_close(emb[1, 4:], torch.cat([y.sin(), y.cos()]))
    assert emb[0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    with pytest.raises(AdaptokError, match="divisible by 4"):
        sincos_2d(coords, 6)
