"""Reading and writing images, the bundled sample, and size adjustment."""

from __future__ import annotations

import os
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import AdaptokError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "display_name",
    "load_image",
    "pad_to_multiple",
    "sample_image",
    "save_image",
    "to_uint8",
]

SAMPLE_IMAGE = "astronaut.jpg"  # skimage.data.astronaut (NASA, public domain), 512 x 512


# Largest image (width x height) read by default: 64 megapixels, about 0.8 GB as float32 RGB.
DEFAULT_MAX_PIXELS = 64_000_000


def display_name(path: str | os.PathLike[str] | bytes) -> str:
    """A printable form of any file name (undecodable bytes become \\x.. escapes, not errors)."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


def load_image(
    path: str | os.PathLike[str], *, mode: str | None = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS
) -> Tensor:
    """Read an image file as a [1, C, H, W] float tensor in [0, 1].

    With mode=None the file's own colours are kept: grey images give C = 1 (2 with
    transparency), colour images C = 3 (4 with transparency); 16-bit grey images are scaled from
    0..65535 rather than clipped.
    The size is checked from the file header before any pixel is decoded.

    Args:
        path: any format Pillow reads.
        mode: Pillow mode to convert to ("RGB", "RGBA", "L"), or None to keep the file's own.
        max_pixels: largest accepted width x height.

    Raises:
        AdaptokError: the file is missing, unreadable, or larger than `max_pixels` (the message
            names the file and the size).
    """
    name = display_name(path)
    path = Path(os.fsdecode(path))
    if not path.is_file():
        raise AdaptokError(f"{name}: no such file")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard is replaced by the explicit check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise AdaptokError(
                        f"{name}: image of {width}x{height} = {width * height:,} pixels is larger "
                        f"than the limit of {max_pixels:,} pixels; downscale it first or raise the "
                        "limit (max_pixels=..., or --max-pixels on the command line)"
                    )
                image.load()
                if mode is None and (image.mode.startswith("I") or image.mode == "F"):
                    # 16/32-bit grey: Pillow's convert("L") would clip, so scale here instead.
                    high = 1.0 if image.mode == "F" else 65535.0
                    grey = np.asarray(image, dtype=np.float64) / high
                    return torch.from_numpy(grey.clip(0, 1)).float()[None, None]
                array = np.asarray(image.convert(mode or _target_mode(image)))
    except Image.DecompressionBombError as error:
        raise AdaptokError(
            f"{name}: refused as a possible decompression bomb ({error}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS only if you trust the file"
        ) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(error, AdaptokError):
            raise
        raise AdaptokError(f"{name}: not a readable image ({error})") from error
    return from_array(array)


def from_array(array: np.ndarray) -> Tensor:
    """[H, W] or [H, W, C] uint8 (or float in [0, 1]) array -> [1, C, H, W] float32 tensor."""
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)[None]
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def sample_image(size: int | tuple[int, int] | None = None) -> Tensor:
    """The bundled sample photo as [1, 3, H, W] in [0, 1], optionally resized to `size`."""
    with resources.as_file(resources.files("adaptok") / "assets" / SAMPLE_IMAGE) as path:
        image = load_image(path)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        image = F.interpolate(image, size=size, mode="area").clamp(0, 1)
    return image


def to_uint8(image: Tensor) -> np.ndarray:
    """[C, H, W] or [1, C, H, W] float in [0, 1] -> [H, W, C] uint8 array."""
    if image.ndim == 4:
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
    return array.cpu().numpy()


def save_image(image: Tensor, path: str | Path) -> None:
    """Write a [C, H, W] or [1, C, H, W] float image in [0, 1] to `path`."""
    array = to_uint8(image)
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def pad_to_multiple(images: Tensor, multiple: int, *, mode: str = "replicate") -> Tensor:
    """Pad images at the bottom and right so H and W become multiples of `multiple`."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def _target_mode(image: Image.Image) -> str:
    """The Pillow mode that keeps an image's colour and transparency: L, LA, RGB or RGBA."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    grey = image.mode in ("1", "L", "LA", "La", "I", "I;16", "F") or (
        image.mode == "P" and _palette_is_grey(image)
    )
    if grey:
        return "LA" if has_alpha else "L"
    return "RGBA" if has_alpha else "RGB"


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    colors = np.asarray(palette, dtype=np.int64).reshape(-1, 3) if len(palette) % 3 == 0 else None
    return colors is not None and bool((colors == colors[:, :1]).all())
