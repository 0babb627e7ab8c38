"""Pictures that explain themselves: boundaries visible on any background, titled panels."""

from __future__ import annotations

import pytest
import torch

import adaptok
from adaptok.visualize import boundary_mask, draw_boundaries, titled, token_picture


def luma(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


@pytest.mark.parametrize(
    "background",
    [(1.0, 1.0, 1.0), (1.0, 0.9, 0.1), (0.0, 0.0, 0.0), (0.9, 0.45, 0.2), (0.2, 0.2, 0.6)],
)  # white, the old line's yellow, black, orange, dark blue
def test_boundaries_stand_out_from_any_flat_background(background) -> None:
    image = torch.tensor(background).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    part = adaptok.partition(image, "grid", patch_size=16)
    drawn = draw_boundaries(image, part)
    line = boundary_mask(part)
    assert line.any()
    contrast = (luma(drawn) - luma(image)).abs()
    assert bool((contrast[line] >= 0.4).all())  # every line pixel far from what it covers
    assert torch.equal(drawn[:, :, ~line[0]], image[:, :, ~line[0]])  # nothing else changes


def test_boundaries_choose_their_colour_pixel_by_pixel() -> None:
    # a line crossing from white into black stays visible on both halves
    image = torch.ones(1, 3, 32, 32)
    image[..., 16:] = 0.0
    part = adaptok.partition(image, "grid", patch_size=8)
    drawn, line = draw_boundaries(image, part), boundary_mask(part)[0]
    assert bool((drawn[0, :, line & (torch.arange(32) < 16)] == 0).all())
    assert bool((drawn[0, :, line & (torch.arange(32) >= 16)] == 1).all())
    assert torch.equal(draw_boundaries(image, part, color=(1.0, 0.0, 0.0))[0, :, line][:, 0],
                       torch.tensor([1.0, 0.0, 0.0]))  # fmt: skip


def test_titled_panels_carry_their_text_on_a_white_strip() -> None:
    panel = torch.zeros(2, 3, 40, 128)
    out = titled(panel, "quadtree · 64 tokens")
    strip = out.shape[2] - 40
    assert out.shape == (2, 3, strip + 40, 128) and 10 <= strip <= 40
    assert torch.equal(out[:, :, strip:], panel)
    text = out[:, :, :strip]
    assert (text == 1).float().mean() > 0.5 and (text < 0.25).any()  # black letters on white
    assert torch.equal(text[0], text[1])
    # a long title shrinks to fit instead of running off the panel
    narrow = titled(torch.zeros(1, 3, 8, 60), "a title much longer than sixty pixels")
    assert (narrow[0, :, : narrow.shape[2] - 8, -2:] == 1).all()


def test_token_picture_titles_only_when_asked() -> None:
    image = torch.rand(1, 3, 32, 32)
    part = adaptok.partition(image, "grid", patch_size=8)
    assert token_picture(image, part).shape == (1, 3, 32, 2 * 32 + 4)
    with_title = token_picture(image, part, title="grid · 16 tokens")
    assert with_title.shape[2] > 32 and with_title.shape[3] == 2 * 32 + 4
