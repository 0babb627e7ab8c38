"""Tests for the dHT embedder (adaptok.embed.dht) and its timm remap (adaptok.embed.timm)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

import adaptok
from adaptok import AdaptokError
from adaptok.embed.dht import DHTEmbedder, dht_embed
from adaptok.embed.timm import dht_embedder_from_timm, dht_embedder_state, position_columns
from adaptok.partitioners.dht import DHTTokenizer
from adaptok.partitioners.grid import grid_partition
from adaptok.tokens import extract_regions
from conftest import assert_gradients_reach, random_partition


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- timm equivalence
def test_grid_tokens_reproduce_timm_embedding(vit: torch.nn.Module, images: torch.Tensor) -> None:
    part = grid_partition(images, patch_size=16)
    tokens = adaptok.extract_tokens(images, part, patch_size=16, position_grid=14)
    embedder = DHTEmbedder(embed_dim=192, position_grid=14, norm=False)
    embedder.load_state_dict(dht_embedder_state(embedder, vit), strict=True)
    with torch.no_grad():
        out = embedder(tokens)
        want = vit._pos_embed(vit.patch_embed(images))
        cls = vit.cls_token[0, 0] + vit.pos_embed[0, 0]
    torch.testing.assert_close(out.x, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.x[:, 0], cls.expand(2, -1), atol=1e-6, rtol=0)
    assert bool(out.valid.all())
    # The same through the convenience constructor, with zero-initialised gradient columns.
    from_timm = dht_embedder_from_timm(vit, gradient=True)
    tokens = adaptok.extract_tokens(images, part, **from_timm.input_options)
    with torch.no_grad():
        torch.testing.assert_close(from_timm(tokens).x, want, atol=1e-5, rtol=0)


def test_other_position_grid_uses_timm_resampled_positions(
    vit: torch.nn.Module, images: torch.Tensor
) -> None:
    # p = 7: every 16-pixel patch lies inside one 32-pixel cell, so its histogram is one-hot and
    # its position is the bicubically resized grid's entry of that cell.
    embedder = dht_embedder_from_timm(vit, position_grid=7)
    part = grid_partition(images, patch_size=16)
    tokens = adaptok.extract_tokens(images, part, patch_size=16, position_grid=7)
    resized = resample_abs_pos_embed(vit.pos_embed, (7, 7), num_prefix_tokens=1)[0, 1:]
    rows = torch.arange(14)[:, None] // 2 * 7 + torch.arange(14)[None, :] // 2
    with torch.no_grad():
        want = vit.patch_embed(images) + resized[rows.flatten()]
        torch.testing.assert_close(embedder(tokens).x[:, 1:], want, atol=1e-5, rtol=0)


def test_position_columns_layouts_and_resize(vit: torch.nn.Module) -> None:
    grid = vit.pos_embed.detach()[0, 1:]  # [196, D]
    same = position_columns(grid, 14)
    assert torch.equal(same, grid.t())
    torch.testing.assert_close(position_columns(grid[None], 14), same)
    torch.testing.assert_close(position_columns(grid.reshape(14, 14, -1), 14), same)
    resized = position_columns(grid, 24)
    want = resample_abs_pos_embed(grid[None], (24, 24), num_prefix_tokens=0)[0].t()
    torch.testing.assert_close(resized, want)
    with pytest.raises(AdaptokError, match="not a square grid"):
        position_columns(vit.pos_embed.detach()[0], 14)  # cls entry left in
    with pytest.raises(AdaptokError, match="grid"):
        position_columns(grid, 0)


# ------------------------------------------------------------------------- function + module
def make_tokens(seed: int = 0, batch: int = 2):
    part = random_partition(batch, 24, 20, block=4, seed=seed)
    images = torch.rand(batch, 3, 24, 20, generator=torch.Generator().manual_seed(seed))
    return extract_regions(images, part, patch_size=4, position_grid=6, gradient=True), part


def make_embedder() -> DHTEmbedder:
    torch.manual_seed(0)
    embedder = DHTEmbedder(
        in_chans=3,
        patch_size=4,
        embed_dim=16,
        position_grid=6,
        gradient=True,
        num_prefix_tokens=2,
    )
    with torch.no_grad():  # move off the zero initialisation so every path is exercised
        embedder.background.normal_()
    return embedder


def test_function_and_module_agree() -> None:
    tokens, _ = make_tokens()
    embedder = make_embedder().eval()
    out = embedder(tokens)
    direct = dht_embed(
        tokens,
        mix=torch.sigmoid(embedder.mix_logit),
        background=embedder.background,
        weight=embedder.proj.weight,
        bias=embedder.proj.bias,
        prefix=embedder.prefix,
        prefix_position=embedder.prefix_position,
        position_grid=6,
        gradient=True,
        norm=embedder.norm,
    )
    torch.testing.assert_close(out.x, direct.x)
    assert torch.equal(out.valid, direct.valid)


def test_features_follow_the_mask_mix_formula() -> None:
    # Check the documented formula against a direct computation, with norm off and D = features.
    tokens, _ = make_tokens(batch=1)
    features = 3 * 16
    embedder = DHTEmbedder(
        in_chans=3,
        patch_size=4,
        embed_dim=features,
        position_grid=None,
        norm=False,
        num_prefix_tokens=0,
    )
    with torch.no_grad():
        embedder.proj.weight.copy_(torch.eye(features))
        embedder.proj.bias.zero_()
        embedder.background.normal_()
    plain = tokens.with_fields(position=None, gradient=None)
    out = embedder(plain).x
    inside = plain.mask[..., None, :]
    outside = 1 - inside
    x = plain.patches.view(*plain.patches.shape[:2], 3, 16)
    lam = embedder.mix
    want = (inside + lam * outside) * x + (1 - lam) * outside * embedder.background.view(3, 16)
    want = want.flatten(2) * plain.patch_valid[..., None]
    torch.testing.assert_close(out, want)
    assert abs(float(lam.detach()) - 0.01) < 1e-6


def test_gradients_reach_every_parameter() -> None:
    tokens, _ = make_tokens()
    embedder = make_embedder().train()
    out = embedder(tokens)
    weights = torch.randn_like(out.x)
    (out.x * weights).sum().backward()
    assert_gradients_reach(embedder)


def test_batch_independence_and_padding() -> None:
    tokens, part = make_tokens(batch=3)
    embedder = make_embedder().eval()
    out = embedder(tokens)
    counts = part.counts.tolist()
    assert out.x.shape == (3, 2 + max(counts), 16)
    for b in range(3):
        single = embedder(
            extract_regions(
                tokens_images(b), part.select([b]), patch_size=4, position_grid=6, gradient=True
            )
        )
        torch.testing.assert_close(out.x[b, : 2 + counts[b]], single.x[0])
        assert bool(out.valid[b, : 2 + counts[b]].all())
        assert not bool(out.valid[b, 2 + counts[b] :].any())
        assert bool((out.x[b, 2 + counts[b] :] == 0).all())


def tokens_images(index: int) -> torch.Tensor:
    images = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    return images[index : index + 1]


# ------------------------------------------------------------------------------------ bad input
def test_errors_for_mismatched_shapes(vit: torch.nn.Module) -> None:
    tokens, _ = make_tokens()
    with pytest.raises(AdaptokError, match="patch_size=8"):
        DHTEmbedder(patch_size=8, embed_dim=16, position_grid=6)(tokens)
    with pytest.raises(AdaptokError, match="position_grid=5"):
        DHTEmbedder(patch_size=4, embed_dim=16, position_grid=5)(tokens)
    with pytest.raises(AdaptokError, match="gradient=True"):
        DHTEmbedder(patch_size=4, embed_dim=16, position_grid=6, gradient=True)(
            tokens.with_fields(gradient=None)
        )
    with pytest.raises(AdaptokError, match="1-channel"):
        DHTEmbedder(in_chans=1, patch_size=4, embed_dim=16, position_grid=6)(tokens)
    with pytest.raises(AdaptokError, match="embed_dim"):
        DHTEmbedder(embed_dim=0)
    with pytest.raises(AdaptokError, match="mix_init"):
        DHTEmbedder(mix_init=1.0)
    with pytest.raises(AdaptokError, match="dht_embedder_from_timm"):
        dht_embedder_state(DHTEmbedder(embed_dim=64, norm=False), vit)
    with pytest.raises(AdaptokError, match="norm=False"):
        dht_embedder_state(DHTEmbedder(embed_dim=192), vit)
    with pytest.raises(AdaptokError, match="VisionTransformer"):
        dht_embedder_state(DHTEmbedder(embed_dim=192, norm=False), torch.nn.Linear(2, 2))


def test_gradient_path_from_tokens_to_the_dht_tokenizer() -> None:
    """End to end: dHT pixels -> extractor -> embedder; a loss on the tokens reaches every
    parameter of the tokenizer (encoder, self-edge, injection) and of the embedder."""
    torch.manual_seed(0)
    tokenizer = DHTTokenizer().train()
    images = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(3))
    result = tokenizer(images, budget=12, generator=torch.Generator().manual_seed(0))
    tokens = adaptok.extract_tokens(
        result.pixels, result.partition, patch_size=4, position_grid=6, gradient=True
    )
    embedder = make_embedder().train()
    out = embedder(tokens)
    (out.x * torch.randn_like(out.x)).sum().backward()
    assert_gradients_reach(tokenizer, embedder)
