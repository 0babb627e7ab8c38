"""The Python API takes what the command line takes: any image size (one documented policy),
the image forms of `partition` in `extract_tokens`, and numpy / torch integer scalars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import adaptok
from adaptok import AdaptokError
from adaptok.cli.main import main
from adaptok.io import pad_to_multiple, save_image
from adaptok.regions import check_partition
from adaptok.validate import as_int, check_int
from conftest import photo


@pytest.mark.parametrize(
    ("method", "options", "multiple"),
    [
        ("grid", {"patch_size": 16}, 16),
        ("quadtree", {"budget": 7 * 10 + 3 * 10, "min_patch": 16, "max_patch": 64}, 64),
    ],
)
def test_api_takes_any_size_by_padding_and_cropping_back(method, options, multiple) -> None:
    image = photo("coffee", (400, 600))  # neither a multiple of 16 (600) nor of 64
    part = adaptok.partition(image, method, **options)
    check_partition(part)
    assert part.image_size == (400, 600)
    # oracle: partition the padded copy, cut its label map at the image's border
    padded = adaptok.partition(pad_to_multiple(image, multiple), method, **options)
    cut = padded.labels[:, :400, :600]
    inside = padded.area.new_zeros(padded.num_regions).index_add_(
        0, cut.flatten(), torch.ones_like(cut.flatten())
    )
    assert part.num_regions == int((inside > 0).sum())  # regions wholly in the padding go
    assert torch.equal(part.labels, torch.unique(cut, return_inverse=True)[1].view_as(cut))


def test_api_and_tokenize_give_the_same_tokens_on_any_size(tmp_path: Path, capsys) -> None:
    image = photo("coffee", (100, 150))
    save_image(image[0], tmp_path / "photo.png")
    for method, flags, options in [
        ("grid", [], {}),
        ("quadtree", ["--budget", "26", "--max-patch", "32"], {"budget": 26, "max_patch": 32}),
    ]:
        argv = ["tokenize", str(tmp_path / "photo.png"), "--method", method, *flags]
        assert main([*argv, "-o", str(tmp_path / f"{method}.png")]) == 0
        printed = capsys.readouterr().out
        part = adaptok.partition(tmp_path / "photo.png", method, **options)
        assert f": {part.num_regions} tokens ({method})" in printed
        assert "padded 100x150 ->" in printed


def test_quadtree_budget_on_a_padded_size_names_both_sizes() -> None:
    with pytest.raises(
        AdaptokError,
        match=r"budget 101 is not reachable \(budgets are 70 \+ 3j for a 400x600 image, padded "
        r"to 448x640 \(a multiple of max_patch 64\)\); try 100 or 103",
    ):
        adaptok.partition(torch.rand(1, 3, 400, 600), "quadtree", budget=101)


@pytest.mark.parametrize("budget", [np.int64(100), np.int32(100), torch.tensor(100), np.array(100)])
def test_integer_scalars_of_numpy_and_torch_are_budgets(budget) -> None:
    images = torch.rand(1, 3, 256, 256)
    expected = adaptok.partition(images, "quadtree", budget=100)
    assert torch.equal(adaptok.partition(images, "quadtree", budget=budget).labels, expected.labels)
    assert adaptok.partition(images, "dht", budget=budget).num_regions <= 100
    assert adaptok.partition(images, "grid", patch_size=np.int64(32)).num_regions == 64


@pytest.mark.parametrize(
    "value", [torch.tensor(2.0), torch.tensor([100]), torch.tensor(True), np.bool_(True), 2.5]
)
def test_what_is_not_an_integer_scalar_stays_refused(value) -> None:
    assert as_int(value) is value
    with pytest.raises(AdaptokError, match="must be a positive integer"):
        check_int("budget", value)


def test_extract_tokens_takes_the_image_forms_that_partition_takes(tmp_path: Path) -> None:
    array = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    part = adaptok.partition(array, "grid")
    from_tensor = adaptok.extract_tokens(adaptok.io.as_images(array), part)
    for form in (array, torch.from_numpy(array).permute(2, 0, 1)):  # numpy HWC, uint8 CHW
        tokens = adaptok.extract_tokens(form, part)
        torch.testing.assert_close(tokens.patches, from_tensor.patches)
    chw = adaptok.io.as_images(array)[0]
    torch.testing.assert_close(adaptok.extract_tokens(chw, part).patches, from_tensor.patches)
