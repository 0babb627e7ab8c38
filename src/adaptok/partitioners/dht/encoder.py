"""The dHT pixel encoder: a few thousand parameters that turn pixels into d-dimensional features.

Two branches see the image at two scales: a 1x1 convolution (the pixel itself) and two stride-2
3x3 convolutions (a 4x coarser context) upsampled back to full size. Their sum goes through SiLU.
Stride-2 convolutions with replicate padding and an upsampling to the exact input size make the
encoder work on any image size, odd or rectangular, down to 1x1, and map a constant image to
constant features (zero padding made a flat image's features vary near the border, which cut
flat areas into strips; docs/design.md, "dHT", step 1).

Every pixel's features get the same bits whatever the thread count, the batch and the pixel's
position in it (the partition compares them, issue 19): the pointwise branch mixes channels with
elementwise products added in a fixed order, not a convolution (whose kernels block the pixels
differently by batch and thread count), and SiLU and sigmoid are written with `exp`, because
torch's own kernels round differently in their vectorised and scalar paths, and which path a pixel
takes depends on where the threads split the tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PixelEncoder", "exact_sigmoid", "mix_channels"]


def exact_sigmoid(values: Tensor) -> Tensor:
    """sigmoid(values) from `exp`, add and divide only: the same bits for every element wherever it
    sits in the tensor (torch.sigmoid and F.silu differ in the last bit between their vectorised
    and scalar kernels, ~4% of elements on AVX-512; torch.exp does not)."""
    return 1 / _one_plus_exp_neg(values)


def _one_plus_exp_neg(values: Tensor) -> Tensor:
    """1 + exp(-x), with x clamped at -80 so that exp cannot overflow (sigmoid is below 1e-34
    there, and SiLU's gradient no NaN)."""
    return 1 + torch.exp(-values.clamp(min=-80))


def _silu(values: Tensor) -> Tensor:
    """x sigmoid(x) with `exact_sigmoid`'s arithmetic, in one division."""
    return values / _one_plus_exp_neg(values)


def mix_channels(values: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """bias + weight · values per position ([N, C, *] -> [N, O, *], weight [O, C], bias [O]):
    products added channel by channel in a fixed order, so every position gets the same bits
    whatever the batch, the thread count and its place in the tensor (a matmul or 1x1 convolution
    blocks positions differently)."""
    shape = (1, -1) + (1,) * (values.dim() - 2)
    mixed = bias.view(shape)
    # One call each to take the columns and channels apart, two per channel to mix them.
    columns = weight.t().reshape(weight.shape[1], *shape).unbind(0)
    for column, channel in zip(columns, values.split(1, dim=1), strict=True):
        mixed = mixed + column * channel
    return mixed


class PixelEncoder(nn.Module):
    """Pixel features f: [B, C, H, W] -> [B, d, H, W].

    Initialisation is colour-preserving: every feature starts as `colour_scale` times a unit-norm
    mix of the (normalised) colour channels (the first min(C, d) features the channels
    themselves, the others fixed random mixes, so that all d channels carry colour variance),
    offset by +3 so SiLU works in its near-linear range, and the coarse branch starts small.
    A fresh encoder is thus already a colour-similarity superpixel feature (the bundled weights
    keep it: see scripts/pretrain_dht.py).

    Args:
        in_chans: C, image channels.
        features: d, feature channels.
        hidden: channels of the coarse branch between its two convolutions.
        colour_scale: initial gain from normalised colour to features; it sets how fast the
            Gaussian edge similarity exp(-||f_u - f_v||²) falls with colour difference.
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        features: int = 8,
        hidden: int = 16,
        colour_scale: float = 0.8,
    ) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(in_chans, features, 1)
        self.down1 = nn.Conv2d(in_chans, hidden, 3, stride=2, padding=1, padding_mode="replicate")
        self.down2 = nn.Conv2d(hidden, features, 3, stride=2, padding=1, padding_mode="replicate")
        with torch.no_grad():
            shared = min(in_chans, features)
            mixes = torch.randn(features, in_chans, generator=torch.Generator().manual_seed(0))
            mixes[:shared] = torch.eye(shared, in_chans)
            weight = colour_scale * mixes / mixes.norm(dim=1, keepdim=True)
            self.pointwise.weight.copy_(weight[:, :, None, None])
            self.pointwise.bias.fill_(3.0)
            self.down2.weight.mul_(0.05)
            self.down2.bias.zero_()

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pointwise = mix_channels(images, self.pointwise.weight.flatten(1), self.pointwise.bias)
        learns = torch.is_grad_enabled() and self.down2.weight.requires_grad
        if learns or not self.coarse_is_off():
            # (A coarse branch that is off adds exactly zero: skipped unless it may learn.)
            coarse = self.down2(_silu(self.down1(images)))
            coarse = F.interpolate(
                coarse, size=(height, width), mode="bilinear", align_corners=False
            )
            pointwise = pointwise + coarse
        return _silu(pointwise)

    def coarse_is_off(self) -> bool:
        """True when the coarse branch adds exactly zero (its last convolution is all zero, as in
        the bundled weights): each feature then reads only its own pixel."""
        return not (bool(self.down2.weight.any()) or bool(self.down2.bias.any()))

    def receptive_field(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Which input pixels each output pixel's features read at H x W.

        Returns:
            (rows [H, 2], columns [W, 2]) int64: the first and last input row (column) read by
            every output row (column), inclusive; the pixel itself when the coarse branch is off.
            With it on: two 3x3 stride-2 convolutions (replicate padding) reach 7 input pixels per
            coarse pixel and the bilinear upsampling reads two coarse pixels; with one more coarse
            pixel on each side for float rounding, a field spans up to 19 rows and columns.
        """
        device = self.pointwise.weight.device
        if self.coarse_is_off():
            rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
            return torch.stack([rows, rows], 1), torch.stack([cols, cols], 1)
        return _coarse_reach(height, device), _coarse_reach(width, device)


def _coarse_reach(size: int, device: torch.device) -> Tensor:
    """[size, 2] first and last input index each output index of the coarse branch reads along one
    axis (with the pixel itself, which the pointwise branch reads)."""
    reach = torch.arange(size, device=device)[:, None].expand(size, 2)
    for _ in range(2):  # 3x3, stride 2, padding 1 (replicate: indices clamp to the image)
        last = reach.shape[0] - 1
        centre = 2 * torch.arange((last + 2) // 2, device=device)
        reach = torch.stack(
            [reach[(centre - 1).clamp(0, last), 0], reach[(centre + 1).clamp(max=last), 1]], 1
        )
    # Bilinear, align_corners=False: output i reads coarse floor(s) and floor(s) + 1 with
    # s = max(0, (i + 0.5) * coarse / size - 0.5); one more on each side covers float rounding.
    last = reach.shape[0] - 1
    index = torch.arange(size, device=device)
    source = ((index + 0.5) * (last + 1) / size - 0.5).clamp(min=0).floor().long()
    first = reach[(source - 1).clamp(0, last), 0]
    final = reach[(source + 2).clamp(max=last), 1]
    return torch.stack([torch.minimum(first, index), torch.maximum(final, index)], 1)
