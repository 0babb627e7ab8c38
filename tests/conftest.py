"""Shared fixtures: small real photos and seeded random images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed every test, and run it on one intra-op thread: the suite is many small ops, where
    extra threads only contend (and the DDP test runs two processes side by side)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
