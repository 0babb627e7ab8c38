"""Patch scorers for the quadtree: how important it is to split each patch, at every size at once.

The protocol (`QuadtreeScorer`): a scorer is any callable

    scorer(images, *, min_patch, max_patch) -> list of k maps

with images [B, C, H, W], s = min_patch, S = max_patch = s * 2^k, and maps[j - 1]:
[B, H / (s * 2^j), W / (s * 2^j)] float, the importance of splitting each patch of side s * 2^j
(level j = 1..k; patches of side s never split, so they have no map). Larger means "split first".
This is the layout of `PrecomputedScorer(maps)`: maps[j] holds level j + 1 (docs/design.md,
"Quadtree").

Scorers that hold weights are `nn.Module`s (`FeatureScorer`); the others are plain objects. The
registry (`get_scorer`) maps "pixel_blur", "pooling", "feature" and "random" to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AdaptokError
from ..ops import halve, imagenet_mean_std, round_up
from ..weights import read_state_dict

__all__ = [
    "FeatureScorer",
    "PixelBlurScorer",
    "PoolingScorer",
    "PrecomputedScorer",
    "QuadtreeScorer",
    "RandomScorer",
    "available_scorers",
    "check_importance_maps",
    "feature_importance",
    "get_scorer",
    "pixel_blur_importance",
    "pixel_map_pyramid",
    "pooling_importance",
    "register_scorer",
]


@runtime_checkable
class QuadtreeScorer(Protocol):
    """Importance of splitting every patch, at every splittable size.

    Returns k maps, maps[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)] float (level j = 1..k).
    """

    def __call__(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]: ...


def _levels(min_patch: int, max_patch: int) -> int:
    return (max_patch // min_patch).bit_length() - 1


def map_shapes(image_shape: Sequence[int], min_patch: int, max_patch: int) -> list[tuple[int, ...]]:
    """The expected shape of every importance map: [(B, H / (s * 2^j), W / (s * 2^j)), j = 1..k]."""
    batch, _, height, width = image_shape
    return [
        (batch, height // (min_patch << j), width // (min_patch << j))
        for j in range(1, _levels(min_patch, max_patch) + 1)
    ]


def check_importance_maps(
    maps: Sequence[Tensor], image_shape: Sequence[int], min_patch: int, max_patch: int
) -> list[Tensor]:
    """Validate a scorer's output against the images and patch sizes.

    Args:
        maps: k maps, maps[j]: [B, H / (s * 2^(j + 1)), W / (s * 2^(j + 1))] float.
        image_shape: (B, C, H, W) of the images.
        min_patch: s.
        max_patch: S.

    Returns:
        The maps as a list (unchanged).

    Raises:
        AdaptokError: wrong number of maps, a wrong shape (the message lists the expected shapes),
            a non-float map or NaN values.
    """
    expected = map_shapes(image_shape, min_patch, max_patch)
    layout = ", ".join(f"maps[{j}]: {list(shape)}" for j, shape in enumerate(expected))
    if isinstance(maps, Tensor) or not isinstance(maps, Sequence):
        raise AdaptokError(
            f"importance maps must be a list of {len(expected)} tensors ({layout}), "
            f"got {type(maps).__name__}"
        )
    if len(maps) != len(expected):
        raise AdaptokError(
            f"expected {len(expected)} importance maps for min_patch={min_patch}, "
            f"max_patch={max_patch} ({layout or 'none: nothing can split'}), got {len(maps)}"
        )
    for j, (found, shape) in enumerate(zip(maps, expected, strict=True)):
        if not isinstance(found, Tensor) or tuple(found.shape) != shape:
            got = tuple(found.shape) if isinstance(found, Tensor) else type(found).__name__
            raise AdaptokError(
                f"importance map {j} (patches of side {min_patch << (j + 1)}) must have shape "
                f"{list(shape)}, got {got}; the layout is {layout}"
            )
        if not found.is_floating_point():
            raise AdaptokError(f"importance map {j} must be floating-point, got {found.dtype}")
        if bool(torch.isnan(found).any()):
            raise AdaptokError(f"importance map {j} contains NaN; clean the scores first")
    return list(maps)


# ------------------------------------------------------------------------------------ pixel blur
def pixel_blur_importance(images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
    """How much each patch loses when shown at resolution s (docs/design.md, "Quadtree").

    A patch of side P = s * f (f = 2^j) becomes an s x s token by area averaging over f x f
    blocks; shown back at full size (every block its mean, the piecewise-constant upsampling of
    what the token holds) it differs from the image by the within-block deviations. Importance =
    sqrt(P * mean squared error over the patch's pixels and channels). (The reference code
    upsamples bilinearly instead.)

    Speed: the squared error of a patch is sum(x^2) - f^2 * sum(block means^2), so the image is
    read at full resolution only twice (one fused sum of squares over rows of 2s pixels, and the
    2 x 2 block means); everything else happens on images 4x, 16x, ... smaller, in float64. Errors
    below the rounding floor of that difference (16 eps of sum(x^2)) are set to zero, so flat
    patches get exactly zero importance.

    Args:
        images: [B, C, H, W] float; H and W multiples of max_patch.
        min_patch: s.
        max_patch: S = s * 2^k.

    Returns:
        k maps, maps[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)] (same dtype as images).
    """
    dtype = images.dtype
    images = _summable(images)
    channels = images.shape[1]
    levels = _levels(min_patch, max_patch)
    floor = 16 * torch.finfo(images.dtype).eps
    # Sum of x^2 over channels and every row of a level-1 patch: [B, H, W / (2 s)].
    patch_energy = _row_energy(images, 2 * min_patch)
    maps = []
    means = images
    for level in range(1, levels + 1):
        patch = min_patch << level
        means = halve(means)  # [B, C, H / f, W / f] means of the f x f blocks
        # sum over channels and the patch's s x s blocks of their squared means (f = 2^level)
        block_energy = _block_sum(_row_energy(means, min_patch), min_patch, 1)
        patch_energy = (
            _block_sum(patch_energy, patch, 1) if level == 1 else _block_sum(patch_energy, 2, 2)
        )
        error = patch_energy - block_energy * float(1 << (2 * level))
        error = torch.where(error > floor * patch_energy, error, 0.0)
        mse = error / (channels * patch * patch)
        maps.append((mse * patch).sqrt().to(dtype))
    return maps


def _summable(images: Tensor) -> Tensor:
    """Images in a precision that holds sums of squares: half precision goes to float32."""
    return images.float() if images.element_size() < 4 else images


def _row_energy(images: Tensor, length: int) -> Tensor:
    """[B, C, H, W] -> [B, H, W / length] float64 sum over channels of x^2 over rows of `length`."""
    batch, channels, height, width = images.shape
    rows = torch.linalg.vector_norm(images.reshape(-1, length), dim=-1).double().square_()
    return rows.view(batch, channels, height, width // length).sum(1)


def _pool(values: Tensor, factor: int) -> Tensor:
    """[B, h, w] -> [B, h / factor, w / factor] block means."""
    return F.avg_pool2d(values[:, None], factor)[:, 0] if factor > 1 else values


def _block_sum(values: Tensor, rows: int, cols: int) -> Tensor:
    """[B, h, w] -> [B, h / rows, w / cols] sums of rows x cols blocks."""
    batch, height, width = values.shape
    return values.view(batch, height // rows, rows, width // cols, cols).sum((2, 4))


class PixelBlurScorer:
    """Scorer object for `pixel_blur_importance` (no parameters)."""

    def __call__(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
        with torch.no_grad():
            return pixel_blur_importance(images, min_patch=min_patch, max_patch=max_patch)

    def __repr__(self) -> str:
        return "PixelBlurScorer()"


def pooling_importance(images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
    """What splitting each patch saves a model that pools its tokens (docs/design.md, "Quadtree").

    A pooled token (`extract_tokens(..., pooled=True)`, `retrofit`'s default) is the mean of
    the s x s cells its patch covers: a patch of side P = s * 2^j stands for 4^j cells by
    their mean cell. Splitting it replaces that one mean by the means of its four children, and
    the squared error (summed over the patch's pixels, mean over channels) falls by exactly

        4^(j - 1) * sum over the children c of |mean cell of c - mean cell of the patch|^2

    (the between-children term of the error's decomposition; for j = 1 the children are cells
    and the saving is the patch's whole error). That saving is the importance, so the greedy
    spends each split where pooling loses most: on the cells that differ from their
    neighbours, as an object's cells beside an empty background do, not on texture inside a
    cell, which a cell's own embedding keeps anyway (what `pixel_blur_importance` measures).
    Flat patches, and patches of equal cells, get exactly zero.

    Speed: the saving is sum |m_c|^2 - 4 |m|^2 (times 4^(j - 1)), so the image is read once
    for its cells' energies and once for the first means, in rows of s pixels; the cells are
    never gathered into vectors (a transposed copy of the image costs ten times as much).

    Args:
        images: [B, C, H, W] float; H and W multiples of max_patch.
        min_patch: s.
        max_patch: S = s * 2^k.

    Returns:
        k maps, maps[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)] (same dtype as images).
    """
    dtype = images.dtype
    images = _summable(images)
    batch, channels, height, width = images.shape
    side = min_patch
    means = images.view(batch, channels, height // side, side, width // side, side)
    energy = _cell_energy(means)  # |cell|^2 of every cell
    maps = []
    for level in range(1, _levels(min_patch, max_patch) + 1):
        means = _halve_cells(means)  # the mean cell of every patch of side s * 2^level
        mean_energy = _cell_energy(means)
        saving = _block_sum(energy, 2, 2) - 4.0 * mean_energy  # >= 0 up to rounding
        scale = float(1 << (2 * level - 2)) / channels
        maps.append(saving.clamp_(min=0.0).mul_(scale).to(dtype))
        energy = mean_energy
    return maps


def _cell_energy(cells: Tensor) -> Tensor:
    """[B, C, h, s, w, s] cells -> [B, h, w] float64 sum of squares over channels and pixels
    (equal cells give equal sums: the same rows in the same order)."""
    rows = torch.linalg.vector_norm(cells, dim=-1).double().square_()
    return rows.sum((1, 3))


def _halve_cells(cells: Tensor) -> Tensor:
    """[B, C, h, s, w, s] cells -> [B, C, h / 2, s, w / 2, s] means of 2 x 2 blocks of cells
    (four equal cells give that cell exactly)."""
    batch, channels, height, side, width, _ = cells.shape
    blocks = cells.view(batch, channels, height // 2, 2, side, width // 2, 2, side)
    pairs = blocks[:, :, :, 0] + blocks[:, :, :, 1]
    return (pairs[:, :, :, :, :, 0] + pairs[:, :, :, :, :, 1]).mul_(0.25)


class PoolingScorer:
    """Scorer object for `pooling_importance` (no parameters)."""

    def __call__(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
        with torch.no_grad():
            return pooling_importance(images, min_patch=min_patch, max_patch=max_patch)

    def __repr__(self) -> str:
        return "PoolingScorer()"


# ------------------------------------------------------------------------------------- features
def _feature_map(backbone: nn.Module, images: Tensor) -> Tensor:
    out = backbone(images)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        out = out[-1]
    if not isinstance(out, Tensor) or out.ndim != 4:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise AdaptokError(
            f"the feature backbone must return a [B, C, H / stride, W / stride] map (or a list "
            f"ending with one), got {got}"
        )
    return out


def _blur(images: Tensor, factor: int) -> Tensor:
    """Area-downsample by `factor`, then bilinearly upsample back (a CNN sees no block edges)."""
    small = F.avg_pool2d(images, factor)
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


def feature_importance(
    images: Tensor,
    backbone: nn.Module,
    *,
    min_patch: int,
    max_patch: int,
    error: Literal["mse", "cosine"] = "mse",
) -> list[Tensor]:
    """Feature-based importance (the Quadformer paper's main scorer, docs/design.md, "Quadtree").

    The backbone runs on the image and on versions blurred by 2^j (j = 1..k); the importance of a
    level-j patch is the feature error of blur 2^j (mean squared error over channels, or cosine
    distance), averaged over the patch (or, for patches smaller than the feature stride, the error
    of the feature cell the patch lies in).

    Args:
        images: [B, C, H, W] what the backbone expects (normalise first).
        backbone: module returning a [B, D, H / stride, W / stride] map (any integer stride, e.g.
            16 or 32, detected from the output), or a list of maps whose last is used.
        min_patch: s.
        max_patch: S.
        error: "mse" or "cosine".

    Returns:
        k maps, maps[j - 1]: [B, H / (s * 2^j), W / (s * 2^j)].
    """
    if error not in ("mse", "cosine"):
        raise AdaptokError(f"error must be 'mse' or 'cosine', got {error!r}")
    height, width = images.shape[-2:]
    sharp = _feature_map(backbone, images)
    rows, cols = sharp.shape[-2:]
    stride = height // rows if rows else 0
    if not stride or rows * stride != height or cols * stride != width:
        raise AdaptokError(
            f"the feature map {rows}x{cols} of a {height}x{width} image has no integer stride; "
            "use a backbone whose stride divides the image size (e.g. 16 or 32)"
        )
    maps = []
    for level in range(1, _levels(min_patch, max_patch) + 1):
        blurred = _feature_map(backbone, _blur(images, 1 << level))
        if error == "mse":
            err = (blurred - sharp).square().mean(1)
        else:
            err = 1.0 - F.cosine_similarity(blurred, sharp, dim=1)
        patch = min_patch << level
        if patch >= stride:
            err = _pool(err, patch // stride)
        else:
            err = err.repeat_interleave(stride // patch, 1).repeat_interleave(stride // patch, 2)
        maps.append(err)
    return maps


def default_backbone(weights: str | Path, *, model_name: str = "resnet18") -> nn.Module:
    """A timm CNN trunk with weights from a local file: timm's feature stage 3 (stride 16).

    Args:
        weights: a state dict of the timm classification model (`.pth`/`.pt` via torch.load, or
            `.safetensors`); classifier and unused-stage keys are ignored, missing keys raise.
        model_name: timm model name (built with pretrained=False).
    """
    import timm

    path = Path(weights)
    state = read_state_dict(path, what="feature scorer weights")
    model = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=(3,))
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise AdaptokError(
            f"{path} is not a {model_name} state dict: {len(missing)} keys are missing "
            f"(e.g. {', '.join(missing[:3])})"
        )
    model.load_state_dict({key: state[key] for key in own}, strict=True)
    return model


class FeatureScorer(nn.Module):
    """Feature-based scorer around a frozen backbone (see `feature_importance`).

    Args:
        backbone: any module returning a stride-16/32 feature map; None builds the default timm
            CNN (`model_name`, first three stages) from `weights`.
        weights: local weights file, required when backbone is None (there is no download, and
            random weights would score noise); with a backbone, loaded into it (strict).
        error: "mse" or "cosine" feature error.
        model_name: the timm model of the default backbone.
        mean: per-channel mean subtracted before the backbone (ImageNet's for the default
            backbone, none for a given one); images are expected in [0, 1].
        std: per-channel std divided by before the backbone.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        *,
        weights: str | Path | None = None,
        error: Literal["mse", "cosine"] = "mse",
        model_name: str = "resnet18",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if error not in ("mse", "cosine"):
            raise AdaptokError(f"error must be 'mse' or 'cosine', got {error!r}")
        if backbone is None:
            if weights is None:
                raise AdaptokError(
                    "the feature scorer needs pretrained weights: pass "
                    f"FeatureScorer(weights='path/to/{model_name}.pth') (a timm {model_name} "
                    "state dict) or FeatureScorer(backbone=your_frozen_module); without them it "
                    "would score with random weights. Pass the object as scorer=..."
                )
            backbone = default_backbone(weights, model_name=model_name)
            imagenet_mean, imagenet_std = imagenet_mean_std()
            mean = imagenet_mean if mean is None else mean
            std = imagenet_std if std is None else std
        elif weights is not None:
            backbone.load_state_dict(
                read_state_dict(weights, what="feature scorer weights"), strict=True
            )
        if not isinstance(backbone, nn.Module):
            raise AdaptokError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.error = error
        self.register_buffer("mean", _channel_stat(mean), persistent=False)
        self.register_buffer("std", _channel_stat(std), persistent=False)

    def train(self, mode: bool = True) -> FeatureScorer:
        """The backbone stays frozen in eval mode (batch-norm statistics never change)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
        with torch.no_grad():
            if self.mean is not None:
                images = images - self.mean.to(images)
            if self.std is not None:
                images = images / self.std.to(images)
            return feature_importance(
                images, self.backbone, min_patch=min_patch, max_patch=max_patch, error=self.error
            )


def _channel_stat(values: Sequence[float] | None) -> Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


# ----------------------------------------------------------------------------- random, precomputed
class RandomScorer:
    """Uniform random importance, reproducible from a seed.

    The numbers come from a CPU generator seeded with `seed` at every call, drawn image after image,
    so image b of a batch always gets the same scores whatever the other images are (and whatever
    the device).
    """

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise AdaptokError(f"seed must be an integer, got {seed!r}")
        self.seed = seed

    def __call__(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
        shapes = map_shapes(images.shape, min_patch, max_patch)
        sizes = [math.prod(shape[1:]) for shape in shapes]
        generator = torch.Generator().manual_seed(self.seed)
        draws = torch.rand(images.shape[0], sum(sizes), generator=generator)
        draws = draws.to(device=images.device, dtype=images.dtype)
        return [
            part.reshape(shape) for part, shape in zip(draws.split(sizes, 1), shapes, strict=True)
        ]

    def __repr__(self) -> str:
        return f"RandomScorer(seed={self.seed})"


class PrecomputedScorer:
    """Importance given by the user (e.g. a Grad-CAM map), in one of two forms.

    Args:
        maps: either one pixel-level map, [B, H, W] or [H, W] (one map for every image of the
            batch), a float tensor or numpy array the size of the images: the importance of a
            patch is the map's mean over the patch's pixels (area-average pooling to each level's
            grid, `pixel_map_pyramid`); or the per-level list, k maps, maps[j]:
            [B, H / (s * 2^(j + 1)), W / (s * 2^(j + 1))] float, the importance of the patches of
            level j + 1 (side s * 2^(j + 1)). Checked against the images when called, and moved
            to the images' device. A pixel map of an image that `partition` pads to a multiple
            of max_patch is padded the same way (edge values repeated).
    """

    def __init__(self, maps: Tensor | np.ndarray | Sequence[Tensor]) -> None:
        if isinstance(maps, np.ndarray):
            maps = torch.from_numpy(maps)
        if isinstance(maps, Tensor):
            if maps.ndim not in (2, 3):
                raise AdaptokError(
                    f"PrecomputedScorer takes one pixel map [B, H, W] or [H, W], or a list of "
                    f"per-level maps; got a tensor of shape {list(maps.shape)}"
                )
            self.pixel_map: Tensor | None = maps
            self.maps: list[Tensor] = []
        elif isinstance(maps, Sequence) and not isinstance(maps, (str, bytes)):
            self.pixel_map = None
            self.maps = list(maps)
        else:
            raise AdaptokError(
                f"PrecomputedScorer needs one pixel map ([B, H, W] or [H, W]) or a list of "
                f"importance maps (maps[j] for the patches of side s * 2^(j + 1)), got "
                f"{type(maps).__name__}"
            )

    def __call__(self, images: Tensor, *, min_patch: int, max_patch: int) -> list[Tensor]:
        if self.pixel_map is None:
            maps = self.maps
        else:
            maps = pixel_map_pyramid(
                self.pixel_map, images.shape, min_patch=min_patch, max_patch=max_patch
            )
        maps = check_importance_maps(maps, images.shape, min_patch, max_patch)
        return [m.to(images.device) for m in maps]

    def __repr__(self) -> str:
        if self.pixel_map is not None:
            return f"PrecomputedScorer(pixel map {list(self.pixel_map.shape)})"
        return f"PrecomputedScorer({[tuple(m.shape) for m in self.maps]})"


def pixel_map_pyramid(
    pixel_map: Tensor, image_shape: Sequence[int], *, min_patch: int, max_patch: int
) -> list[Tensor]:
    """One pixel-level importance map -> the quadtree's per-level maps, by area averaging.

    Args:
        pixel_map: [B, H, W] or [H, W] (the same map for every image) float.
        image_shape: (B, C, H', W') of the images; H' and W' multiples of max_patch, and either
            equal to H and W or their padded size (round_up(H, max_patch)): the map is then
            padded like the image (edge values repeated at the bottom and right).
        min_patch: s.
        max_patch: S = s * 2^k.

    Returns:
        k maps, maps[j - 1]: [B, H' / (s * 2^j), W' / (s * 2^j)], the mean of the pixel map over
        each patch of side s * 2^j.
    """
    batch, _, height, width = image_shape
    if pixel_map.ndim == 2:
        pixel_map = pixel_map.expand(batch, *pixel_map.shape)
    if not pixel_map.is_floating_point():
        raise AdaptokError(f"the importance map must be floating-point, got {pixel_map.dtype}")
    found = tuple(pixel_map.shape)
    padded = tuple(round_up(size, max_patch) for size in found[1:])
    if found[0] != batch or (found[1:] != (height, width) and padded != (height, width)):
        raise AdaptokError(
            f"the pixel importance map must have shape [{batch}, {height}, {width}] (or "
            f"[{height}, {width}] for every image), the images' size; got {list(found)}. A "
            "coarser map (e.g. a ViT's 14x14 Grad-CAM): resize it to the images' size first, "
            f"torch.nn.functional.interpolate(cam[:, None], size=({height}, {width}), "
            'mode="bilinear")[:, 0]'
        )
    if found[1:] != (height, width):
        pad = (0, width - found[2], 0, height - found[1])
        pixel_map = F.pad(pixel_map[:, None], pad, mode="replicate")[:, 0]
    maps = [_pool(pixel_map, 2 * min_patch)] if max_patch > min_patch else []
    for _ in range(1, _levels(min_patch, max_patch)):
        maps.append(_pool(maps[-1], 2))  # the mean of 2 x 2 equal blocks' means
    return maps


# ------------------------------------------------------------------------------------- registry
_SCORERS: dict[str, Callable[..., QuadtreeScorer]] = {
    "pixel_blur": PixelBlurScorer,
    "pooling": PoolingScorer,
    "feature": FeatureScorer,
    "random": RandomScorer,
}


def available_scorers() -> list[str]:
    """Names accepted by `get_scorer` and by quadtree_partition(scorer=...)."""
    return sorted(_SCORERS)


def register_scorer(name: str, factory: Callable[..., QuadtreeScorer]) -> None:
    """Make scorer=name build `factory()` (a callable following the `QuadtreeScorer` protocol)."""
    _SCORERS[name] = factory


def get_scorer(name: str, *, seed: int | None = None) -> QuadtreeScorer:
    """Build the scorer registered under `name`.

    Args:
        name: one of `available_scorers()`.
        seed: seed for "random" (default 0); other scorers take none.

    Raises:
        AdaptokError: unknown name (listing the known ones), or a seed for a scorer without one.
    """
    if name not in _SCORERS:
        raise AdaptokError(
            f"unknown scorer {name!r}; known scorers: {', '.join(available_scorers())} "
            "(or pass a scorer object, e.g. adaptok.partitioners.scorers.PrecomputedScorer(maps))"
        )
    if name == "random":
        return RandomScorer(0 if seed is None else seed)
    if seed is not None:
        raise AdaptokError(f"seed only applies to scorer='random', got seed={seed!r} for {name!r}")
    return _SCORERS[name]()
