"""Masked encoder, heads and AdaptiveViT: the padded batch against a per-image oracle, gradients,
determinism, overfitting a tiny batch, bad input."""

from __future__ import annotations

import pytest
import torch

from adaptok.errors import AdaptokError
from adaptok.models import (
    AdaptiveViT,
    ClassificationHead,
    DenseHead,
    EncoderConfig,
    MaskedEncoder,
    ModelConfig,
    PartitionTokenizer,
    build_model,
)

TINY = EncoderConfig(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)


def _padded_batch(lengths: list[int], dim: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    longest = max(lengths)
    x = torch.randn(len(lengths), longest, dim, generator=generator, dtype=dtype)
    valid = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    return x, valid


def test_masked_attention_equals_per_sample_loop_values_and_gradients():
    torch.manual_seed(0)
    encoder = MaskedEncoder(TINY).double().eval()
    lengths = [5, 2, 7]
    x, valid = _padded_batch(lengths, TINY.embed_dim)
    x.requires_grad_(True)
    out = encoder(x, valid)
    weights = torch.randn_like(out)  # a random loss so every output element matters
    (out * weights * valid[..., None]).sum().backward()
    grad_x = x.grad.clone()
    grad_params = {n: p.grad.clone() for n, p in encoder.named_parameters()}

    # Oracle: every image alone, unpadded, no mask.
    encoder.zero_grad()
    x_alone = x.detach().clone().requires_grad_(True)
    for b, length in enumerate(lengths):
        alone = encoder(x_alone[b : b + 1, :length])
        torch.testing.assert_close(out[b : b + 1, :length], alone)
        (alone * weights[b : b + 1, :length]).sum().backward()
    torch.testing.assert_close(grad_x, x_alone.grad)
    for name, parameter in encoder.named_parameters():
        torch.testing.assert_close(grad_params[name], parameter.grad, msg=name)
    # Padding rows never influence real tokens: their gradient is exactly zero.
    assert bool((grad_x[~valid] == 0).all())


def test_encoder_full_batch_uses_no_mask_and_matches_masked():
    encoder = MaskedEncoder(TINY).double().eval()
    x, _ = _padded_batch([4, 4], TINY.embed_dim)
    all_valid = torch.ones(2, 4, dtype=torch.bool)
    torch.testing.assert_close(encoder(x, all_valid), encoder(x))


def test_encoder_bad_input():
    encoder = MaskedEncoder(TINY)
    with pytest.raises(AdaptokError, match="embed_dim"):
        encoder(torch.zeros(1, 3, 16))
    with pytest.raises(AdaptokError, match="valid"):
        encoder(torch.zeros(1, 3, 32), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(AdaptokError, match="divisible"):
        MaskedEncoder(EncoderConfig(embed_dim=30, depth=1, num_heads=4))


def test_classification_head_avg_pool_ignores_padding():
    head = ClassificationHead(embed_dim=8, num_classes=3, pool="avg").double()
    x, valid = _padded_batch([3, 5], 8)
    x = x.clone()
    logits = head(x, valid)
    x[~valid] = 1e6  # garbage in the padding must not change anything
    torch.testing.assert_close(head(x, valid), logits)
    expected = head.fc(x[0, 1:3].mean(0))
    torch.testing.assert_close(logits[0], expected)


def _dht_model(task: str = "classification") -> AdaptiveViT:
    torch.manual_seed(0)
    config = ModelConfig(
        method="dht",
        task=task,
        num_classes=4,
        image_size=16,
        patch_size=4,
        encoder=TINY,
        partition_options={"budget": 40, "weights": "none"},
    )
    return build_model(config).eval()


def _images(batch: int = 3, size: int = 16) -> torch.Tensor:
    """Images of different complexity (nearly flat, two halves, noise), so token counts differ.
    (No exactly flat image: its similarities all tie and float noise would pick the merges.)"""
    generator = torch.Generator().manual_seed(7)
    images = torch.full((3, 3, size, size), 0.3)
    images += 0.05 * torch.rand(3, 3, size, size, generator=generator)
    images[1, :, :, size // 2 :] += 0.6
    images[2] = torch.rand(3, size, size, generator=generator)
    return images[:batch]


def test_adaptive_vit_padded_batch_equals_images_alone_and_is_deterministic():
    model = _dht_model()
    images = _images()
    with torch.no_grad():
        output = model.forward_output(images)
        alone = torch.cat([model(images[i : i + 1]) for i in range(images.shape[0])])
        again = model(images)
    counts = output.partition.counts
    assert len(set(counts.tolist())) > 1, "test needs images with different token counts"
    assert output.valid.shape == (3, 1 + int(counts.max()))
    torch.testing.assert_close(output.logits, alone, rtol=1e-5, atol=1e-5)
    assert torch.equal(output.logits, again)


@pytest.mark.parametrize(
    ("method", "options"),
    [("slic", {"budget": 12}), ("quadtree", {"budget": 10, "min_patch": 4, "max_patch": 16})],
)
def test_frozen_partitioners_see_the_pixels_behind_normalised_inputs(method, options):
    """Models take normalised images (as training gives them); their partitioners get the
    [0, 1] pixels, as `adaptok.partition` would (SLIC refused normalised values outright)."""
    from adaptok import partition
    from adaptok.ops import normalize

    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    config = ModelConfig(method=method, image_size=32, patch_size=4, encoder=TINY,
                         partition_options=options)  # fmt: skip
    model = build_model(config).eval()
    with torch.no_grad():
        output = model.forward_output(normalize(pixels))
    expected = partition(pixels, method, **options)
    assert torch.equal(output.partition.labels, expected.labels)
    assert torch.isfinite(output.logits).all()
    with pytest.raises(AdaptokError, match="drop the input_space option"):
        PartitionTokenizer("dht", input_space="imagenet")


def test_dense_head_scatters_each_tokens_logits_to_its_region():
    model = _dht_model("dense")
    images = _images(2)
    with torch.no_grad():
        output = model.forward_output(images)
        token_logits = model.head.fc(output.features[:, 1:])
    assert output.logits.shape == (2, 4, 16, 16)
    labels = output.partition.labels
    tokens = output.tokens
    for b in range(2):  # oracle: a loop over tokens
        for t in range(tokens.patch_valid.shape[1]):
            if not tokens.patch_valid[b, t]:
                continue
            inside = labels[b] == tokens.region_index[b, t]
            expected = token_logits[b, t][:, None].expand(-1, int(inside.sum()))
            torch.testing.assert_close(output.logits[b][:, inside], expected)


def test_model_config_rejects_bad_values():
    with pytest.raises(AdaptokError, match="unknown method"):
        ModelConfig(method="hexagons")
    with pytest.raises(AdaptokError, match="set backbone too"):  # never silently ignored
        ModelConfig(backbone_weights="vit.pth")
    with pytest.raises(AdaptokError, match="multiple of patch_size"):
        ModelConfig(image_size=30, patch_size=8)
    with pytest.raises(AdaptokError, match="unknown model config field"):
        ModelConfig.from_dict({"method": "grid", "colour": "red"})
    config = ModelConfig(method="quadtree", partition_options={"budget": 7})
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_dense_head_checks_shapes():
    with pytest.raises(AdaptokError, match="num_classes"):
        DenseHead(embed_dim=8, num_classes=0)


def test_deterministic_budget_in_training_matches_eval_partitions_and_keeps_gradients():
    model = _dht_model()
    # Fewer regions than found: the budget rule decides. sample_budget is off by default.
    model.tokenizer.call_options["budget"] = 6
    assert model.tokenizer.call_options["sample_budget"] is False
    images = _images()
    with torch.no_grad():
        evaluated = model.eval().forward_output(images).partition
    model.train()
    trained = model.forward_output(images)
    assert torch.equal(trained.partition.labels, evaluated.labels)
    assert model.tokenizer.tokenizer.training  # the wrapped tokenizer's mode is restored
    trained.logits.sum().backward()
    grads = [p.grad for p in model.tokenizer.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_images_beyond_the_learned_position_table_are_refused() -> None:
    # A 64x64 model fed 128x128 images would give three quarters of its tokens the border's
    # position; smaller images and size-free positions (sincos) are fine.
    learned = build_model(
        ModelConfig(method="grid", image_size=64, patch_size=16, position="learned")
    )
    learned.eval()
    with torch.no_grad():
        assert learned(torch.rand(1, 3, 64, 64)).shape == (1, 10)
        assert learned(torch.rand(1, 3, 32, 48)).shape == (1, 10)
        with pytest.raises(AdaptokError, match="covers 64x64 pixels"):
            learned(torch.rand(1, 3, 128, 64))
        sincos = build_model(ModelConfig(method="grid", image_size=64, patch_size=16)).eval()
        assert sincos(torch.rand(1, 3, 128, 128)).shape == (1, 10)
