"""Token merging (ToMe) on timm ViTs, the baseline of the retrofit benchmarks: r = 0 is the ViT
itself, merging conserves patch mass, proportional attention and the matching step agree with
plain oracles, the final token count is the one asked for, and results are per-image and
deterministic."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from adaptok.errors import AdaptokError
from adaptok.models.tome import (
    MergedTokens,
    _block_forward,
    merge_schedule,
    merge_tokens,
    tome_features,
    tome_forward,
)

# The accuracy benchmark's small trunk; ViT-S/16; registers with average pooling; qk-norm with
# layer scale (shrunk where the test only needs the layout).
VITS = {
    "small-trunk": (
        "vit_tiny_patch16_224",
        dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, num_classes=10),
    ),
    "vit-s16-224": ("vit_small_patch16_224", dict(num_classes=10)),
    "registers-avg": (
        "vit_little_patch16_reg4_gap_256",
        dict(img_size=64, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_classes=10),
    ),
    "qknorm-layerscale": (
        "vit_tiny_patch16_224",
        dict(img_size=64, patch_size=8, depth=2, qk_norm=True, init_values=0.1, num_classes=10),
    ),
}


def _vit(name: str) -> nn.Module:
    """The ViT with every parameter randomised (seeded), so norms, biases, prefix tokens and
    positions all matter."""
    model_name, options = VITS[name]
    torch.manual_seed(0)
    vit = timm.create_model(model_name, pretrained=False, **options).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return vit


def _images(vit: nn.Module, batch: int = 3, seed: int = 2) -> torch.Tensor:
    side = vit.patch_embed.img_size[0]
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small() -> nn.Module:
    return _vit("small-trunk")


@pytest.mark.parametrize("name", sorted(VITS))
def test_no_merging_reproduces_timm_logits(name):
    vit = _vit(name)
    images = _images(vit, batch=2)
    patches = vit.patch_embed.num_patches
    with torch.no_grad():
        expected = vit(images)
        unmerged = [tome_forward(vit, images, r=0), tome_forward(vit, images, final_tokens=patches)]
        for got in unmerged:
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # Not vacuous: merging changes the logits, and the images differ.
        merged = tome_forward(vit, images, final_tokens=patches // 2)
    assert float((merged - expected).abs().max()) > 1e-4
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["small-trunk", "registers-avg", "vit-s16-224"])
@pytest.mark.parametrize("fraction", [0.5, 0.27])
def test_final_count_is_the_target_and_sizes_add_up_to_the_patches(name, fraction):
    vit = _vit(name)
    images = _images(vit, batch=2)
    patches = vit.patch_embed.num_patches
    prefix = vit.num_prefix_tokens
    target = round(fraction * patches)
    with torch.no_grad():
        x, size = tome_features(vit, images, final_tokens=target)
    assert x.shape == (2, prefix + target, vit.embed_dim)
    assert torch.equal(size[:, :prefix], torch.ones(2, prefix))  # prefix tokens never merge
    assert torch.equal(size[:, prefix:].sum(1), torch.full((2,), float(patches)))
    assert bool((size[:, prefix:] >= 1).all()) and float(size.max()) > 1


def test_constant_r_removes_r_per_block(small):
    with torch.no_grad():
        x, size = tome_features(small, _images(small), r=6)
    assert x.shape[1] == 1 + 64 - 4 * 6
    assert float(size[:, 1:].sum(1).min()) == 64


def test_schedule_spreads_merges_evenly_and_early():
    assert merge_schedule(196, 12, final_tokens=98) == (9, 9) + (8,) * 10
    assert merge_schedule(64, 4, final_tokens=32) == (8, 8, 8, 8)
    assert merge_schedule(64, 4, r=5) == (5, 5, 5, 5)
    # Where an even spread would leave a later block unable to reach the target (at most half
    # of a block's tokens merge), the earlier blocks merge more.
    assert merge_schedule(16, 3, final_tokens=2) == (8, 4, 2)
    for tokens, depth in [(196, 12), (64, 4), (17, 3), (5, 2)]:
        for final in range(tokens + 1):
            try:
                schedule = merge_schedule(tokens, depth, final_tokens=final)
            except AdaptokError:
                continue
            count = tokens
            for merges in schedule:
                assert 0 <= merges <= count // 2
                count -= merges
            assert count == final


def test_schedule_refuses_what_cannot_be_reached():
    with pytest.raises(AdaptokError, match="exactly one of r"):
        merge_schedule(64, 4)
    with pytest.raises(AdaptokError, match="exactly one of r"):
        merge_schedule(64, 4, r=2, final_tokens=30)
    with pytest.raises(AdaptokError, match="between 4 and 64"):
        merge_schedule(64, 4, final_tokens=3)
    with pytest.raises(AdaptokError, match=r"largest constant r .* is 12"):
        merge_schedule(64, 4, r=13)


def test_unsupported_pooling_is_refused():
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, global_pool="max"
    )
    with pytest.raises(AdaptokError, match="'token' and 'avg' pooling"):
        tome_forward(vit, torch.zeros(1, 3, 32, 32), r=0)


def _merge_oracle(x, size, keys, r, num_prefix):
    """Bipartite soft matching one image and one pair at a time, from the paper's description."""
    results = []
    for image in range(x.shape[0]):
        tokens = list(range(num_prefix, x.shape[1]))
        a_side, b_side = tokens[0::2], tokens[1::2]
        unit = keys[image] / keys[image].norm(dim=-1, keepdim=True)
        edges = []
        for a in a_side:
            scores = [float(unit[a] @ unit[b]) for b in b_side]
            best = max(range(len(b_side)), key=lambda j: (scores[j], -j))
            edges.append((scores[best], -a, a, b_side[best]))
        merged_away = {a: b for _, _, a, b in sorted(edges, reverse=True)[:r]}
        sums = {b: x[image, b] * size[image, b] for b in b_side}
        mass = {b: size[image, b].clone() for b in b_side}
        for a, b in merged_away.items():
            sums[b] = sums[b] + x[image, a] * size[image, a]
            mass[b] = mass[b] + size[image, a]
        order = list(range(num_prefix)) + [a for a in a_side if a not in merged_away]
        rows = [x[image, i] for i in order] + [sums[b] / mass[b] for b in b_side]
        sizes = [size[image, i] for i in order] + [mass[b] for b in b_side]
        results.append(MergedTokens(torch.stack(rows), torch.stack(sizes)))
    return MergedTokens(torch.stack([m.x for m in results]), torch.stack([m.size for m in results]))


@pytest.mark.parametrize(("count", "r"), [(16, 5), (15, 7), (9, 1)])
def test_merge_equals_the_per_pair_oracle(count, r):
    generator = torch.Generator().manual_seed(count)
    x = torch.randn(2, 1 + count, 6, generator=generator, dtype=torch.float64)
    keys = torch.randn(2, 1 + count, 4, generator=generator, dtype=torch.float64)
    size = torch.randint(1, 4, (2, 1 + count), generator=generator).double()
    size[:, 0] = 1
    got = merge_tokens(x, size, keys, r, num_prefix=1)
    expected = _merge_oracle(x, size, keys, r, num_prefix=1)
    torch.testing.assert_close(got.x, expected.x)
    torch.testing.assert_close(got.size, expected.size)
    with pytest.raises(AdaptokError, match="between 0 and half"):
        merge_tokens(x, size, keys, count // 2 + 1, num_prefix=1)


def _dense_block(block, x, size):
    """The block with explicit softmax(q k^T / sqrt(d) + log size) attention, no merging."""
    attn = block.attn
    batch, count, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, count, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = torch.log(size)[:, None, None, :].expand(-1, attn.num_heads, count, -1)
    weights = torch.softmax(q @ k.transpose(-1, -2) * attn.head_dim**-0.5 + bias, dim=-1)
    out = attn.proj((weights @ v).transpose(1, 2).reshape(batch, count, -1))
    x = x + block.ls1(out)
    return x + block.ls2(block.mlp(block.norm2(x)))


@pytest.mark.parametrize("name", ["small-trunk", "qknorm-layerscale"])
def test_proportional_attention_equals_a_dense_reference_with_an_explicit_bias(name):
    block = _vit(name).blocks[0].double()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, block.norm1.normalized_shape[0], generator=generator).double()
    size = torch.randint(1, 6, (2, 9), generator=generator).double()
    got = _block_forward(block, MergedTokens(x, size), 0, num_prefix=1, proportional=True)
    torch.testing.assert_close(got.x, _dense_block(block, x, size))
    assert torch.equal(got.size, size)


def test_a_merged_pair_of_equal_tokens_weighs_like_the_pair():
    # Two identical tokens, or one token of size 2: with proportional attention every other
    # token sees the same thing. Without it, the merged token would count once.
    block = _vit("small-trunk").blocks[1].double()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 128, generator=generator).double()
    pair = torch.cat([x[:, :2], x[:, 1:2], x[:, 2:]], 1)  # [cls, u, u, w, z]
    ones = torch.ones(1, 5).double()
    sized = torch.tensor([[1.0, 2.0, 1.0, 1.0]]).double()
    with torch.no_grad():
        expanded = _block_forward(block, MergedTokens(pair, ones), 0, 1, proportional=True).x
        merged = _block_forward(block, MergedTokens(x, sized), 0, 1, proportional=True).x
        plain = _block_forward(block, MergedTokens(x, sized), 0, 1, proportional=False).x
    torch.testing.assert_close(merged[:, [0, 2, 3]], expanded[:, [0, 3, 4]])
    assert float((plain[:, [0, 2, 3]] - expanded[:, [0, 3, 4]]).abs().max()) > 1e-6


@pytest.mark.parametrize("name", ["small-trunk", "registers-avg"])
def test_batch_independence_and_determinism(name):
    vit = _vit(name)
    images = _images(vit, batch=4)
    target = vit.patch_embed.num_patches // 2
    with torch.no_grad():
        batched = tome_forward(vit, images, final_tokens=target)
        again = tome_forward(vit, images, final_tokens=target)
        alone = torch.cat([tome_forward(vit, image[None], final_tokens=target) for image in images])
    assert torch.equal(batched, again)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_the_bias_skipped_before_the_first_merge_is_exactly_what_it_skips(small):
    # tome_features leaves out log(size) = 0 until a block has merged; with it everywhere the
    # result is the same, so the shortcut only saves work (and keeps r = 0 on timm's kernel).
    images = _images(small)
    with torch.no_grad():
        x = small.norm_pre(small._pos_embed(small.patch_embed(images)))
        state = MergedTokens(x, x.new_ones(x.shape[:2]))
        for block in small.blocks:
            state = _block_forward(block, state, 6, 1, proportional=True)
        expected = small.norm(state.x)
        got = tome_features(small, images, r=6)
    torch.testing.assert_close(got.x, expected, atol=1e-5, rtol=1e-5)
