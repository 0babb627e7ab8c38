"""Cluttered Fashion-MNIST: deterministic, labels from the item, item inside the canvas."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptok.errors import AdaptokError
from adaptok.train.cluttered import ClutteredFashionMNIST, cluttered_canvas


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A tiny Fashion-MNIST folder: image i is a filled square whose brightness encodes i."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 12), ("t10k", 6)):
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for i in range(count):
            images[i, 4:24, 4:24] = 100 + 10 * i
        images += rng.integers(0, 5, images.shape, dtype=np.uint8)
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return tmp_path


def test_deterministic(root: Path) -> None:
    first = ClutteredFashionMNIST(root, split="train", image_size=64, max_scale=2.0, seed=3)
    second = ClutteredFashionMNIST(root, split="train", image_size=64, max_scale=2.0, seed=3)
    for index in range(len(first)):
        torch.testing.assert_close(first[index][0], second[index][0], rtol=0, atol=0)
    other = ClutteredFashionMNIST(root, split="train", image_size=64, max_scale=2.0, seed=4)
    assert not torch.equal(first[0][0], other[0][0])


def test_labels_and_shapes(root: Path) -> None:
    dataset = ClutteredFashionMNIST(root, split="test", image_size=64, max_scale=2.0, in_chans=3)
    assert len(dataset) == 6
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert label.dtype == torch.int64
        assert int(label) == index % 10 == dataset.layout(index).label


@pytest.mark.parametrize("seed", range(5))
def test_item_inside_canvas(root: Path, seed: int) -> None:
    dataset = ClutteredFashionMNIST(
        root, split="train", image_size=64, seed=seed, min_scale=1.0, max_scale=2.0
    )
    for index in range(len(dataset)):
        layout = dataset.layout(index)
        y0, x0, y1, x1 = layout.box
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64
        side = round(28 * layout.scale)
        assert (y1 - y0, x1 - x0) == (side, side)
        assert 1.0 <= layout.scale <= 2.0
        # The item is drawn on top: its bright square is on the canvas where the layout says.
        canvas = dataset.raw(index)
        inner = canvas[y0 + side // 3 : y1 - side // 3, x0 + side // 3 : x1 - side // 3]
        assert float(inner.min()) >= (100 + 10 * index - 5) / 255 - 0.05
        for box in layout.clutter_boxes:
            assert 0 <= box[0] <= box[2] <= 64 and 0 <= box[1] <= box[3] <= 64


def test_clutter_comes_from_other_images(root: Path) -> None:
    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[1] = 255  # only image 1 is bright: clutter for item 0 must come from 1 or 2
    labels = torch.arange(3)
    canvas, layout = cluttered_canvas(
        images, labels, 1, canvas_size=64, max_scale=2.0, clutter=4, seed=0
    )
    y0, x0, y1, x1 = layout.box
    outside = canvas.clone()
    outside[y0:y1, x0:x1] = 0
    assert float(outside.max()) == 0.0  # fragments of the dark images 0 and 2 stay dark
    assert float(canvas[y0:y1, x0:x1].min()) > 0.9


def test_bad_options(root: Path) -> None:
    with pytest.raises(AdaptokError, match="max_scale"):
        ClutteredFashionMNIST(root, image_size=32, max_scale=2.0)
    with pytest.raises(AdaptokError, match="fragment"):
        ClutteredFashionMNIST(root, image_size=64, max_scale=2.0, fragment=40)
    with pytest.raises(IndexError):
        ClutteredFashionMNIST(root, image_size=64, max_scale=2.0, limit=2)[2]
