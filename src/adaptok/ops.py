"""Small tensor operations shared by the partitioners, the token extractors and the embedders,
and the short texts that describe their results."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AdaptokError

__all__ = [
    "add_blocks",
    "counted",
    "denormalize",
    "halve",
    "imagenet_mean_std",
    "normalize",
    "round_up",
    "sincos_2d",
    "sum_blocks",
    "summary_repr",
]


def counted(number: int, noun: str) -> str:
    """'1 token', '2 tokens': a count with its noun in the right number."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def summary_repr(result: object) -> str:
    """`Name(field=Tensor[2, 3, 64, 64] float32, ...)` for a dataclass of results: what a
    print should show instead of every value of every tensor."""

    def show(value: object) -> str:
        if isinstance(value, Tensor):
            return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
        if isinstance(value, tuple) and value and all(isinstance(v, Tensor) for v in value):
            return f"({len(value)} tensors)"
        return repr(value)

    shown = ", ".join(
        f"{field.name}={show(getattr(result, field.name))}"
        for field in dataclasses.fields(result)
        if field.repr
    )
    return f"{type(result).__name__}({shown})"


def halve(images: Tensor) -> Tensor:
    """Means of 2 x 2 blocks: [B, C, H, W] -> [B, C, H / 2, W / 2] (H, W even).

    The same numbers as F.avg_pool2d(images, 2) up to rounding, several times faster on CPU.
    """
    batch, channels, height, width = images.shape
    rows = images.reshape(batch, channels, height // 2, 2, width)
    pairs = rows[:, :, :, 0] + rows[:, :, :, 1]
    return (pairs[..., 0::2] + pairs[..., 1::2]).mul_(0.25)


def add_blocks(images: Tensor, values: Tensor) -> Tensor:
    """images + values, a map of [B, C, h, w] repeated over the (H / h) x (W / w) blocks of
    images [B, C, H, W] (h, w dividing H, W; equal sizes: a plain sum), in one new tensor."""
    batch, channels, height, width = images.shape
    rows, cols = height // values.shape[-2], width // values.shape[-1]
    if (rows, cols) == (1, 1):
        return images + values
    # Each row of values widened to W, added to the `rows` image rows it covers: the same sums
    # as a broadcast over [B, C, h, rows, w, cols] blocks, 2x faster (one short inner axis).
    strips = values.repeat_interleave(cols, -1)[:, :, :, None]
    blocks = images.reshape(batch, channels, height // rows, rows, width)
    return (blocks + strips).view(batch, channels, height, width)


def sum_blocks(images: Tensor, rows: int, cols: int) -> Tensor:
    """Sums of rows x cols blocks: [B, C, H, W] -> [B, C, H / rows, W / cols] (rows, cols
    dividing H, W). Floating-point images are summed by a pooling window (2-3x faster on CPU
    than a sum over the block axes of a [B, C, h, rows, w, cols] view, which other dtypes get);
    the two orders of addition agree to rounding."""
    if images.is_floating_point():
        return F.avg_pool2d(images, (rows, cols), divisor_override=1)
    batch, channels, height, width = images.shape
    blocks = images.reshape(batch, channels, height // rows, rows, width // cols, cols)
    return blocks.sum((3, 5))


def sincos_2d(coords: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """2-D sinusoidal position embedding: half the channels encode x, half encode y.

    Each half is the standard [sin, cos] of position / temperature^(2i / (dim/2)).

    Args:
        coords: [..., 2] float (y, x) positions (fractional allowed).
        dim: embedding size, a multiple of 4.
        temperature: the frequency base.

    Returns:
        [..., dim] embedding: x's sin/cos in the first half, y's in the second.
    """
    if dim % 4:
        raise AdaptokError(f"sincos_2d needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    steps = torch.arange(quarter, device=coords.device, dtype=torch.float64)
    omega = 1.0 / temperature ** (steps / quarter)
    y = coords[..., 0:1].double() * omega
    x = coords[..., 1:2].double() * omega
    emb = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)
    return emb.to(coords.dtype if coords.is_floating_point() else torch.float32)


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `value` (the size an image is padded to)."""
    return -(-value // multiple) * multiple


# ImageNet's channel mean and std, as timm's IMAGENET_DEFAULT_MEAN / _STD (a test checks that
# they agree). Kept here rather than imported: importing timm (and torchvision with it) took
# 1.5-3 s, which `partition(x, "dht")` and the command line paid on their first call.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's channel mean and std, the one source of these constants in adaptok."""
    return IMAGENET_MEAN, IMAGENET_STD


def _model_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """[C, 1, 1] mean and std of the models' input space: ImageNet's for 3 channels, 0.5 and
    0.5 for any other count (grey)."""
    channels = images.shape[-3]
    mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    shape = (channels, 1, 1)
    return (
        torch.tensor(mean).view(shape).to(images),
        torch.tensor(std).view(shape).to(images),
    )


def normalize(images: Tensor) -> Tensor:
    """[C, H, W] or [B, C, H, W] in [0, 1] -> the models' input space (what the training
    datasets give and `AdaptiveViT` takes): ImageNet-normalised, or (x - 0.5) / 0.5 for grey."""
    mean, std = _model_stats(images)
    return (images - mean) / std


def denormalize(images: Tensor) -> Tensor:
    """The inverse of `normalize`: the models' input space -> [0, 1] pixels."""
    mean, std = _model_stats(images)
    return (images * std).add_(mean)  # one new tensor, not two
