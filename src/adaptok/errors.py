"""Input validation shared by every stage: exceptions that say what was wrong and how to fix it."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AdaptokError", "check_images"]


class AdaptokError(ValueError):
    """Bad input to an adaptok function; the message names the value received and the fix."""


def check_images(images: Tensor, *, min_size: int = 1, name: str = "images") -> None:
    """Validate a batch of images.

    Args:
        images: [B, C, H, W] floating-point tensor without NaN or infinity.
        min_size: smallest allowed height and width.
        name: how the argument is called in error messages.

    Raises:
        AdaptokError: wrong type, rank, dtype, empty batch, too small, or non-finite values.
    """
    if not isinstance(images, Tensor):
        raise AdaptokError(
            f"{name} must be a torch.Tensor [B, C, H, W], got {type(images).__name__}; "
            "convert with torch.as_tensor(...).permute(...) or adaptok.io.load_image(path)"
        )
    if images.ndim != 4:
        hint = " (add a batch dimension with images[None])" if images.ndim == 3 else ""
        raise AdaptokError(f"{name} must have shape [B, C, H, W], got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise AdaptokError(
            f"{name} must be a floating-point tensor, got {images.dtype}; "
            "use images.float() / 255 for 8-bit images"
        )
    batch, _, height, width = images.shape
    if batch == 0 or images.shape[1] == 0:
        raise AdaptokError(f"{name} must not be empty, got shape {tuple(images.shape)}")
    if height < min_size or width < min_size:
        raise AdaptokError(
            f"{name} must be at least {min_size}x{min_size} pixels, got {height}x{width} (too "
            "small); resize or pad"
        )
    # NaN and infinity propagate through a sum: check the full tensor only when the sum is not
    # finite (a cheap reduction, several times faster than isfinite(images).all()).
    if not bool(torch.isfinite(images.sum())) and not bool(torch.isfinite(images).all()):
        raise AdaptokError(
            f"{name} must be finite, but NaN or infinite values were found; clean the input first"
        )
