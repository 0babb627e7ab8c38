"""Shared fixtures: small real photos and seeded random images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def photo(name: str = "astronaut", size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    """A scikit-image photo as [1, 3, H, W] float in [0, 1], area-resized to `size`."""
    import skimage.data

    array = getattr(skimage.data, name)()
    image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=size, mode="area")


@pytest.fixture
def photos() -> torch.Tensor:
    """[2, 3, 64, 96] two real photos."""
    return torch.cat([photo("astronaut", (64, 96)), photo("coffee", (64, 96))])
