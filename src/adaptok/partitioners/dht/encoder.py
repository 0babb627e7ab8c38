"""The dHT pixel encoder: a few thousand parameters that turn pixels into d-dimensional features.

Two branches see the image at two scales: a 1x1 convolution (the pixel itself) and two stride-2
3x3 convolutions (a 4x coarser context) upsampled back to full size. Their sum goes through SiLU.
Stride-2 convolutions with replicate padding and an upsampling to the exact input size make the
encoder work on any image size, odd or rectangular, down to 1x1, and map a constant image to
constant features (zero padding made a flat image's features vary near the border, which cut
flat areas into strips; docs/design.md, "dHT", step 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PixelEncoder"]


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
        coarse = self.down2(F.silu(self.down1(images)))
        coarse = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        return F.silu(self.pointwise(images) + coarse)
