"""SLIC superpixels (scikit-image) as a Partition: the classic baseline, `method="slic"`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import AdaptokError, check_images
from ..graph import label_components
from ..regions import Partition
from ..validate import check_int
from .spec import PartitionerSpec

__all__ = ["SPEC", "slic_partition"]


# SLIC's default target: as many segments as a 224x224 image has 16-pixel patches
DEFAULT_SEGMENTS = 196


def slic_partition(
    images: Tensor,
    *,
    budget: int | None = DEFAULT_SEGMENTS,
    compactness: float = 10.0,
    max_iterations: int = 10,
    sigma: float = 0.0,
    lab: bool | None = None,
) -> Partition:
    """Partition every image into SLIC superpixels (Achanta et al. 2012, scikit-image).

    `budget` is SLIC's target number of segments: the count it returns is only approximate and
    usually below the target (65-95% of it on the scikit-image photos at 224x224), because SLIC
    places seeds on a regular grid, drops empty clusters and merges undersized fragments when it
    enforces connectivity. To match a token count, adjust `budget` by count / target and rerun.

    Every final region is 4-connected: SLIC's own connectivity step (`enforce_connectivity`)
    should already ensure it, and `label_components` splits the labels again as a guarantee.

    SLIC runs per image on the CPU (scikit-image), so this is a loop over images; the result is
    moved to the images' device.

    Args:
        images: [B, C, H, W] float images in [0, 1] (RGB when C == 3).
        budget: target number of superpixels per image, 1 <= budget <= H*W; None means the
            default, DEFAULT_SEGMENTS (as for the quadtree, whose None is its default too).
        compactness: balance of colour against space (higher: squarer superpixels). The scale
            assumes Lab colours (C == 3); for other inputs scale it to your value range.
        max_iterations: k-means iterations.
        sigma: Gaussian pre-smoothing width in pixels (0: none).
        lab: convert RGB to CIELab first; None means "when C == 3".

    Returns:
        Partition of the batch, regions 4-connected.
    """
    check_images(images)
    _, channels, height, width = images.shape
    budget = check_int(
        "budget", DEFAULT_SEGMENTS if budget is None else budget, hint="(segments per image)"
    )
    if budget > height * width:
        raise AdaptokError(
            f"budget {budget} exceeds the {height}x{width} = {height * width} pixels of each "
            f"image; use budget <= {height * width}"
        )
    if not compactness > 0:
        raise AdaptokError(f"compactness must be positive, got {compactness!r}")
    check_int("max_iterations", max_iterations)
    if lab is None:
        lab = channels == 3
    if lab and channels != 3:
        raise AdaptokError(f"lab=True needs RGB images (C = 3), got C = {channels}")
    if lab:
        low, high = float(images.min()), float(images.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise AdaptokError(
                f"SLIC's Lab conversion expects RGB in [0, 1], got values in [{low:.3g}, "
                f"{high:.3g}]; undo the normalisation first, or pass lab=False and rescale "
                "compactness to your value range"
            )
    from skimage.segmentation import slic  # scikit-image loads in 0.25 s: only when used

    arrays = images.detach().float().clamp(0, 1) if lab else images.detach().float()
    arrays = arrays.permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    labels = np.stack(
        [
            slic(
                array,
                n_segments=budget,
                compactness=compactness,
                max_num_iter=max_iterations,
                sigma=sigma,
                convert2lab=lab,
                enforce_connectivity=True,
                start_label=0,
                channel_axis=-1,
            )
            for array in arrays
        ]
    )
    pieces = label_components(torch.from_numpy(labels.astype(np.int64)).to(images.device))
    return Partition.from_labels(pieces, relabel=False)


def derive_options(
    image_size: int, patch_size: int, given: Mapping[str, object]
) -> dict[str, object]:
    """A model's SLIC: as many segments as the grid has patches (the default, DEFAULT_SEGMENTS,
    suits 224x224 photos: at 32x32 it gave 255 regions of 4 pixels)."""
    return {"budget": (image_size // patch_size) ** 2, **given}


SPEC = PartitionerSpec(
    name="slic",
    function=slic_partition,
    budget="target",
    none_means="the default",
    default=f"{DEFAULT_SEGMENTS} segments (approximate)",
    default_budget=lambda height, width, options: DEFAULT_SEGMENTS,
    derive=derive_options,
)
