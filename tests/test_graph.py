import numpy as np
import pytest
import torch
from scipy import ndimage

from adaptok.graph import connected_components, label_components


def scipy_components(labels: np.ndarray) -> int:
    """Oracle: number of 4-connected pieces of every label, summed over the batch."""
    total = 0
    for image in labels:
        for value in np.unique(image):
            total += ndimage.label(image == value)[1]
    return total


@pytest.mark.parametrize("classes", [2, 3, 50])
def test_label_components_matches_scipy(classes: int) -> None:
    labels = torch.randint(0, classes, (3, 23, 31))
    pieces = label_components(labels)
    assert int(pieces.max()) + 1 == scipy_components(labels.numpy())
    # Pieces refine the labels: a piece never spans two labels.
    lookup = torch.full((int(pieces.max()) + 1,), -1)
    lookup[pieces.flatten()] = labels.flatten()
    assert torch.equal(lookup[pieces], labels)


def test_components_are_numbered_image_by_image() -> None:
    labels = torch.zeros(3, 8, 8, dtype=torch.long)  # same id in every image, never connected
    pieces = label_components(labels)
    assert pieces[:, 0, 0].tolist() == [0, 1, 2]


def test_connected_components_long_path() -> None:
    # A path 0-1-2-...-999 given in shuffled order must be one component.
    order = torch.randperm(999)
    src, dst = torch.arange(999)[order], torch.arange(1, 1000)[order]
    assert torch.equal(connected_components(1000, dst, src), torch.zeros(1000, dtype=torch.long))


def test_connected_components_numbered_by_smallest_vertex() -> None:
    components = connected_components(6, torch.tensor([5, 1]), torch.tensor([2, 4]))
    assert components.tolist() == [0, 1, 2, 3, 1, 2]


def test_spiral_is_one_component() -> None:
    # A one-pixel-wide spiral is the worst case for label propagation.
    size = 33
    grid = np.zeros((size, size), dtype=np.int64)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        grid[top, left : right + 1] = 1
        grid[top : bottom + 1, right] = 1
        if top + 2 <= bottom:
            grid[bottom, left : right + 1] = 1
        if left + 2 <= right and top + 2 <= bottom:
            grid[top + 2 : bottom + 1, left] = 1
            grid[top + 2, left : left + 3] = 1
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    pieces = label_components(torch.from_numpy(grid)[None])
    assert int(pieces.max()) + 1 == scipy_components(grid[None])
