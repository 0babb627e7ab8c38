"""Scale augmentation (adaptok.train.augment): random-resized crops and flips of a whole batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from adaptok.errors import AdaptokError
from adaptok.train import TrainConfig
from adaptok.train.augment import random_resized_crop_flip, step_generator


def _images(batch: int = 4, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_full_crops_without_flips_are_the_identity() -> None:
    images = _images()
    same = random_resized_crop_flip(
        images, generator=step_generator(0, 0), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0
    )
    torch.testing.assert_close(same, images)


def test_flips_really_flip() -> None:
    images = _images()
    flipped = random_resized_crop_flip(
        images, generator=step_generator(0, 0), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0
    )
    torch.testing.assert_close(flipped, images.flip(-1))


def test_a_crop_is_a_zoom_into_the_image() -> None:
    """On a ramp image (value = x pixel coordinate) a quarter-area square crop is a ramp of
    half the slope, starting inside the image: the oracle of bilinear resampling of a box."""
    size = 16
    ramp = torch.arange(size, dtype=torch.float64).expand(2, 1, size, size).clone()
    crop = random_resized_crop_flip(
        ramp, generator=step_generator(3, 1), scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0.0
    )
    rows = crop[:, 0]
    assert torch.allclose(rows, rows[:, :1, :].expand_as(rows))  # every row the same ramp
    slope = rows[:, 0, 1:] - rows[:, 0, :-1]
    torch.testing.assert_close(slope, torch.full_like(slope, 0.5))
    assert bool((rows >= 0).all() and (rows <= size - 1).all())


def test_shapes_dtype_and_determinism_with_the_seed() -> None:
    images = _images(batch=6, size=20).half()
    first = random_resized_crop_flip(images, generator=step_generator(5, 7))
    again = random_resized_crop_flip(images, generator=step_generator(5, 7))
    other = random_resized_crop_flip(images, generator=step_generator(5, 8))
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # Each image of the batch gets its own box: one image repeated comes out different.
    repeated = random_resized_crop_flip(
        images[:1].expand(6, -1, -1, -1), generator=step_generator(1, 0)
    )
    assert not torch.equal(repeated[0], repeated[1])
    # Processes of a DDP run draw different boxes at the same step.
    assert not torch.equal(
        random_resized_crop_flip(images, generator=step_generator(5, 7, rank=1)), first
    )


def test_augment_auto_is_on_for_classification_and_refused_for_dense() -> None:
    config = TrainConfig()
    assert config.augment is None
    assert config.augment_for("classification") and not config.augment_for("dense")
    assert not dataclasses.replace(config, augment=False).augment_for("classification")
    with pytest.raises(AdaptokError, match="not their label maps"):
        dataclasses.replace(config, augment=True).augment_for("dense")


@pytest.mark.parametrize("min_crop", [0.0, -0.5, 1.5, float("nan")])
def test_min_crop_outside_the_unit_interval_is_refused(min_crop: float) -> None:
    with pytest.raises(AdaptokError, match=r"min_crop must be a fraction .* in \(0, 1\]"):
        TrainConfig(min_crop=min_crop)
