"""Reading and writing images, the bundled sample, and size adjustment."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import AdaptokError

__all__ = [
    "load_image",
    "pad_to_multiple",
    "sample_image",
    "save_image",
    "to_uint8",
]

SAMPLE_IMAGE = "astronaut.jpg"  # skimage.data.astronaut (NASA, public domain), 512 x 512


def load_image(path: str | Path, *, mode: str = "RGB") -> Tensor:
    """Read an image file as a [1, C, H, W] float tensor in [0, 1].

    Args:
        path: any format Pillow reads.
        mode: Pillow mode to convert to ("RGB", "RGBA", "L").

    Raises:
        AdaptokError: the file is missing or is not a readable image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise AdaptokError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise AdaptokError(f"{path}: not a readable image ({error})") from error
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
