"""Retrofitting timm ViTs: grid tokens reproduce the original logits; weights are remapped and
loaded strictly; local checkpoints load with weights_only; bad input is refused clearly."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from adaptok.errors import AdaptokError
from adaptok.models import (
    ModelConfig,
    PartitionTokenizer,
    build_model,
    export_timm,
    remap_timm_state_dict,
    retrofit,
)
from adaptok.models.retrofitting import load_timm_weights
from adaptok.partitioners import registry
from adaptok.partitioners.dht import DHTTokenizer
from adaptok.partitioners.grid import grid_partition
from adaptok.weights import read_state_dict as load_weights
from conftest import random_vit


def _vit(img_size: int = 224, **kwargs) -> nn.Module:
    return random_vit(img_size, **kwargs)


@pytest.fixture(scope="module")
def vit224() -> nn.Module:
    return _vit()


@pytest.fixture(scope="module")
def images224() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))


def test_grid_dht_style_reproduces_timm_logits(vit224, images224):
    model = retrofit(vit224, "grid", embedder="dht").eval()
    with torch.no_grad():
        expected = vit224(images224)
        got = model(images224)
    assert got.shape == expected.shape == (2, 1000)
    assert float((got - expected).abs().max()) < 1e-4
    # The comparison is not vacuous: images give different logits.
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3


def test_defaults_reproduce_timm_logits(vit224, images224):
    # The user's first call: no options. The ViT's learned position table must be kept.
    model = retrofit(vit224).eval()
    assert model.embedder.position == "learned"
    with torch.no_grad():
        difference = (model(images224) - vit224(images224)).abs().max()
    assert float(difference) < 1e-4


def test_sincos_positions_are_an_explicit_choice_that_drops_the_table(vit224, images224):
    model = retrofit(vit224, "grid", position="sincos").eval()
    assert model.embedder.pos_embed is None
    with torch.no_grad():
        difference = (model(images224) - vit224(images224)).abs().max()
    assert float(difference) > 1e-3


def test_quadtree_defaults_sample_the_vits_own_table():
    vit = _vit(img_size=64)
    model = retrofit(vit, "quadtree").eval()
    torch.testing.assert_close(model.embedder.pos_embed, vit.pos_embed[:, 1:])
    # Every patch split to the ViT's patch size (budget 4 + 3 * 4): exactly the ViT again.
    full = retrofit(vit, "quadtree", partition_options={"budget": 16, "min_patch": 16,
                                                        "max_patch": 32}).eval()  # fmt: skip
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert float((full(images) - vit(images)).abs().max()) < 1e-4


def test_remap_is_a_complete_strict_state_dict_with_timm_weights(vit224):
    model = retrofit(vit224, "grid", embedder="dht")
    state = remap_timm_state_dict(vit224, model)
    assert set(state) == set(model.state_dict())
    torch.testing.assert_close(
        state["encoder.blocks.3.attn.qkv.weight"], vit224.blocks[3].attn.qkv.weight
    )
    torch.testing.assert_close(state["head.fc.weight"], vit224.head.weight)
    torch.testing.assert_close(
        state["embedder.proj.weight"][:, : 3 * 16 * 16], vit224.patch_embed.proj.weight.flatten(1)
    )
    # The model shares no storage with the timm model: training one leaves the other intact.
    assert model.encoder.blocks[0].attn.qkv.weight.data_ptr() != (
        vit224.blocks[0].attn.qkv.weight.data_ptr()
    )
    state.pop("encoder.norm.weight")
    with pytest.raises(RuntimeError, match=r"encoder\.norm\.weight"):
        model.load_state_dict(state, strict=True)


def test_resized_position_histogram_is_timms_resampled_table(vit224):
    # p = 7 instead of 14: the position columns are the table resized exactly as timm does.
    model = retrofit(vit224, "grid", embedder="dht", position_grid=7).eval()
    resized = resample_abs_pos_embed(vit224.pos_embed, (7, 7), num_prefix_tokens=1)[0, 1:]
    columns = model.embedder.proj.weight[:, 3 * 16 * 16 : 3 * 16 * 16 + 49]
    torch.testing.assert_close(columns, resized.T, atol=1e-6, rtol=0)


def test_dense_retrofit_keeps_the_trunk_and_predicts_per_pixel():
    vit = _vit(img_size=32)
    model = retrofit(vit, "grid", task="dense", num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_output(images).features
        want = vit.forward_features(images)
    assert logits.shape == (2, 3, 32, 32)
    torch.testing.assert_close(features, want, atol=1e-4, rtol=0)
    # Every pixel of a 16-pixel patch gets its token's logits.
    assert bool((logits[:, :, :16, :16] == logits[:, :, :1, :1]).all())


def test_retrofit_takes_a_ready_tokenizer_with_the_options_of_the_call():
    vit = _vit(img_size=32)
    tokenizer = DHTTokenizer(input_space="imagenet")
    model = retrofit(vit, "dht", tokenizer=tokenizer, partition_options={"budget": 3}).eval()
    assert model.tokenizer.tokenizer is tokenizer
    assert model.tokenizer.call_options["budget"] == 3
    with torch.no_grad():
        _, counts = model(torch.randn(2, 3, 32, 32), return_counts=True)
    assert counts.tolist() == [3, 3]  # the budget reaches every call, not the tokenizer's "auto"
    with pytest.raises(AdaptokError, match='input_space="imagenet"'):
        retrofit(vit, "dht", tokenizer=DHTTokenizer())
    with pytest.raises(AdaptokError, match="compactness build a dHT tokenizer"):
        retrofit(vit, "dht", tokenizer=tokenizer, partition_options={"compactness": 0.5})
    with pytest.raises(AdaptokError, match="not 'quadtree'"):
        retrofit(vit, "quadtree", tokenizer=PartitionTokenizer("grid", patch_size=16))


def test_registered_partitioners_reach_retrofit_and_build_model(monkeypatch):
    def stripes(images, *, width: int = 8):
        return grid_partition(images, patch_size=width)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_partitioner("stripes", stripes)  # no spec: the default one
    vit = _vit(img_size=32)
    model = retrofit(vit, "stripes", partition_options={"width": 16}).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert float((model(images) - vit(images)).abs().max()) < 1e-4
    built = build_model(ModelConfig(method="stripes", image_size=32, patch_size=8,
                                    partition_options={"width": 8}))  # fmt: skip
    assert built(images).shape == (1, 10)
    with pytest.raises(AdaptokError, match="unknown option"):
        retrofit(vit, "stripes", partition_options={"height": 16})


def test_construction_options_never_silently_drop_trained_weights():
    vit = _vit(img_size=32)
    for options in ({"compare": "total"}, {"weights": "default", "compactness": 0.1}):
        with pytest.raises(AdaptokError, match="cannot be applied to trained weights"):
            retrofit(vit, "dht", partition_options=options)
    with pytest.raises(AdaptokError, match=r"missing-tokenizer\.pt"):
        retrofit(vit, "dht", partition_options={"weights": "missing-tokenizer.pt"})


def test_quadtree_retrofit_uses_fewer_tokens_and_runs():
    vit = _vit(img_size=64)
    model = retrofit(vit, "quadtree", partition_options={"budget": 7, "min_patch": 16,
                                                         "max_patch": 32})  # fmt: skip
    output = model.eval().forward_output(torch.randn(2, 3, 64, 64))
    assert output.logits.shape == (2, 1000)
    assert output.partition.counts.tolist() == [7, 7]


def test_dht_retrofit_end_to_end_gradients_reach_the_tokenizer():
    vit = _vit(img_size=32)
    with pytest.warns(UserWarning, match="initialised afresh"):
        options = {"budget": 12, "weights": "none"}
        model = retrofit(vit, "dht", num_classes=5, partition_options=options)
    model.train()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits = model(images)
    assert logits.shape == (2, 5)
    logits.square().sum().backward()
    tokenizer_grads = [p.grad for p in model.tokenizer.parameters() if p.requires_grad]
    assert tokenizer_grads and any(
        g is not None and float(g.abs().sum()) > 0 for g in tokenizer_grads
    )
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert bool(torch.isfinite(parameter.grad).all()), name


def test_export_timm_gives_back_the_trained_model_as_a_timm_vit():
    """Retrofit, change every weight (as training would), export into a fresh ViT: the exported
    ViT gives the model's logits, and retrofitting it again gives the same model."""
    vit = _vit(img_size=32, num_classes=4, reg_tokens=2)
    model = retrofit(vit).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    fresh = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4, reg_tokens=2
    ).eval()
    exported = export_timm(model, fresh)
    assert exported is fresh
    images = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.no_grad():
        expected = model(images)
        assert float((exported(images) - expected).abs().max()) < 1e-4
        assert float((exported(images) - vit(images)).abs().max()) > 1e-2  # weights did change
        again = retrofit(exported).eval()
        assert float((again(images) - expected).abs().max()) < 1e-4


def test_avg_pooled_vit_with_fc_norm_and_no_final_norm_round_trips():
    """timm's default for global_pool="avg" (MAE-finetuned ViTs) drops the final norm and
    normalises the pooled token instead (fc_norm): retrofit reproduces it and exports back."""
    vit = _vit(img_size=32, num_classes=4, class_token=False, global_pool="avg")
    assert isinstance(vit.norm, nn.Identity) and isinstance(vit.fc_norm, nn.LayerNorm)
    model = retrofit(vit).eval()
    assert isinstance(model.encoder.norm, nn.Identity)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert float((model(images) - vit(images)).abs().max()) < 1e-4
        fresh = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4,
            class_token=False, global_pool="avg",
        )  # fmt: skip
        exported = export_timm(model, fresh.eval())
        assert float((exported(images) - vit(images)).abs().max()) < 1e-4


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"class_token": False, "global_pool": "avg"},  # fc_norm, no final norm
        {"global_pool": "avg", "fc_norm": False},
        {"reg_tokens": 2},
        {"no_embed_class": True, "init_values": 0.1, "qk_norm": True},
    ],
)
@pytest.mark.parametrize("method", ["grid", "dht"])
def test_the_config_of_a_retrofit_rebuilds_it(layout, method):
    # model.config is what checkpoints store: build_model must give back the same structure,
    # whatever prefix tokens, pooling and norms the ViT had (the embedder too: no LayerNorm
    # after a timm ViT's embedding).
    vit = _vit(img_size=32, num_classes=4, **layout)
    model = retrofit(vit, method).eval()
    rebuilt = build_model(model.config).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))


def test_export_timm_refuses_what_timm_cannot_hold():
    vit = _vit(img_size=32, num_classes=4)
    for model, match in (
        (retrofit(vit, position="sincos"), "learned positions"),
        (retrofit(vit, "grid", embedder="dht"), "learned positions"),
        (retrofit(vit, task="dense"), "dense head"),
    ):
        with pytest.raises(AdaptokError, match=match):
            export_timm(model, _vit(img_size=32, num_classes=4))
    model = retrofit(vit)
    with pytest.raises(AdaptokError, match="img_size and patch_size"):
        export_timm(model, _vit(img_size=64, num_classes=4))
    with pytest.raises(AdaptokError, match="does not have the model's shape"):
        export_timm(model, _vit(img_size=32, num_classes=7))


def test_local_timm_checkpoint_round_trip(tmp_path, vit224):
    path = tmp_path / "vit.pth"
    torch.save(vit224.state_dict(), path)
    fresh = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    load_timm_weights(fresh, path)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(fresh(image), vit224(image))


def test_backbone_config_with_local_weights_matches_retrofit(tmp_path):
    vit = _vit(img_size=32, num_classes=4)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": vit.state_dict()}, path)
    config = ModelConfig(method="grid", embedder="dht", image_size=32, num_classes=4,
                         backbone="vit_tiny_patch16_224", backbone_weights=str(path))  # fmt: skip
    model = build_model(config).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert float((model(image) - vit(image)).abs().max()) < 1e-4
    assert model.config.patch_size == 16


def test_missing_and_unsafe_weights_files_raise_clearly(tmp_path):
    with pytest.raises(AdaptokError, match=r"nowhere\.pth"):
        load_weights(tmp_path / "nowhere.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": nn.Linear(2, 2)}, unsafe)  # a pickled module: refused by weights_only
    with pytest.raises(AdaptokError, match="weights-only"):
        load_weights(unsafe)


def test_unsupported_models_raise():
    with pytest.raises(AdaptokError, match="cannot retrofit"):
        retrofit(nn.Linear(3, 3))
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1)
    with pytest.raises(AdaptokError, match="distillation token"):
        retrofit(distilled)
    # refused by the ModelConfig retrofit makes, as ModelConfig(method="voronoi") is
    with pytest.raises(AdaptokError, match="unknown method 'voronoi'; choose one of: dht"):
        retrofit(_vit(img_size=32), "voronoi")
