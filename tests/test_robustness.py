"""Every image entry point against the forms and mistakes users bring (one table for all)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adaptok
from adaptok import AdaptokError
from adaptok.io import FLAT_SAMPLE, as_images, load_image, sample_image
from adaptok.partitioners.dht import dht_partition
from conftest import photo

# (name, call): every public entry point that takes images.
ENTRY_POINTS = {
    "grid": lambda x, **kw: adaptok.partition(x, method="grid", patch_size=8, **kw),
    "quadtree": lambda x, **kw: adaptok.partition(
        x, method="quadtree", budget=7, min_patch=8, max_patch=16, **kw
    ),
    "slic": lambda x, **kw: adaptok.partition(x, method="slic", budget=8, **kw),
    "dht": lambda x, **kw: adaptok.partition(x, method="dht", budget=8, **kw),
    "vectorize": lambda x, **kw: adaptok.vectorize(x, "grid", patch_size=8, **kw),
}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return photo("astronaut", (32, 32))


def _png(path: Path, array: np.ndarray, **save) -> Path:
    Image.fromarray(array).save(path, **save)
    return path


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_accepted_forms_give_the_same_result(entry: str, image: torch.Tensor, tmp_path: Path):
    call = ENTRY_POINTS[entry]
    reference = call(image)
    as_uint8 = (image[0] * 255).round().byte()
    as_numpy = as_uint8.permute(1, 2, 0).numpy()
    forms = {
        "[C, H, W]": image[0],
        "float64": image.double(),
        "numpy uint8 HxWx3": as_numpy,
        "PIL": Image.fromarray(as_numpy),
        "path": _png(tmp_path / "photo.png", as_numpy),
    }
    quantised = call(as_uint8.float()[None] / 255)
    for name, form in forms.items():
        result = call(form)
        want = reference if name in ("[C, H, W]", "float64") else quantised
        if entry == "vectorize":
            assert result == want, name
        else:
            assert torch.equal(result.labels, want.labels), name


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_imagenet_normalised_input_is_refused_or_mapped(entry: str, image: torch.Tensor):
    call = ENTRY_POINTS[entry]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (image - mean) / std
    with pytest.raises(AdaptokError, match='input_space="imagenet"'):
        call(normalised)
    with pytest.raises(AdaptokError, match="divide them by 255"):
        call(image * 255)
    mapped = call(normalised, input_space="imagenet")
    reference = call(image)
    if entry == "vectorize":
        assert mapped.count("<path") == reference.count("<path")
    else:
        assert torch.equal(mapped.labels, reference.labels)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_channels_last_is_refused(entry: str, image: torch.Tensor):
    with pytest.raises(AdaptokError, match="channels-last"):
        ENTRY_POINTS[entry](image.permute(0, 2, 3, 1).contiguous())


@pytest.mark.parametrize("entry", ["grid", "quadtree", "slic", "dht"])
def test_lists_of_one_size_batch_and_of_several_sizes_are_refused(entry: str, image):
    call = ENTRY_POINTS[entry]
    batch = call([image[0], image[0].flip(-1)])
    assert batch.counts.shape == (2,)
    with pytest.raises(AdaptokError, match="one at a time"):
        call([image[0], image[0, :, :16]])


def test_16_bit_grey_png_keeps_its_values(tmp_path: Path):
    ramp = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    loaded = load_image(path)  # the default RGB read used to clip everything to white
    assert loaded.shape == (1, 3, 32, 32)
    torch.testing.assert_close(loaded[0, 0], torch.from_numpy(ramp / 65535).float())
    assert float(as_images(path).std()) > 0.2


def test_exif_rotated_jpeg_is_read_upright(tmp_path: Path):
    upright = np.zeros((24, 40, 3), np.uint8)  # wide: top half red, bottom half blue
    upright[:12, :, 0] = 255
    upright[12:, :, 2] = 255
    stored = np.rot90(upright, 1).copy()  # stored sideways (40 x 24) ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 degrees clockwise to view" (undoes the rot90)
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (1, 3, 24, 40)
    assert float(loaded[0, 0, :10].mean()) > 0.8 and float(loaded[0, 2, 14:].mean()) > 0.8


def test_transparent_pixels_never_show_their_hidden_colour(tmp_path: Path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :, :3] = np.random.default_rng(0).integers(0, 256, (32, 32, 3))  # hidden noise
    rgba[:, :16, 3] = 255
    rgba[:16, :16, :3] = 255  # visible: one white square on a black square
    rgba[16:, :16, :3] = 0
    path = _png(tmp_path / "rgba.png", rgba)
    images = as_images(path)
    assert images.shape == (1, 3, 32, 32)
    assert float(images[..., 16:].std()) == 0  # the transparent half is one flat colour
    part = adaptok.partition(path, method="dht", budget=None)
    assert int(part.counts[0]) <= 4
    assert as_images(path, keep_alpha=True).shape == (1, 4, 32, 32)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_bad_files_give_one_clear_message(entry: str, tmp_path: Path):
    call = ENTRY_POINTS[entry]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[:60])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    cases = {
        empty: "not a readable image",
        truncated: "not a readable image",
        corrupt: "not a readable image",
        tmp_path: "is a folder",
        tmp_path / "missing.png": "no such file",
    }
    for path, message in cases.items():
        with pytest.raises(AdaptokError, match=message) as error:
            call(path)
        assert str(error.value).count(path.name) == 1, str(error.value)
        assert "''" not in str(error.value)  # no emptied quotes where Pillow named the file


def test_dht_partition_takes_float64_directly():
    images = photo("coffee", (32, 32)).double()
    part = dht_partition(images, budget=8)
    assert int(part.counts[0]) <= 8


def test_bundled_samples() -> None:
    photo = sample_image(64)
    item = sample_image(64, name=FLAT_SAMPLE)  # 28x28 enlarged bilinearly
    assert photo.shape == item.shape == (1, 3, 64, 64)
    assert float(item[..., :4, :].max()) == 0.0  # the item's black background stays black
    with pytest.raises(AdaptokError, match="no bundled sample"):
        sample_image(64, name="../weights.pt")


def test_dht_names_the_fix_for_images_with_alpha() -> None:
    rgba = torch.rand(1, 4, 32, 32)
    with pytest.raises(AdaptokError, match=r"composite_alpha"):
        adaptok.partition(rgba, method="dht")
    # The fix it names works.
    assert adaptok.partition(adaptok.io.composite_alpha(rgba), method="dht").num_regions > 0


def test_images_that_require_grad_partition_without_warnings() -> None:
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("grid", "quadtree", "dht"):
            adaptok.partition(images, method=method)
