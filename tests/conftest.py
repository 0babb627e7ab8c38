"""Shared fixtures: small real photos and seeded random images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The device markers (registered in pyproject.toml): `cuda` tests need a CUDA device,
    `no_cuda` tests check what happens without one; each is skipped, with one reason, where its
    device is wrong."""
    has_cuda = torch.cuda.is_available()
    skip = {
        "cuda": pytest.mark.skip(reason="needs a CUDA device"),
        "no_cuda": pytest.mark.skip(reason="checks the no-CUDA error; a CUDA device is present"),
    }
    for item in items:
        if item.get_closest_marker("cuda") and not has_cuda:
            item.add_marker(skip["cuda"])
        if item.get_closest_marker("no_cuda") and has_cuda:
            item.add_marker(skip["no_cuda"])


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


def random_partition(
    batch: int, height: int, width: int, *, classes: int = 3, block: int = 3, seed: int = 0
):
    """Irregular 4-connected regions: blocky random labels split into connected pieces."""
    from adaptok.graph import label_components
    from adaptok.regions import Partition

    generator = torch.Generator().manual_seed(seed)
    shape = (batch, height // block + 1, width // block + 1)
    coarse = torch.randint(0, classes, shape, generator=generator)
    labels = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width]
    return Partition.from_labels(label_components(labels), relabel=False)


def assert_gradients_reach(*modules: torch.nn.Module) -> None:
    """Every learnable parameter of `modules` got a finite, non-zero gradient."""
    for module in modules:
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            assert parameter.grad is not None, f"{name}: no gradient"
            assert bool(torch.isfinite(parameter.grad).all()), f"{name}: non-finite gradient"
            assert bool(parameter.grad.abs().sum() > 0), f"{name}: zero gradient"


def random_vit(img_size: int = 224, **kwargs):
    """timm's vit_tiny_patch16_224 layout (pretrained=False, `kwargs` override it) with every
    parameter randomised (seeded), so norms, biases, cls token and positions all matter when
    logits are compared."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=img_size, **kwargs
    ).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in vit.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return vit
