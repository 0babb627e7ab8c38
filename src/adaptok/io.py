"""Reading and writing images, the bundled sample, and size adjustment."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .errors import AdaptokError, check_images
from .validate import check_choice

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "INPUT_SPACES",
    "as_images",
    "check_unit_range",
    "composite_alpha",
    "display_name",
    "load_image",
    "pad_to_multiple",
    "sample_image",
    "save_image",
    "to_uint8",
]

INPUT_SPACES = ("unit", "imagenet")
# Values this far outside [0, 1] are not resampling overshoot (bicubic resizing of a [0, 1] image
# stays within about 0.1 of the range) but a different value range.
RANGE_TOLERANCE = 0.15

# What `as_images` accepts (one image or a batch, or a list of those).
ImageLike = Tensor | np.ndarray | Image.Image | str | os.PathLike | Sequence[Any]

SAMPLE_IMAGE = "astronaut.jpg"  # skimage.data.astronaut (NASA, public domain), 512 x 512
# Fashion-MNIST test item 0, an ankle boot on a black background (Zalando, MIT licence), 28 x 28.
FLAT_SAMPLE = "fashion_mnist_boot.png"


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
    if path.is_dir():
        raise AdaptokError(f"{name} is a folder, not an image file")
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
                # Photos carry their orientation in EXIF: show them as every viewer does.
                image = ImageOps.exif_transpose(image)
                if image.mode.startswith("I") or image.mode == "F":
                    # 16/32-bit grey: Pillow's convert("L") would clip, so scale here instead.
                    high = 1.0 if image.mode == "F" else 65535.0
                    grey = np.asarray(image, dtype=np.float64) / high
                    tensor = torch.from_numpy(grey.clip(0, 1)).float()[None, None]
                    channels = {"RGB": 3, "RGBA": 3}.get(mode or "L", 1)
                    return tensor.expand(-1, channels, -1, -1).contiguous()
                array = np.asarray(image.convert(mode or _target_mode(image)))
    except Image.DecompressionBombError as error:
        raise AdaptokError(
            f"{name}: refused as a possible decompression bomb ({error}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS only if you trust the file"
        ) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(error, AdaptokError):
            raise
        # Pillow names the file (often quoted): name it once, in front.
        reason = str(error)
        for quoted in (repr(str(path)), f'"{path}"', str(path)):
            reason = reason.replace(quoted, "")
        reason = reason.strip(" :") or type(error).__name__
        raise AdaptokError(f"{name}: not a readable image ({reason})") from error
    return from_array(array)


def as_images(
    images: ImageLike,
    *,
    input_space: str = "unit",
    keep_alpha: bool = False,
    name: str = "images",
    min_size: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Tensor:
    """Whatever images a user holds -> a [B, C, H, W] float32 batch in [0, 1].

    Every public entry point that takes images calls this, so they all accept the same forms and
    refuse the same mistakes.

    Args:
        images: a [B, C, H, W] or [C, H, W] tensor (float of any precision in [0, 1], or uint8);
            a numpy [H, W] / [H, W, C] array (uint8, uint16, or float in [0, 1]); a PIL image; a
            path; or a list of these of one size.
        input_space: "unit" for values in [0, 1]; "imagenet" for ImageNet-normalised tensors
            (mapped back to [0, 1] here).
        keep_alpha: keep a transparency channel of files, arrays and PIL images (vectorize
            uses it); otherwise transparent pixels are composited on mid-grey, so colours hidden
            under transparency never show.
        name: how the argument is called in error messages.
        min_size: smallest allowed height and width.
        max_pixels: largest width x height read from an image file.

    Raises:
        AdaptokError: channels-last tensors, values far outside [0, 1] (the message names the fix:
            divide by 255, or input_space="imagenet"), images of different sizes, unreadable
            files, NaN, and wrong shapes.
    """
    check_choice("input_space", input_space, INPUT_SPACES)
    if isinstance(images, (list, tuple)):
        batch = [
            as_images(
                item,
                input_space=input_space,
                keep_alpha=keep_alpha,
                name=name,
                max_pixels=max_pixels,
            )
            for item in images
        ]
        if not batch:
            raise AdaptokError(f"{name} is an empty list; pass at least one image")
        sizes = sorted({tuple(item.shape[1:]) for item in batch})
        if len(sizes) > 1:
            shown = ", ".join(f"{c}x{h}x{w}" for c, h, w in sizes[:4])
            raise AdaptokError(
                f"{name} have different sizes or channels (C x H x W: {shown}); a batch needs one "
                "size: partition them one at a time ([adaptok.partition(x, ...) for x in images]) "
                "or resize them to one size first"
            )
        stacked = torch.cat(batch)
        check_images(stacked, min_size=min_size, name=name)
        return stacked
    if isinstance(images, (str, os.PathLike)):
        tensor = load_image(images, mode=None, max_pixels=max_pixels)
    elif isinstance(images, Image.Image):
        tensor = from_array(
            np.asarray(ImageOps.exif_transpose(images).convert(_target_mode(images)))
        )
    elif isinstance(images, np.ndarray):
        tensor = _from_numpy(images, name)
    elif isinstance(images, Tensor):
        tensor = _from_tensor(images, name)
    else:
        raise AdaptokError(
            f"{name} must be a tensor [B, C, H, W], a numpy array, a PIL image or a path, got "
            f"{type(images).__name__}"
        )
    if not keep_alpha and not isinstance(images, Tensor):
        tensor = composite_alpha(tensor)
    if input_space == "imagenet":
        from .ops import imagenet_mean_std

        if tensor.shape[1] != 3:
            raise AdaptokError(
                f"input_space='imagenet' needs 3-channel images, got {tensor.shape[1]} channels"
            )
        mean, std = (torch.tensor(v, dtype=tensor.dtype).view(3, 1, 1) for v in imagenet_mean_std())
        tensor = tensor * std.to(tensor.device) + mean.to(tensor.device)
    check_images(tensor, min_size=min_size, name=name)
    check_unit_range(tensor, name=name, imagenet=input_space == "imagenet")
    return tensor


def check_unit_range(images: Tensor, *, name: str = "images", imagenet: bool = False) -> None:
    """Refuse values far outside [0, 1], naming the likely fix (slight overshoot is fine)."""
    low, high = float(images.detach().min()), float(images.detach().max())
    if low >= -RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE:
        return
    have = "have" if name.endswith("s") else "has"
    found = f"{name} {have} values in [{low:.3g}, {high:.3g}], but adaptok expects [0, 1]"
    if imagenet:
        raise AdaptokError(
            f"{found} after undoing ImageNet normalisation; are they normalised with other "
            "statistics? Map them to [0, 1] first"
        )
    if low >= -RANGE_TOLERANCE and high <= 255 + RANGE_TOLERANCE:
        raise AdaptokError(f"{found}; these look like 0..255 values: divide them by 255")
    raise AdaptokError(
        f'{found}; for ImageNet-normalised images pass input_space="imagenet", otherwise map '
        "them to [0, 1]"
    )


def _from_tensor(images: Tensor, name: str) -> Tensor:
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise AdaptokError(
            f"{name} must have shape [B, C, H, W] or [C, H, W], got {tuple(images.shape)}"
        )
    channels, last = images.shape[1], images.shape[-1]
    if channels > 4 and last <= 4:
        raise AdaptokError(
            f"{name} of shape {tuple(images.shape)} {'look' if name.endswith('s') else 'looks'} "
            "channels-last ([B, H, W, C]); adaptok "
            "takes channels first: pass images.permute(0, 3, 1, 2)"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise AdaptokError(
            f"{name} must be float in [0, 1] or uint8, got {images.dtype}; convert with "
            "images.float() and scale to [0, 1]"
        )
    return images.float()


def _from_numpy(array: np.ndarray, name: str) -> Tensor:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] > 4:
        raise AdaptokError(
            f"{name}: a numpy array of shape {array.shape} looks channels-first; numpy images "
            "are [H, W] or [H, W, C] (pass array.transpose(1, 2, 0))"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise AdaptokError(
            f"{name}: a numpy image must be [H, W] or [H, W, C] with C in 1, 3, 4; got shape "
            f"{array.shape}"
        )
    if array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise AdaptokError(
            f"{name}: numpy images must be uint8, uint16 or float, got {array.dtype}"
        )
    return from_array(array.astype(np.float32) if array.dtype == np.float64 else array)


def composite_alpha(images: Tensor, background: float = 0.5) -> Tensor:
    """[B, 2 or 4, H, W] with alpha last -> [B, 1 or 3, H, W] composited on a grey background
    (what vectorize partitions too), so colours hidden under transparent pixels never show.
    Images without alpha are returned as they are."""
    if images.shape[1] not in (2, 4):
        return images
    colour, alpha = images[:, :-1], images[:, -1:]
    return colour * alpha + background * (1 - alpha)


def from_array(array: np.ndarray) -> Tensor:
    """[H, W] or [H, W, C] uint8 (or float in [0, 1]) array -> [1, C, H, W] float32 tensor."""
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)[None]
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255.0
    return tensor.float()


def sample_image(size: int | tuple[int, int] | None = None, *, name: str = SAMPLE_IMAGE) -> Tensor:
    """A bundled sample as [1, 3, H, W] in [0, 1], optionally resized to `size` (area average
    when shrinking, bilinear when enlarging).

    Args:
        size: side or (H, W); None keeps the file's size.
        name: SAMPLE_IMAGE (the photo, the default) or FLAT_SAMPLE (a Fashion-MNIST item).
    """
    if name not in (SAMPLE_IMAGE, FLAT_SAMPLE):
        raise AdaptokError(f"no bundled sample {name!r}; choose {SAMPLE_IMAGE} or {FLAT_SAMPLE}")
    with resources.as_file(resources.files("adaptok") / "assets" / name) as path:
        image = load_image(path)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        shrinking = size[0] <= image.shape[2] and size[1] <= image.shape[3]
        mode = "area" if shrinking else "bilinear"
        image = F.interpolate(image, size=size, mode=mode).clamp(0, 1)
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
