"""Partitioner options declared once (`PartitionerSpec`) and read by every consumer: `partition`,
`adaptok tokenize` / `vectorize` / `train`, `build_model` and `retrofit`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import adaptok
from adaptok import AdaptokError, ModelConfig, build_model, partition
from adaptok.cli import vectorize as vectorize_cli
from adaptok.cli.main import build_parser, main
from adaptok.cli.tokenize import partition_options
from adaptok.cli.train import TRUNK_DEFAULTS, configs_from_args
from adaptok.models import EncoderConfig
from adaptok.partitioners import registry
from adaptok.partitioners.grid import grid_partition
from adaptok.partitioners.quadtree import valid_budgets
from adaptok.partitioners.registry import derive_options, get_spec, register_partitioner
from adaptok.partitioners.spec import NO_CAP, PartitionerSpec

TINY_TRUNK = ["--embed-dim", "32", "--depth", "1", "--heads", "2"]


@pytest.fixture
def picture(tmp_path):
    """A 256x256 PNG: two flat halves (dht without a cap: 2 regions)."""
    halves = np.zeros((256, 256, 3), dtype=np.uint8)
    halves[:, 128:] = 200
    path = tmp_path / "halves.png"
    Image.fromarray(halves).save(path)
    return path


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_every_builtin_method_declares_what_its_budget_means() -> None:
    meaning = {"grid": None, "quadtree": "exact", "dht": "cap", "slic": "target"}
    assert sorted(meaning) == adaptok.available_methods()
    for method, budget in meaning.items():
        spec = get_spec(method)
        assert (spec.name, spec.budget) == (method, budget)
        assert spec.function is registry.get_partitioner(method)
        assert (spec.none_means == NO_CAP) == (method == "dht")
    # the declared default counts are what partition does without a budget
    images = torch.rand(2, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    quadtree = partition(images, "quadtree")
    assert quadtree.counts.tolist() == [get_spec("quadtree").default_budget(128, 192, {})] * 2
    dht = partition(images, "dht")
    assert int(dht.counts.max()) <= get_spec("dht").default_budget(128, 192, {})
    assert get_spec("slic").default_budget(128, 192, {}) == get_spec("slic").defaults["budget"]
    # the other options and their defaults are the functions' own signatures
    assert get_spec("quadtree").defaults["scorer"] == "pixel_blur"
    assert get_spec("grid").defaults == {"patch_size": 16}


def test_a_model_derives_its_options_from_image_and_patch_size() -> None:
    assert derive_options("grid", 64, 8) == {"patch_size": 8}
    assert derive_options("quadtree", 224, 16) == {"budget": 97, "min_patch": 16, "max_patch": 32}
    assert derive_options("slic", 64, 8) == {"budget": 64}
    # dHT: a cap of half the grid's tokens (its image-level default, 114 at 64x64, would give a
    # model more tokens than its grid), found at 8 working pixels per patch side; None (no cap)
    # and a given cap are kept
    assert derive_options("dht", 64, 8) == {"budget": 32, "resolution": 1.0}
    assert derive_options("dht", 224, 16) == {"budget": 98, "resolution": 0.5}
    assert derive_options("dht", 64, 8, {"budget": None}) == {"budget": None, "resolution": 1.0}
    # the caller's options merge over the derived ones; both patch sizes given: nothing derived
    assert derive_options("quadtree", 64, 8, {"budget": 31}) == {
        "budget": 31, "min_patch": 8, "max_patch": 32,
    }  # fmt: skip
    explicit = {"min_patch": 8, "max_patch": 16}
    assert derive_options("quadtree", 64, 8, explicit) == explicit
    # one patch size given: the budget is derived for it (a valid one), as build_model checks
    for given in ({"max_patch": 16}, {"max_patch": 64}, {"min_patch": 16}):
        options = derive_options("quadtree", 64, 8, given)
        assert options.items() >= given.items()
        assert options["budget"] in valid_budgets(
            64, 64, min_patch=options["min_patch"], max_patch=options["max_patch"]
        )
    with pytest.raises(AdaptokError, match=r"multiple of 2 x 32 = 64.*256x256"):
        derive_options("quadtree", 224, 32)


@pytest.mark.parametrize("method", ["grid", "quadtree", "slic", "dht"])
def test_a_model_config_with_only_a_method_gets_the_options_the_command_line_derives(
    method: str,
) -> None:
    """`ModelConfig` derives the options itself, so a config made in Python builds the model
    `adaptok train` builds; derived options are a fixed point, so a stored config (a
    checkpoint's) rebuilds the same model."""
    args = ["train", "--method", method, "--image-size", "64", "--patch-size", "8", *TINY_TRUNK]
    cli_config, _ = configs_from_args(build_parser("train").parse_args(args))
    config = ModelConfig(method=method, image_size=64, patch_size=8, encoder=cli_config.encoder)
    assert config.partition_options == cli_config.partition_options
    assert config.partition_options == derive_options(method, 64, 8)
    assert config.partition_options != {}  # every built-in method derives something at 64 / 8
    assert ModelConfig.from_dict(config.to_dict()) == config
    tokenizer = build_model(config).tokenizer
    if method == "dht":
        assert tokenizer.call_options["budget"] == 32  # half the 8x8 grid, not "auto" (114)
    else:
        assert tokenizer.options == config.partition_options
    # given options merge over the derived ones, as on the command line
    given = ModelConfig(method=method, image_size=64, patch_size=8, partition_options={"x": 1})
    assert given.partition_options == {**config.partition_options, "x": 1}


def test_a_config_stored_before_options_were_derived_rebuilds_the_model_it_trained() -> None:
    """Checkpoints written before `ModelConfig` derived the options hold the options as given;
    one left out meant the partitioner's own default, which it keeps (a grid's patch size was
    already the config's)."""
    expected = {
        "dht": {"budget": "auto", "resolution": 1.0},
        "quadtree": {"budget": 13, "min_patch": 16, "max_patch": 64},
        "slic": {"budget": 196},
        "grid": {"patch_size": 8},
    }
    for method, options in expected.items():
        stored = {**ModelConfig(method=method).to_dict(), "partition_options": {}}
        if method == "quadtree":
            stored["partition_options"] = {"budget": 13}
        config = ModelConfig.from_dict(stored)
        assert config.partition_options == options, method
        assert dataclasses.replace(config, num_classes=3).partition_options == options  # kept
        assert ModelConfig.from_dict(config.to_dict()) == config
    model = build_model(ModelConfig.from_dict({**stored, "method": "dht", "partition_options": {}}))
    assert model.tokenizer.call_options["budget"] == "auto"


@pytest.mark.parametrize(
    ("method", "text", "expected"),
    [("dht", "100", 100), ("dht", "none", None), ("dht", "None", None), ("slic", "50", 50)],
)
def test_one_budget_spelling_means_the_same_in_tokenize_vectorize_and_train(
    method, text, expected, picture, monkeypatch
) -> None:
    tokenize_args = build_parser("tokenize").parse_args(
        ["tokenize", str(picture), "--method", method, "--budget", text]
    )
    assert partition_options(tokenize_args)["budget"] == expected

    seen = {}

    def fake_vectorize(source, method, *, budget, **options):
        seen["budget"] = budget
        return "<svg></svg>"

    monkeypatch.setattr(vectorize_cli, "vectorize", fake_vectorize)
    assert main(["vectorize", str(picture), "--method", method, "--budget", text, "-o",
                 str(picture.with_suffix(".svg"))]) == 0  # fmt: skip
    assert seen["budget"] == expected

    train_args = build_parser("train").parse_args(["train", "--method", method, "--budget", text])
    model_config, _ = configs_from_args(train_args)
    assert model_config.partition_options["budget"] == expected


@pytest.mark.parametrize(
    ("method", "text", "message"),
    [
        ("quadtree", "none", "--budget none (no cap) is for methods whose budget is a cap (dht)"),
        ("slic", "none", "--budget none (no cap) is for methods whose budget is a cap (dht)"),
        ("grid", "100", "--method grid does not take --budget; drop it"),
        ("dht", "many", "--budget takes a whole number or 'none' (no cap), got 'many'"),
        ("quadtree", "many", "--budget takes a whole number, got 'many'"),
        ("dht", "0", "--budget must be a positive integer (at most N regions), got 0"),
    ],
)
def test_a_refused_budget_spelling_is_refused_alike_by_every_command(
    method, text, message, picture, tmp_path, capsys
) -> None:
    for argv in (
        ["tokenize", str(picture), "-o", str(tmp_path / "t.png")],
        ["vectorize", str(picture), "-o", str(tmp_path / "v.svg")],
        ["train", "--dataset", "shapes", "--out", str(tmp_path / "run")],
    ):
        assert main([*argv, "--method", method, "--budget", text]) == 2, argv[0]
        assert message in _error(capsys), argv[0]
    assert not (tmp_path / "run").exists()


def test_an_unreachable_quadtree_budget_is_refused_on_the_command_line_as_in_the_api(
    picture, tmp_path, capsys
) -> None:
    image = adaptok.io.load_image(picture)
    with pytest.raises(AdaptokError) as api:
        partition(image, "quadtree", budget=101)
    assert "try 100 or 103" in str(api.value)
    for command, target in (("tokenize", "t.png"), ("vectorize", "v.svg")):
        argv = [command, str(picture), "--method", "quadtree", "--budget", "101"]
        assert main([*argv, "-o", str(tmp_path / target)]) == 1  # the file is named and skipped
        assert str(api.value) in capsys.readouterr().err
    # train: at the model's 64x64 images and derived patches 8..32, as the API refuses it
    args = build_parser("train").parse_args(["train", "--method", "quadtree", "--budget", "33"])
    model_config, _ = configs_from_args(args)
    with pytest.raises(AdaptokError) as api:
        partition(torch.rand(1, 3, 64, 64), "quadtree", budget=33, min_patch=8, max_patch=32)
    with pytest.raises(AdaptokError) as built:
        build_model(model_config)
    assert "try 31 or 34" in str(api.value)
    assert str(api.value) in str(built.value)


def test_train_budget_none_with_dht_builds_a_model_without_a_cap() -> None:
    args = build_parser("train").parse_args(
        ["train", "--method", "dht", "--budget", "none", "--image-size", "32", *TINY_TRUNK]
    )
    model_config, _ = configs_from_args(args)
    assert model_config.partition_options["budget"] is None
    model = build_model(model_config).eval()
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        uncapped = model(adaptok.ops.normalize(noise), return_counts=True)[1]
    capped = build_model(dataclasses.replace(model_config, partition_options={"budget": 4}))
    with torch.no_grad():
        assert capped.eval()(adaptok.ops.normalize(noise), return_counts=True)[1].item() == 4
    assert uncapped.item() > 4


@pytest.mark.parametrize("budget", [0, -3, 2.5, "100", True])
def test_build_model_refuses_a_bad_dht_budget(budget) -> None:
    config = ModelConfig(method="dht", image_size=32, partition_options={"budget": budget})
    with pytest.raises(AdaptokError, match="cannot partition the model's 32x32 images: budget"):
        build_model(config)


def test_build_model_refuses_bad_dht_call_options() -> None:
    for options, message in (
        ({"criterion": "aicx"}, "unknown information criterion 'aicx'"),
        ({"sample_budget": "yes"}, "sample_budget must be True or False"),
    ):
        with pytest.raises(AdaptokError, match=message):
            build_model(ModelConfig(method="dht", image_size=32, partition_options=options))


def test_a_partitioner_registered_without_a_spec_works_everywhere(
    scratch_registry, picture, tmp_path, capsys
) -> None:
    def squares(images, *, budget: int = 4):
        """Ignores what its budget means: only the wiring is tested."""
        return grid_partition(images, patch_size=images.shape[-1] // 4)

    register_partitioner("squares", squares)
    spec = get_spec("squares")
    assert (spec.name, spec.budget, spec.function) == ("squares", "count", squares)
    assert partition(torch.rand(1, 3, 32, 32), "squares", budget=9).num_regions == 16
    assert derive_options("squares", 64, 8, {"budget": 7}) == {"budget": 7}
    assert main(["tokenize", str(picture), "--method", "squares", "--budget", "5", "-o",
                 str(tmp_path / "s.png")]) == 0  # fmt: skip
    assert main(["vectorize", str(picture), "--method", "squares", "-o",
                 str(tmp_path / "s.svg")]) == 0  # fmt: skip
    assert main(["tokenize", str(picture), "--method", "squares", "--budget", "none"]) == 2
    assert "--budget none (no cap) is for methods whose budget is a cap" in _error(capsys)
    args = build_parser("train").parse_args(["train", "--method", "squares", "--budget", "3"])
    model_config, _ = configs_from_args(args)
    model = build_model(dataclasses.replace(model_config, encoder=EncoderConfig(depth=1)))
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)
    # a partitioner without a budget is refused one on the command line, as grid is
    register_partitioner("plain", lambda images: grid_partition(images, patch_size=8))
    assert get_spec("plain").budget is None
    assert main(["tokenize", str(picture), "--method", "plain", "--budget", "5"]) == 2
    assert "--method plain does not take --budget" in _error(capsys)


def test_a_registered_spec_declares_a_cap_with_no_cap_spelled_none(
    scratch_registry, picture, capsys
) -> None:
    def capped(images, *, budget: int | None = 4):
        return grid_partition(images, patch_size=8 if budget is None else 16)

    register_partitioner("capped", capped, spec=PartitionerSpec(budget="cap", none_means=NO_CAP))
    args = build_parser("tokenize").parse_args(
        ["tokenize", str(picture), "--method", "capped", "--budget", "none"]
    )
    assert partition_options(args) == {"budget": None}
    with pytest.raises(AdaptokError, match="none_means must be one of"):
        PartitionerSpec(budget=None, none_means=NO_CAP)
    with pytest.raises(AdaptokError, match="budget must be one of exact, cap, target, count"):
        PartitionerSpec(budget="roughly")
    with pytest.raises(AdaptokError, match=r"spec must be an adaptok\.partitioners\.spec"):
        register_partitioner("bad", capped, spec={"budget": "cap"})


def test_trunk_defaults_have_one_source() -> None:
    args = build_parser("train").parse_args(["train"])
    model_config, _ = configs_from_args(args)
    assert model_config.encoder == EncoderConfig()
    assert (model_config.patch_size, model_config.image_size) == (8, 64)
    assert TRUNK_DEFAULTS["depth"] == EncoderConfig().depth


def test_a_backbone_sets_the_patch_size_itself() -> None:
    argv = ["train", "--backbone", "vit_small_patch14_dinov2", "--image-size", "518"]
    model_config, _ = configs_from_args(build_parser("train").parse_args(argv))
    assert model_config.patch_size is None and model_config.partition_options == {}
    model = build_model(model_config)  # timm builds it with pretrained=False (about 1 s)
    assert (model.config.patch_size, model.config.grid) == (14, 37)
    assert model.config.partition_options == {"patch_size": 14}
    with pytest.raises(AdaptokError, match="patch_size=None leaves the patch size to a backbone"):
        ModelConfig(patch_size=None)
