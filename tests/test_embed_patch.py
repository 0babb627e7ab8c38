"""PatchEmbedder: timm compatibility, positions, padding, gradients, function == module."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import adaptok
from adaptok import AdaptokError
from adaptok.embed.patch import PatchEmbedder, embed_patches, sample_position_grid
from adaptok.embed.timm import patch_embedder_state
from adaptok.ops import sincos_2d
from adaptok.partitioners.quadtree import quadtree_partition
from conftest import assert_gradients_reach, photo


def grid_tokens(images: torch.Tensor, patch_size: int = 16) -> adaptok.Tokens:
    part = adaptok.partition(images, method="grid", patch_size=patch_size)
    return adaptok.extract_tokens(images, part, patch_size=patch_size)


def test_projection_reproduces_timm_patch_embed() -> None:
    images = torch.cat([photo("astronaut", (64, 96)), photo("coffee", (64, 96))])
    reference = timm.layers.PatchEmbed(img_size=(64, 96), patch_size=16, in_chans=3, embed_dim=24)
    embedder = PatchEmbedder(
        patch_size=16, in_chans=3, embed_dim=24, num_prefix_tokens=0, position="none"
    )
    embedder.proj.weight.data.copy_(reference.proj.weight.flatten(1))
    embedder.proj.bias.data.copy_(reference.proj.bias)
    x, valid = embedder(grid_tokens(images))
    torch.testing.assert_close(x, reference(images), rtol=1e-5, atol=1e-5)
    assert valid.all() and valid.shape == (2, 24)


def test_retrofitted_timm_vit_embedding_is_reproduced() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(64, 96)).eval()
    images = torch.cat([photo("chelsea", (64, 96)), photo("rocket", (64, 96))])
    embedder = PatchEmbedder(
        patch_size=16,
        in_chans=3,
        embed_dim=vit.embed_dim,
        num_prefix_tokens=vit.num_prefix_tokens,
        position="learned",
        position_grid=vit.patch_embed.grid_size,
    )
    embedder.load_state_dict(patch_embedder_state(vit), strict=True)
    x, valid = embedder(grid_tokens(images))
    with torch.no_grad():
        expected = vit._pos_embed(vit.patch_embed(images))
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    assert valid.shape == (2, 1 + 24) and valid.all()


def test_sincos_positions_are_the_token_centres() -> None:
    images = photo("astronaut", (64, 64))
    part = quadtree_partition(images, budget=10, min_patch=16, max_patch=32)
    tokens = adaptok.extract_tokens(images, part, patch_size=16)
    embedder = PatchEmbedder(patch_size=16, in_chans=3, embed_dim=32, num_prefix_tokens=2)
    x, valid = embedder(tokens)
    projected = embedder.proj(tokens.patches)
    torch.testing.assert_close(x[:, 2:] - projected, sincos_2d(tokens.patch_coord, 32))
    torch.testing.assert_close(x[:, :2], embedder.prefix_tokens.expand(1, -1, -1))
    assert valid.shape == (1, 12) and valid.all()


def test_learned_grid_is_exact_on_cells_and_averages_big_patches() -> None:
    table = torch.randn(1, 3 * 4, 6)
    centres = torch.tensor([[1.5, 2.5], [1.0, 1.0], [0.5, 0.5], [9.0, -3.0]])
    out = sample_position_grid(table, (3, 4), centres)
    grid = table.view(3, 4, 6)
    assert torch.equal(out[0], grid[1, 2])  # a grid patch reads its cell exactly
    torch.testing.assert_close(out[1], grid[:2, :2].mean((0, 1)))  # a 2P patch: its 4 cells
    assert torch.equal(out[2], grid[0, 0])
    assert torch.equal(out[3], grid[2, 0])  # clamped to the border


def test_padding_is_zero_and_masked() -> None:
    # two images with different token counts: 64x64 of 32-pixel squares vs 16-pixel squares
    images = torch.rand(2, 3, 64, 64)
    coarse = adaptok.partition(images[:1], method="grid", patch_size=32).labels
    fine = adaptok.partition(images[1:], method="grid", patch_size=16).labels
    part = adaptok.Partition.from_labels(torch.cat([coarse, fine]))
    tokens = adaptok.extract_tokens(images, part, patch_size=16)
    embedder = PatchEmbedder(patch_size=16, in_chans=3, embed_dim=16)
    x, valid = embedder(tokens)
    assert valid.tolist() == [[True] * 5 + [False] * 12, [True] * 17]
    assert (x[0, 5:] == 0).all()


@pytest.mark.parametrize("position", ["sincos", "learned", "none"])
def test_function_and_module_agree_and_gradients_reach_every_parameter(position: str) -> None:
    images = torch.cat([photo("coffee", (64, 64)), photo("chelsea", (64, 64))])
    part = quadtree_partition(images, budget=13, min_patch=16, max_patch=32)
    tokens = adaptok.extract_tokens(images, part, patch_size=16)
    embedder = PatchEmbedder(
        patch_size=16,
        in_chans=3,
        embed_dim=32,
        position=position,
        position_grid=(4, 4),
        norm_layer=nn.LayerNorm,
    )
    x, valid = embedder(tokens)
    y, valid_y = embed_patches(
        tokens,
        embedder.proj.weight,
        embedder.proj.bias,
        prefix=embedder.prefix_tokens,
        position=position,
        pos_embed=embedder.pos_embed,
        position_grid=embedder.position_grid,
        norm=embedder.norm,
    )
    torch.testing.assert_close(x, y)
    assert torch.equal(valid, valid_y)
    (x[valid] * torch.randn_like(x[valid])).sum().backward()
    names = {name for name, _ in embedder.named_parameters()}
    assert ("pos_embed" in names) == (position == "learned")
    assert_gradients_reach(embedder)


def test_batch_independent() -> None:
    images = torch.cat([photo("coffee", (64, 64)), photo("rocket", (64, 64))])
    embedder = PatchEmbedder(
        patch_size=16, in_chans=3, embed_dim=32, position="learned", position_grid=4
    ).eval()
    together, _ = embedder(grid_tokens(images))
    alone, _ = embedder(grid_tokens(images[1:]))
    torch.testing.assert_close(together[1:], alone)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"position": "rope"}, "unknown position"),
        ({"position": "learned"}, "needs position_grid"),
        ({"embed_dim": 30}, "divisible by 4"),
        ({"patch_size": 0}, "positive integer"),
        ({"num_prefix_tokens": -1}, "non-negative integer"),
    ],
)
def test_rejects_bad_configuration(options: dict, match: str) -> None:
    with pytest.raises(AdaptokError, match=match):
        PatchEmbedder(**{"patch_size": 16, "in_chans": 3, "embed_dim": 32, **options})


def test_rejects_tokens_of_another_patch_size() -> None:
    embedder = PatchEmbedder(patch_size=16, in_chans=3, embed_dim=32)
    with pytest.raises(AdaptokError, match=r"extract_tokens\(\.\.\., patch_size=16\)"):
        embedder(grid_tokens(torch.rand(1, 3, 64, 64), patch_size=8))
    with pytest.raises(AdaptokError, match="values per patch"):
        embed_patches(grid_tokens(torch.rand(1, 3, 64, 64)), torch.zeros(8, 10))


@pytest.mark.cuda
def test_same_embedding_on_cuda() -> None:
    images = photo("astronaut", (64, 64))
    part = quadtree_partition(images, budget=10, min_patch=16, max_patch=32)
    tokens = adaptok.extract_tokens(images, part, patch_size=16)
    embedder = PatchEmbedder(
        patch_size=16, in_chans=3, embed_dim=32, position="learned", position_grid=4
    )
    x, _ = embedder(tokens)
    gpu_tokens = adaptok.extract_tokens(images.cuda(), part.to("cuda"), patch_size=16)
    y, _ = embedder.cuda()(gpu_tokens)
    torch.testing.assert_close(y.cpu(), x, rtol=1e-4, atol=1e-4)
