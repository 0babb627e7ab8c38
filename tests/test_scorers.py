"""Quadtree scorers: definitions against direct formulas, layouts, seeds, the feature backbone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adaptok
from adaptok import AdaptokError
from adaptok.partitioners.quadtree import quadtree_partition, quadtree_split
from adaptok.partitioners.scorers import (
    FeatureScorer,
    PixelBlurScorer,
    PoolingScorer,
    PrecomputedScorer,
    QuadtreeScorer,
    RandomScorer,
    available_scorers,
    feature_importance,
    get_scorer,
    pixel_blur_importance,
    pooling_importance,
)
from conftest import photo


def direct_pixel_blur(images: torch.Tensor, s: int, big: int) -> list[torch.Tensor]:
    """The definition, literally: area-downsample, upsample back, sqrt(P * patch MSE)."""
    maps = []
    factor = 2
    while s * factor <= big:
        patch = s * factor
        shown = F.interpolate(F.avg_pool2d(images, factor), scale_factor=factor, mode="nearest")
        mse = F.avg_pool2d((images - shown).square().mean(1, keepdim=True), patch)[:, 0]
        maps.append((patch * mse).sqrt())
        factor *= 2
    return maps


class StrideNet(nn.Module):
    """A tiny frozen 'CNN': average pooling by `stride`, then a fixed 1x1 conv."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.mix = nn.Conv2d(3, 5, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mix(F.avg_pool2d(images, self.stride)))


# ----------------------------------------------------------------------------------- pixel blur
@pytest.mark.parametrize(("size", "s", "big"), [((64, 96), 8, 32), ((128, 64), 4, 64)])
def test_pixel_blur_matches_its_definition(size, s, big) -> None:
    images = torch.cat([photo("astronaut", size), torch.rand(1, 3, *size)]).double()
    fast = pixel_blur_importance(images, min_patch=s, max_patch=big)
    expected = direct_pixel_blur(images, s, big)
    assert len(fast) == len(expected)
    for level, (got, want) in enumerate(zip(fast, expected, strict=True), start=1):
        assert got.shape == (2, size[0] // (s << level), size[1] // (s << level))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    single = pixel_blur_importance(images.float(), min_patch=s, max_patch=big)
    for got, want in zip(single, expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_pixel_blur_gives_flat_patches_exactly_zero() -> None:
    images = torch.rand(2, 3, 64, 64)
    images[:, :, :32, :32] = torch.rand(2, 3, 1, 1)  # one flat 32 x 32 corner per image
    maps = PixelBlurScorer()(images, min_patch=8, max_patch=32)
    assert (maps[1][:, 0, 0] == 0).all() and (maps[0][:, :2, :2] == 0).all()
    assert (maps[0][:, 2:, 2:] > 0).all()
    assert PixelBlurScorer()(images, min_patch=16, max_patch=16) == []


def test_pixel_blur_is_batch_independent() -> None:
    images = torch.cat([photo(name, (64, 64)) for name in ("coffee", "rocket", "chelsea")])
    together = pixel_blur_importance(images, min_patch=8, max_patch=32)
    for b in range(3):
        alone = pixel_blur_importance(images[b : b + 1], min_patch=8, max_patch=32)
        for joint, single in zip(together, alone, strict=True):
            assert torch.equal(joint[b : b + 1], single)


# -------------------------------------------------------------------------------------- pooling
def pooled_error(patch: torch.Tensor, s: int) -> float:
    """Squared error (mean over channels) of a [C, P, P] patch shown as its pooled token: every
    s x s cell replaced by the patch's mean cell."""
    channels, side, _ = patch.shape
    cells = [patch[:, y : y + s, x : x + s] for y in range(0, side, s) for x in range(0, side, s)]
    mean = torch.stack(cells).mean(0)
    return float(sum((cell - mean).square().sum() for cell in cells)) / channels


def direct_pooling(images: torch.Tensor, s: int, big: int) -> list[torch.Tensor]:
    """The definition, patch by patch: the pooled error of a patch minus its children's."""
    maps = []
    patch = 2 * s
    while patch <= big:
        batch, _, height, width = images.shape
        out = torch.zeros(batch, height // patch, width // patch, dtype=images.dtype)
        half = patch // 2
        for b in range(batch):
            for i in range(height // patch):
                for j in range(width // patch):
                    y, x = i * patch, j * patch
                    whole = pooled_error(images[b, :, y : y + patch, x : x + patch], s)
                    children = sum(
                        pooled_error(images[b, :, y + u : y + u + half, x + v : x + v + half], s)
                        for u in (0, half)
                        for v in (0, half)
                    )
                    out[b, i, j] = whole - children
        maps.append(out)
        patch *= 2
    return maps


@pytest.mark.parametrize(("size", "s", "big"), [((32, 48), 4, 16), ((32, 32), 2, 16)])
def test_pooling_matches_its_definition(size, s, big) -> None:
    images = torch.cat([photo("astronaut", size), torch.rand(1, 3, *size)]).double()
    fast = pooling_importance(images, min_patch=s, max_patch=big)
    expected = direct_pooling(images, s, big)
    assert len(fast) == len(expected)
    for level, (got, want) in enumerate(zip(fast, expected, strict=True), start=1):
        assert got.shape == (2, size[0] // (s << level), size[1] // (s << level))
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pooling_gives_patches_of_equal_cells_exactly_zero() -> None:
    images = torch.rand(2, 3, 64, 64)
    images[:, :, :32, :32] = torch.rand(2, 3, 1, 1)  # one flat 32 x 32 corner per image
    images[:, :, 32:, 32:] = torch.rand(2, 3, 8, 8).repeat(1, 1, 4, 4)  # equal 8 x 8 cells
    maps = PoolingScorer()(images, min_patch=8, max_patch=32)
    assert (maps[1][:, 0, 0] == 0).all() and (maps[0][:, :2, :2] == 0).all()
    assert (maps[1][:, 1, 1] == 0).all() and (maps[0][:, 2:, 2:] == 0).all()
    assert (maps[0][:, :2, 2:] > 0).all()
    assert PoolingScorer()(images, min_patch=16, max_patch=16) == []


def test_pooling_splits_where_cells_differ_pixel_blur_where_texture_is() -> None:
    """A fine checkerboard (every cell alike) and one bright cell on black: pooling loses the
    bright cell, blurring loses the checkerboard, and each scorer splits what its tokens lose."""
    images = torch.zeros(1, 3, 64, 64)
    checker = (torch.arange(32)[:, None] + torch.arange(32)) % 2
    images[0, :, :32, :32] = checker.float()  # top-left patch of 32: texture, equal cells
    images[0, :, 40:48, 40:48] = 1.0  # one bright 8 x 8 cell in the bottom-right patch
    for scorer, split in (("pooling", (1, 1)), ("pixel_blur", (0, 0))):
        part = quadtree_partition(images, budget=7, min_patch=8, max_patch=32, scorer=scorer)
        small = part.box[(part.box[:, 2] - part.box[:, 0]) == 16]
        assert sorted({(int(y) // 32, int(x) // 32) for y, x in small[:, :2]}) == [split]


def test_pooling_is_batch_independent_and_keeps_dtype() -> None:
    images = torch.cat([photo(name, (64, 64)) for name in ("coffee", "rocket", "chelsea")])
    together = pooling_importance(images, min_patch=8, max_patch=32)
    for b in range(3):
        alone = pooling_importance(images[b : b + 1], min_patch=8, max_patch=32)
        for joint, single in zip(together, alone, strict=True):
            assert torch.equal(joint[b : b + 1], single)
    half = pooling_importance(images.bfloat16(), min_patch=8, max_patch=32)
    for want, got in zip(together, half, strict=True):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------- precomputed
def test_precomputed_layout_drives_the_split() -> None:
    generator = torch.Generator().manual_seed(1)
    maps = [torch.rand(2, 8, 12, generator=generator), torch.rand(2, 4, 6, generator=generator)]
    images = torch.rand(2, 3, 64, 96)
    part = quadtree_partition(
        images, budget=30, min_patch=4, max_patch=16, scorer=PrecomputedScorer(maps)
    )
    tree = quadtree_split(maps, num_splits=(30 - 24) // 3, base_grid=(2, 4, 6))
    big = part.box[(part.box[:, 2] - part.box[:, 0]) == 16]
    # the level-2 patches left whole are exactly those the split on the maps left whole
    expected = (~tree.split[1]).nonzero()
    assert torch.equal(big[:, :2] // 16, expected[:, 1:])


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (
            [torch.rand(1, 8, 8)],
            r"expected 2 importance maps .*maps\[0\]: \[1, 8, 8\], "
            r"maps\[1\]: \[1, 4, 4\]",
        ),
        (
            [torch.rand(1, 4, 4), torch.rand(1, 8, 8)],
            r"importance map 0 \(patches of side 8\) "
            r"must have shape \[1, 8, 8\]",
        ),
        ([torch.rand(1, 8, 8), torch.ones(1, 4, 4, dtype=torch.long)], "floating-point"),
        ([torch.rand(1, 8, 8), torch.full((1, 4, 4), float("nan"))], "NaN"),
    ],
)
def test_precomputed_layout_errors(maps: list[torch.Tensor], match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        quadtree_partition(
            torch.rand(1, 3, 64, 64),
            budget=19,
            min_patch=4,
            max_patch=16,
            scorer=PrecomputedScorer(maps),
        )


def test_precomputed_takes_one_pixel_map_as_the_mean_over_each_patch() -> None:
    generator = torch.Generator().manual_seed(2)
    cam = torch.rand(2, 64, 96, generator=generator, dtype=torch.float64)
    maps = PrecomputedScorer(cam)(torch.rand(2, 3, 64, 96), min_patch=4, max_patch=32)
    assert [tuple(m.shape) for m in maps] == [(2, 8, 12), (2, 4, 6), (2, 2, 3)]
    for level, found in enumerate(maps, start=1):
        side = 4 << level
        # oracle: a loop over the patches of this level, the plain mean of the map over each
        expected = torch.tensor(
            [[[cam[b, r : r + side, c : c + side].mean() for c in range(0, 96, side)]
              for r in range(0, 64, side)] for b in range(2)],
            dtype=torch.float64,
        )  # fmt: skip
        torch.testing.assert_close(found, expected)


def test_precomputed_pixel_map_splits_where_it_is_high() -> None:
    # A Grad-CAM-like map hot on one 32 x 32 corner square: every split lands inside it.
    cam = torch.zeros(64, 64)
    cam[32:, :32] = 1.0
    images = torch.rand(1, 3, 64, 64)
    part = adaptok.partition(
        images,
        "quadtree",
        budget=4 + 3 * 5,
        min_patch=8,
        max_patch=32,
        scorer=PrecomputedScorer(cam),
    )
    small = part.box[(part.box[:, 2] - part.box[:, 0]) < 32]
    assert len(small) == 16 and bool((small[:, 0] >= 32).all() and (small[:, 3] <= 32).all())
    # [H, W] is the same map for every image: the same as the batched [B, H, W] form, numpy too
    batched = adaptok.partition(
        images.expand(2, -1, -1, -1), "quadtree", budget=19, min_patch=8, max_patch=32,
        scorer=PrecomputedScorer(cam.expand(2, -1, -1).numpy()),
    )  # fmt: skip
    assert torch.equal(batched.labels[1] - batched.labels[1].min(), part.labels[0])


def test_precomputed_pixel_map_of_an_image_that_is_padded() -> None:
    # 50 x 70 is no multiple of max_patch 32: the image runs padded to 64 x 96, the map with it.
    cam = torch.zeros(50, 70)
    cam[:16, 48:] = 1.0
    part = adaptok.partition(
        torch.rand(1, 3, 50, 70), "quadtree", budget=6 + 3 * 5, min_patch=8, max_patch=32,
        scorer=PrecomputedScorer(cam),
    )  # fmt: skip
    assert part.image_size == (50, 70)
    small = part.box[(part.box[:, 2] - part.box[:, 0]) == 8]
    assert len(small) > 0 and bool((small[:, 0] < 16).all() and (small[:, 1] >= 32).all())


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (torch.rand(1, 2, 4, 4), r"one pixel map \[B, H, W\] or \[H, W\].*\[1, 2, 4, 4\]"),
        ("cam.png", "needs one pixel map"),
    ],
)
def test_precomputed_refuses_what_is_neither_form(maps: object, match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        PrecomputedScorer(maps)


@pytest.mark.parametrize(
    ("cam", "match"),
    [
        (
            torch.rand(1, 32, 64),
            r"must have shape \[1, 64, 64\] \(or \[64, 64\].*got \[1, 32, 64\]",
        ),
        (torch.rand(3, 64, 64), r"must have shape \[1, 64, 64\]"),
        (torch.ones(64, 64, dtype=torch.long), "floating-point"),
        (torch.full((64, 64), float("nan")), "NaN"),
    ],
)
def test_precomputed_pixel_map_errors(cam: torch.Tensor, match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        PrecomputedScorer(cam)(torch.rand(1, 3, 64, 64), min_patch=8, max_patch=32)


# --------------------------------------------------------------------------------------- random
def test_random_scorer_is_reproducible() -> None:
    images = torch.rand(3, 3, 64, 64)
    first = RandomScorer(7)(images, min_patch=8, max_patch=32)
    again = RandomScorer(7)(images, min_patch=8, max_patch=32)
    other = RandomScorer(8)(images, min_patch=8, max_patch=32)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    # image b's scores do not depend on the other images (nor on how many there are)
    alone = RandomScorer(7)(images[:1], min_patch=8, max_patch=32)
    assert all(torch.equal(a[:1], b) for a, b in zip(first, alone, strict=True))
    one = quadtree_partition(images, budget=22, min_patch=8, max_patch=32, scorer="random", seed=7)
    two = quadtree_partition(images, budget=22, min_patch=8, max_patch=32, scorer="random", seed=7)
    assert torch.equal(one.labels, two.labels)
    with pytest.raises(AdaptokError, match="seed must be an integer"):
        RandomScorer(1.5)


# ------------------------------------------------------------------------------------- features
@pytest.mark.parametrize("stride", [16, 32])
@pytest.mark.parametrize("error", ["mse", "cosine"])
def test_feature_scorer_with_an_explicit_backbone(stride: int, error: str) -> None:
    net = StrideNet(stride)
    scorer = FeatureScorer(net, error=error)
    assert all(not p.requires_grad for p in scorer.parameters())
    scorer.train()
    assert not scorer.backbone.training  # stays frozen in eval mode
    images = torch.cat([photo("astronaut", (64, 128)), photo("coffee", (64, 128))])
    maps = scorer(images, min_patch=8, max_patch=32)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 8), (2, 2, 4)]
    # the definition: feature error of blur 2^j, averaged over (or copied into) each patch
    sharp = net(images)
    for level, got in enumerate(maps, start=1):
        factor = 1 << level
        blurred = F.interpolate(
            F.avg_pool2d(images, factor), size=(64, 128), mode="bilinear", align_corners=False
        )
        features = net(blurred)
        if error == "mse":
            err = (features - sharp).square().mean(1)
        else:
            err = 1 - F.cosine_similarity(features, sharp, dim=1)
        patch = 8 << level
        if patch >= stride:
            want = F.avg_pool2d(err[:, None], patch // stride)[:, 0]
        else:
            want = err.repeat_interleave(stride // patch, 1).repeat_interleave(stride // patch, 2)
        torch.testing.assert_close(got, want.detach())
    part = quadtree_partition(images, budget=20, min_patch=8, max_patch=32, scorer=scorer)
    assert part.counts.tolist() == [20, 20]


def test_feature_scorer_detects_a_bad_stride() -> None:
    class Odd(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images[:, :, :5, :5]

    with pytest.raises(AdaptokError, match="no integer stride"):
        feature_importance(torch.rand(1, 3, 64, 64), Odd(), min_patch=8, max_patch=32)
    with pytest.raises(AdaptokError, match=r"must return a \[B, C, H / stride"):
        feature_importance(torch.rand(1, 3, 64, 64), nn.Flatten(), min_patch=8, max_patch=32)


def test_feature_scorer_without_weights_says_so() -> None:
    with pytest.raises(AdaptokError, match=r"needs pretrained weights.*weights=.*backbone="):
        FeatureScorer()
    with pytest.raises(AdaptokError, match="needs pretrained weights"):
        get_scorer("feature")


def test_default_backbone_loads_a_local_timm_state_dict(tmp_path) -> None:
    timm = pytest.importorskip("timm")
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    scorer = FeatureScorer(weights=path)
    torch.testing.assert_close(
        scorer.backbone.layer1[0].conv1.weight, reference.layer1[0].conv1.weight
    )
    maps = scorer(photo("chelsea", (64, 64)), min_patch=16, max_patch=64)
    assert [tuple(m.shape) for m in maps] == [(1, 2, 2), (1, 1, 1)]
    assert all(torch.isfinite(m).all() for m in maps)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bogus.pth")
    with pytest.raises(AdaptokError, match="is not a resnet18 state dict"):
        FeatureScorer(weights=tmp_path / "bogus.pth")
    with pytest.raises(AdaptokError, match="no such file"):
        FeatureScorer(weights=tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------- registry
def test_registry_and_protocol() -> None:
    assert available_scorers() == ["feature", "pixel_blur", "pooling", "random"]
    assert isinstance(get_scorer("pooling"), PoolingScorer)
    assert isinstance(get_scorer("pixel_blur"), PixelBlurScorer)
    assert get_scorer("random", seed=3).seed == 3
    for scorer in (
        PixelBlurScorer(),
        PoolingScorer(),
        RandomScorer(0),
        PrecomputedScorer([]),
        FeatureScorer(StrideNet(16)),
    ):
        assert isinstance(scorer, QuadtreeScorer)
    with pytest.raises(AdaptokError, match="known scorers: feature, pixel_blur, pooling, random"):
        get_scorer("gradcam")
    with pytest.raises(AdaptokError, match="seed only applies"):
        get_scorer("pixel_blur", seed=1)
    images = torch.rand(1, 3, 64, 64)
    part = adaptok.partition(
        images, method="quadtree", budget=10, min_patch=16, max_patch=32, scorer="pixel_blur"
    )
    assert part.num_regions == 10


@pytest.mark.cuda
def test_scorers_run_on_cuda() -> None:
    images = torch.cat([photo("astronaut", (64, 64)), photo("coffee", (64, 64))])
    scorer = FeatureScorer(StrideNet(16))
    expected = scorer(images, min_patch=8, max_patch=32)
    got = scorer.cuda()(images.cuda(), min_patch=8, max_patch=32)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have.cpu(), want, rtol=1e-4, atol=1e-5)
    random_cpu = RandomScorer(3)(images, min_patch=8, max_patch=32)
    random_gpu = RandomScorer(3)(images.cuda(), min_patch=8, max_patch=32)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(random_cpu, random_gpu, strict=True))


def test_pixel_blur_on_half_precision_images() -> None:
    images = torch.cat([photo("astronaut", (64, 64)), photo("coffee", (64, 64))])
    full = pixel_blur_importance(images, min_patch=8, max_patch=32)
    half = pixel_blur_importance(images.bfloat16(), min_patch=8, max_patch=32)
    for want, got in zip(full, half, strict=True):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.01)
    part = quadtree_partition(images.bfloat16(), budget=25, min_patch=8, max_patch=32)
    assert part.counts.tolist() == [25, 25]


def test_explicit_backbone_takes_a_weights_file(tmp_path) -> None:
    source = StrideNet(16)
    torch.save(source.state_dict(), tmp_path / "net.pt")
    scorer = FeatureScorer(StrideNet(16), weights=tmp_path / "net.pt")
    torch.testing.assert_close(scorer.backbone.mix.weight, source.mix.weight)


def test_feature_scorer_follows_the_model_to_a_dtype_or_device() -> None:
    # A scorer passed as a partition option moves with the tokenizer module (here .double(), the
    # CPU stand-in for .to("cuda")) but stays out of the state dict (it has its own weights file).
    from adaptok.models import PartitionTokenizer

    scorer = FeatureScorer(StrideNet(16))
    tokenizer = PartitionTokenizer("quadtree", budget=23, min_patch=8, max_patch=32, scorer=scorer)
    assert tokenizer.state_dict() == {}
    tokenizer.double()
    assert all(parameter.dtype == torch.float64 for parameter in scorer.parameters())
    images = photo("astronaut", (64, 128)).double()
    part = tokenizer(images).partition
    want = quadtree_partition(images, budget=23, min_patch=8, max_patch=32, scorer=scorer)
    assert torch.equal(part.labels, want.labels)
