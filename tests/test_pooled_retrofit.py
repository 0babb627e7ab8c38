"""Pooled token embedding and size-aware attention: the retrofit that keeps a pretrained ViT
(docs/design.md, "Retrofitting")."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from adaptok import partition
from adaptok.errors import AdaptokError
from adaptok.models import EncoderConfig, ModelConfig, build_model, retrofit
from adaptok.models.encoder import MaskedEncoder, token_size_bias
from adaptok.models.retrofitting import RETROFIT_DEFAULTS
from adaptok.partitioners.registry import get_spec
from adaptok.regions import Partition
from adaptok.tokens import extract_tokens, pool_patches
from adaptok.tokens.boxes import cell_owners
from adaptok.train.checkpoint import save_checkpoint
from conftest import photo, random_partition, random_vit


def _vit(img_size: int, **kwargs) -> nn.Module:
    """A small random timm ViT (width 64, depth 2, 4 heads unless `kwargs` say otherwise)."""
    return random_vit(img_size, **{"embed_dim": 64, "depth": 2, "num_heads": 4, **kwargs})


LAYOUTS = [
    {},
    {"reg_tokens": 2},
    {"class_token": False, "global_pool": "avg"},  # fc_norm, no final norm
    {"no_embed_class": True, "init_values": 0.1, "qk_norm": True},
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pooled_grid_with_size_aware_attention_reproduces_timm_logits(layout):
    vit = _vit(64, patch_size=16, num_classes=7, **layout)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model = retrofit(vit, "grid", embedder="pooled", proportional_attention=True).eval()
    assert model.encoder.config.proportional_attention
    with torch.no_grad():
        expected = vit(images)
        got = model(images)
    assert float((got - expected).abs().max()) < 1e-5
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3  # not vacuous


def _pooling_oracle(images: torch.Tensor, part: Partition, patch: int) -> torch.Tensor:
    """Per-region loop: the mean of the P x P patches the region overlaps, each weighted by the
    number of the region's pixels inside it over the region's area."""
    _, channels, height, width = images.shape
    rows, cols = height // patch, width // patch
    out = []
    for region in range(part.num_regions):
        b = int(part.batch_index[region])
        inside = (part.labels[b] == region).double()
        token = torch.zeros(channels, patch, patch, dtype=torch.float64)
        for i in range(rows):
            for j in range(cols):
                share = inside[i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].sum()
                cell = images[b, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
                token += share / part.area[region] * cell.double()
        out.append(token.flatten())
    return torch.stack(out)


@pytest.mark.parametrize(
    "block", [3, 8, 16], ids=["regions-share-patches", "whole-patches", "whole-2x2-blocks"]
)
def test_pooling_equals_a_per_region_loop_oracle(block):
    # Regions of 3-px blocks share patches (the weighted product); 8- and 16-px blocks are whole
    # 8-px patches (each token the sum of its own patches), several per region and image.
    part = random_partition(2, 32, 48, block=block, seed=4)
    assert (cell_owners(part, 8, 8) is None) == (block == 3)  # the path each case takes
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(5))
    images.requires_grad_(True)
    tokens = pool_patches(images, part, 8)
    got = part.unpad(tokens.patches, tokens.patch_valid)
    oracle = _pooling_oracle(images.detach(), part, 8)
    torch.testing.assert_close(got.double(), oracle, atol=1e-5, rtol=0)
    # Gradients reach every pixel: a pixel of patch g counts for every token pooling g, with
    # that token's weight on g (for whole patches: 1 / the patches of its own region).
    got.sum().backward()
    weights = part.unpad(tokens.position, tokens.patch_valid).detach()  # [N, G], oracle-tested
    per_patch = torch.zeros(2, 4 * 6).index_add_(0, part.batch_index, weights).view(2, 4, 6)
    expected = per_patch.repeat_interleave(8, 1).repeat_interleave(8, 2)
    torch.testing.assert_close(images.grad, expected[:, None].expand_as(images))
    # The weights are the positions: every row sums to one over the 4 x 6 patch grid.
    assert weights.shape == (part.num_regions, 24)
    torch.testing.assert_close(weights.sum(1), torch.ones(part.num_regions))


@pytest.mark.parametrize(
    "block", [3, 8, 16, "grid"], ids=["shared-patches", "whole-patches", "2x2-blocks", "grid"]
)
def test_pooled_tokens_take_region_colors_as_the_injected_image_would(block):
    # dHT's mean injection on the tokens (whole patches) or on the image (shared patches): the
    # tokens of part.inject_means(images, colors) either way, and the same gradients.
    if block == "grid":
        part = partition(torch.rand(2, 3, 32, 48), "grid", patch_size=8)
    else:
        part = random_partition(2, 32, 48, block=block, seed=14)
    generator = torch.Generator().manual_seed(15)
    images = torch.rand(2, 3, 32, 48, generator=generator).requires_grad_(True)
    colors = torch.rand(part.num_regions, 3, generator=generator).requires_grad_(True)
    got = extract_tokens(images, part, patch_size=8, pooled=True, region_colors=colors)
    expected = extract_tokens(part.inject_means(images, colors), part, patch_size=8, pooled=True)
    torch.testing.assert_close(got.patches, expected.patches, atol=1e-6, rtol=0)
    weights = torch.rand(got.patches.shape, generator=generator)
    grad_got = torch.autograd.grad((got.patches * weights).sum(), (images, colors))
    grad_expected = torch.autograd.grad((expected.patches * weights).sum(), (images, colors))
    for a, b in zip(grad_got, grad_expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    moved = part.unpad(got.patches, got.patch_valid).detach()
    if block != 3:  # whole patches: every token's per-channel mean is its region's colour
        torch.testing.assert_close(moved.view(part.num_regions, 3, -1).mean(-1), colors.detach())


def test_region_colors_must_be_one_colour_per_region():
    part = random_partition(2, 16, 16, block=4, seed=16)
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(AdaptokError, match=rf"\[{part.num_regions}, 3\] tensor"):
        extract_tokens(images, part, patch_size=4, pooled=True, region_colors=torch.rand(2, 3))


def test_a_pooled_dht_model_tokenizes_like_its_injected_pixels_with_the_same_gradients():
    vit = _vit(32, patch_size=8, num_classes=3)
    model = retrofit(vit, "dht", partition_options={"budget": 12, "weights": "none"}).train()
    assert model.config.partition_options["cell"] == 8  # whole patches: injected on the tokens
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(17))
    _, tokens = model.tokenize(images)
    result = model.tokenizer(images)  # deterministic in training without sample_budget
    reference = extract_tokens(result.pixels, result.partition, 8, **model.extract_options)
    torch.testing.assert_close(tokens.patches, reference.patches, atol=1e-6, rtol=0)
    weights = torch.rand(tokens.patches.shape, generator=torch.Generator().manual_seed(18))
    parameters = [p for p in model.tokenizer.parameters() if p.requires_grad]
    got = torch.autograd.grad((tokens.patches * weights).sum(), parameters, allow_unused=True)
    expected = torch.autograd.grad(
        (reference.patches * weights).sum(), parameters, allow_unused=True
    )
    assert any(g is not None and float(g.abs().sum()) > 0 for g in got)
    for a, b in zip(got, expected, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_pooled_model_of_whole_patches_never_builds_the_injected_image(monkeypatch):
    vit = _vit(32, patch_size=8, num_classes=3)
    model = retrofit(vit, "dht", partition_options={"budget": 12, "weights": "none"}).eval()
    built = []
    inject = Partition.inject_means
    monkeypatch.setattr(
        Partition, "inject_means", lambda part, *args: built.append(1) or inject(part, *args)
    )
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(19)))
    assert not built
    with torch.no_grad():  # the image is still there for whoever reads it
        pixels = model.tokenizer(torch.rand(1, 3, 32, 32)).pixels
    assert built and pixels.shape == (1, 3, 32, 32)


def test_pooled_quadtree_tokens_are_their_patches_means():
    images = photo("coffee", (64, 96))
    part = partition(images, "quadtree", budget=33, min_patch=8, max_patch=32)
    tokens = pool_patches(images, part, 8)
    got = part.unpad(tokens.patches, tokens.patch_valid)
    torch.testing.assert_close(got.double(), _pooling_oracle(images, part, 8), atol=1e-5, rtol=0)


def test_pooled_tokens_of_the_grid_are_the_patches_themselves():
    images = photo("coffee", (32, 48))
    part = partition(images, "grid", patch_size=8)
    pooled = extract_tokens(images, part, patch_size=8, pooled=True)
    square = extract_tokens(images, part, patch_size=8)
    torch.testing.assert_close(pooled.patches, square.patches, atol=1e-6, rtol=0)
    assert pooled.mask is None and torch.equal(pooled.area, square.area)


def test_pooled_tokens_are_batch_independent():
    part = random_partition(3, 16, 16, block=4, seed=6)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    together = pool_patches(images, part, 4)
    for b in range(3):
        alone = pool_patches(images[b : b + 1], part.select([b]), 4)
        count = int(part.counts[b])
        torch.testing.assert_close(alone.patches[0, :count], together.patches[b, :count])


def test_pooled_tokens_refuse_images_off_the_patch_grid():
    part = random_partition(1, 20, 16, seed=1)
    with pytest.raises(AdaptokError, match=r"multiples of patch_size 8.*24x16"):
        pool_patches(torch.rand(1, 3, 20, 16), part, 8)
    with pytest.raises(AdaptokError, match="drop position_grid"):
        extract_tokens(torch.rand(1, 3, 16, 16), random_partition(1, 16, 16), 8, pooled=True,
                       position_grid=2)  # fmt: skip


def test_size_aware_attention_equals_a_dense_reference_with_an_explicit_bias():
    config = EncoderConfig(embed_dim=32, depth=2, num_heads=4, qkv_bias=True)
    encoder = MaskedEncoder(config).eval()
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, 32, generator=generator)
    valid = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    bias = torch.randn(2, 6, generator=generator)
    with torch.no_grad():
        got = encoder(x, valid, bias)
        # Reference: the blocks by hand, softmax(q k^T / sqrt(d) + bias_key) with padding at -inf.
        h = x
        for block in encoder.blocks:
            attn = block.attn
            y = block.norm1(h)
            qkv = attn.qkv(y).reshape(2, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            logits = q @ k.transpose(-1, -2) / math.sqrt(8) + bias[:, None, None, :]
            logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
            out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 6, 32)
            h = h + attn.proj(out)
            h = h + block.mlp(block.norm2(h))
        expected = encoder.norm(h)
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-5, rtol=1e-5)


def test_token_size_bias_is_log_patches_and_zero_on_prefix_and_padding():
    area = torch.tensor([[64.0, 256.0, 16.0], [64.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    bias = token_size_bias(area, 8, valid, num_prefix_tokens=1)
    expected = torch.tensor([[0.0, 0.0, math.log(4), math.log(0.25)], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(bias, expected)


def test_size_aware_attention_keeps_padded_batches_exact():
    vit = _vit(32, patch_size=8, num_classes=3)
    model = retrofit(vit, "dht", partition_options={"budget": 10}).eval()
    images = torch.cat([photo("astronaut", (32, 32)), torch.full((1, 3, 32, 32), 0.3)])
    with torch.no_grad():
        together = model(images)
        for b in range(2):
            alone = model(images[b : b + 1])
            torch.testing.assert_close(alone[0], together[b], atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_dht_tokenizer_through_the_pooled_path():
    vit = _vit(32, patch_size=8, num_classes=3)
    options = {"budget": 12, "weights": "none"}
    model = retrofit(vit, "dht", embedder="pooled", partition_options=options)
    model.train()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    model(images).square().sum().backward()
    grads = [p.grad for p in model.tokenizer.parameters() if p.requires_grad]
    assert grads and any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    # The shape branch starts at zero and learns: its gradient is not zero.
    assert float(model.embedder.shape_proj.weight.grad.abs().sum()) > 0


def test_shape_branch_starts_at_zero_and_never_touches_grid_tokens():
    vit = _vit(32, patch_size=8, num_classes=3)
    model = retrofit(vit, "grid", embedder="pooled").eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        expected = model(images)
        model.embedder.shape_proj.weight.normal_()  # as if trained
        assert torch.allclose(model(images), expected, atol=1e-6)


def test_retrofit_defaults_are_recorded_and_rebuild_the_model():
    vit = _vit(32, patch_size=8, num_classes=3)
    for method, (embedder, attention) in RETROFIT_DEFAULTS.items():
        model = retrofit(vit, method).eval()
        assert model.config.embedder == embedder
        assert model.encoder.config.proportional_attention is attention
        rebuilt = build_model(model.config).eval()
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(11))
        with torch.no_grad():
            assert torch.equal(rebuilt(images), model(images))


def test_checkpoints_from_before_pooling_rebuild_the_model_they_saved(tmp_path):
    """0.2 checkpoints: no proportional_attention field, embedder None meaning "dht" for dHT."""
    config = ModelConfig(
        method="dht",
        image_size=32,
        patch_size=8,
        encoder=EncoderConfig(embed_dim=32, depth=1, num_heads=2),
    )
    old = config.to_dict()
    del old["encoder"]["proportional_attention"]
    model = build_model(config)
    path = save_checkpoint({"model": model.state_dict(), "model_config": old}, tmp_path / "a.pt")
    from adaptok import load_model

    loaded = load_model(path)
    assert type(loaded.embedder).__name__ == "DHTEmbedder"
    assert not loaded.encoder.config.proportional_attention


def test_pooled_quadtree_is_scored_by_what_pooling_loses_unless_told_otherwise():
    vit = _vit(64, patch_size=8, num_classes=3)
    model = retrofit(vit, "quadtree").eval()
    assert model.config.partition_options["scorer"] == "pooling"
    assert model.tokenizer.options["scorer"] == "pooling"
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(13))
    images[:, :, :32] = 0.0  # a flat top half: pooling loses nothing there
    images[:, :, 40:48, 40:48] = 1.0
    with torch.no_grad():
        part = model.forward_output(images).partition
    expected = partition(images, "quadtree", budget=31, min_patch=8, max_patch=32, scorer="pooling")
    assert torch.equal(part.labels, expected.labels)
    chosen = retrofit(vit, "quadtree", partition_options={"scorer": "pixel_blur"})
    assert chosen.config.partition_options["scorer"] == "pixel_blur"
    assert "scorer" not in retrofit(vit, "quadtree", embedder="patch").config.partition_options


@pytest.mark.parametrize("patch", [16, 32])
def test_quadtree_retrofit_of_a_224_vit_keeps_derived_patch_sizes(patch):
    vit = _vit(224, patch_size=patch, num_classes=5, depth=1)
    if patch == 32:
        # 224 is 7 patches of 32: no quadtree level fits, and the quadtree would be the grid.
        with pytest.raises(AdaptokError, match=r"multiple of 2 x 32 = 64.*256x256"):
            retrofit(vit, "quadtree")
        vit = _vit(256, patch_size=32, num_classes=5, depth=1)
    size = 224 if patch == 16 else 256
    grid = (size // patch) ** 2
    model = retrofit(vit, "quadtree", partition_options={"budget": grid // 2 - 1}).eval()
    options = model.config.partition_options
    largest = 4 * patch if size % (4 * patch) == 0 else 2 * patch  # 16..32 at 224, 32..128 at 256
    assert options["min_patch"] == patch and options["max_patch"] == largest
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        logits, counts = model(images, return_counts=True)
        grid_logits = retrofit(vit, "grid").eval()(images)
    assert counts.tolist() == [grid // 2 - 1] * 2
    assert float((logits - grid_logits).abs().max()) > 1e-4  # not silently the grid


def test_partition_options_are_checked_when_the_model_is_built():
    vit = _vit(64, patch_size=8, num_classes=3)
    with pytest.raises(AdaptokError, match="budget 30 is not reachable"):
        retrofit(vit, "quadtree", partition_options={"budget": 30})
    with pytest.raises(AdaptokError, match="cannot partition the model's 64x64 images"):
        get_spec("quadtree").check({"min_patch": 8, "max_patch": 48}, 64, 3)


def test_retrofit_names_the_mistake_of_passing_a_model_name():
    with pytest.raises(AdaptokError, match=r"not its name.*timm\.create_model"):
        retrofit("vit_tiny_patch16_224")


def test_a_model_fed_the_wrong_channel_count_names_the_fix():
    model = build_model(dataclasses.replace(ModelConfig(image_size=32, patch_size=8)))
    with pytest.raises(AdaptokError, match="3-channel images, got 1 channels; repeat the grey"):
        model(torch.rand(1, 1, 32, 32))
