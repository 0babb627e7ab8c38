"""Golden SVG texts: the vector stages write byte-for-byte what they wrote before a refactor.

The partitions are built here from a fixed rule (colour quantised to four levels per channel,
split into 4-connected pieces), not by a partitioner, so the hashes pin the vector stages only
(boundary tracing, refinement, smoothing, simplification, Béziers, SVG writing) and stay valid
when a partitioner changes. Region mean colours are torch reductions, so the conftest's one
intra-op thread matters; it is set here again to make the hashes independent of the caller.

The hashes were produced by the code at commit d465cc9 (before `vector/` was split into modules
by role and `trace_boundaries` / `write_svg` at their seams) with
`PYTHONPATH=src:tests python tests/test_vectorize_golden.py`, which prints the table below; the
code at 3f0600f (the flat-image fixes of issue 22, landed beside the split) prints the same table.
A change that is meant to alter the SVG text must say so in its commit and refresh the table.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

from adaptok import Partition
from adaptok.graph import label_components
from adaptok.io import sample_image
from adaptok.vector import vectorize_batch
from conftest import photo

GOLDEN = {
    "sample-224-default": "50a65d9e62c25d77ef52b401",
    "sample-96-polygon": "cbce553d565fffbe48f37935",
    "coffee-smooth2-background": "2d2005404dacfbf23c31f882",
    "coffee-units1-no-crisp": "8094952d2ac6f14476240ca5",
    "flat": "32afd556acdf3d8e96d1ac41",
    "flat-background": "30679402097f26ef61dd429d",
    "two-regions": "95fd5d7f55af61f3f19aeef6",
    "two-regions-alpha": "3ed8c0fc62cd55ac8c9c0ad2",
}


def quantised_partition(image: torch.Tensor) -> Partition:
    """Regions of equal colour at four levels per channel, split into 4-connected pieces."""
    level = (image[:, :3] * 4).floor().clamp(0, 3).long()
    code = level[:, 0] * 16 + level[:, 1] * 4 + level[:, 2]
    return Partition.from_labels(label_components(code), relabel=False)


def two_regions(channels: int = 3) -> torch.Tensor:
    """[1, C, 40, 56] a slanted edge between two colours (alpha fades across the image)."""
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(56.0), indexing="ij")
    inside = (x > 0.6 * y + 17).float()
    colour = torch.stack([0.9 * inside + 0.1, 0.2 + 0.5 * inside, 0.7 - 0.4 * inside])
    if channels == 4:
        colour = torch.cat([colour, (x / 55)[None]])
    return colour[None]


def cases() -> dict[str, tuple[torch.Tensor, Partition, dict[str, Any]]]:
    """name -> (image, partition, vectorize options)."""
    sample_224, sample_96 = sample_image(224), sample_image(96)
    coffee = photo("coffee", (120, 160))
    flat = torch.full((1, 3, 32, 48), 0.4)
    halves = two_regions()
    halves_labels = Partition.from_labels((halves[:, 0] > 0.5).long())
    return {
        "sample-224-default": (sample_224, quantised_partition(sample_224), {}),
        "sample-96-polygon": (sample_96, quantised_partition(sample_96), {"smoothness": 0.0}),
        "coffee-smooth2-background": (
            coffee,
            quantised_partition(coffee),
            {"smoothness": 2.0, "tolerance": 0.5, "background": True},
        ),
        "coffee-units1-no-crisp": (
            coffee,
            quantised_partition(coffee),
            {"units_per_pixel": 1, "crisp_edges": False, "corner_length": 3.0},
        ),
        "flat": (flat, quantised_partition(flat), {}),
        "flat-background": (flat, quantised_partition(flat), {"background": "#123456"}),
        "two-regions": (halves, halves_labels, {}),
        "two-regions-alpha": (two_regions(4), halves_labels, {"smoothness": 0.5}),
    }


def svg_hash(image: torch.Tensor, part: Partition, options: dict[str, Any]) -> str:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        svg = vectorize_batch(image, part, **options)[0]
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(svg.encode()).hexdigest()[:24]


@pytest.fixture(scope="module")
def golden_cases() -> dict[str, tuple[torch.Tensor, Partition, dict[str, Any]]]:
    return cases()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_svg_text_is_unchanged(name: str, golden_cases) -> None:
    assert svg_hash(*golden_cases[name]) == GOLDEN[name]


def test_cases_are_what_they_claim(golden_cases) -> None:
    # The fixed partitions have the shapes the names promise (so a hash covers real work).
    counts = {name: case[1].num_regions for name, case in golden_cases.items()}
    assert counts["flat"] == 1 and counts["two-regions"] == 2
    assert counts["sample-224-default"] > 1000 and counts["coffee-units1-no-crisp"] > 300


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, case in sorted(cases().items()):
        print(f'    "{name}": "{svg_hash(*case)}",')
