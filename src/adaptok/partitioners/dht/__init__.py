"""∂HT, the differentiable hierarchical tokenizer (Aasan et al., NeurIPS 2025).

`dht_partition(images, budget=...)` partitions with the bundled weights; `DHTTokenizer` is the
trainable module whose forward also returns mean-injected pixels for the extractor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ...errors import AdaptokError, check_images
from ...regions import Partition
from ..spec import NO_CAP, PartitionerSpec
from .budget import AUTO, check_budget, default_budget
from .criteria import CRITERIA, check_criterion, information_criterion
from .tokenizer import DHTResult, DHTTokenizer, check_cell, check_min_width
from .weights import (
    describe_default_weights,
    load_default_tokenizer,
    load_tokenizer,
    save_tokenizer,
)

__all__ = [
    "CRITERIA",
    "SPEC",
    "DHTResult",
    "DHTTokenizer",
    "default_budget",
    "describe_default_weights",
    "dht_partition",
    "information_criterion",
    "load_default_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
]

_CACHE: dict[tuple[str, str], DHTTokenizer] = {}


def _default_tokenizer(device: torch.device, input_space: str) -> DHTTokenizer:
    key = (str(device), input_space)
    if key not in _CACHE:
        _CACHE[key] = load_default_tokenizer(input_space=input_space, device=device)
    return _CACHE[key]


def dht_partition(
    images: Tensor,
    *,
    budget: int | str | None = AUTO,
    criterion: str = "aicc",
    tokenizer: DHTTokenizer | None = None,
    input_space: str = "unit",
    resolution: float = 1.0,
    cell: int | None = None,
    min_width: float | None = None,
) -> Partition:
    """Partition images with ∂HT (eval mode, no gradient, deterministic).

    Args:
        images: [B, C, H, W] float images, H, W >= 2, any size; C = 3 (C = 1 is repeated to 3).
        budget: cap on regions per image: "auto" (default) caps at round(sqrt(H*W) / 0.56)
            (400 at 224x224), an int >= 1 caps at that many, None does not cap (the count then
            follows the image's content: 1 for a flat image). Each image gets
            min(regions found, cap).
        criterion: "aicc", "aic", "bic" or "cic".
        tokenizer: a trained DHTTokenizer; None uses the bundled default weights (cached per
            device).
        input_space: with the default tokenizer, "unit" for images in [0, 1] or "imagenet" for
            ImageNet-normalised images.
        resolution: fraction of the image's side at which the hierarchy runs, the regions
            lifted back to full size (1: full size; see `DHTTokenizer.forward`). A ViT's tokens
            default to 8 working pixels per patch side (`derive_options`).
        cell: None, or a block side in pixels: regions made of whole blocks (a ViT's patches;
            see `DHTTokenizer.forward`). A retrofitted ViT's dHT uses its patch side.
        min_width: thinnest selectable region in working pixels (None: the tokenizer's, 3 for
            the bundled weights; 0 turns the rule off, as a model's whole-cell regions do).

    Returns:
        The Partition.
    """
    check_images(images, min_size=2)
    check_budget(budget)
    check_criterion(criterion)
    check_cell(cell, *images.shape[-2:], resolution)
    if min_width is not None:
        check_min_width(min_width)
    if tokenizer is None:
        tokenizer = _default_tokenizer(images.device, input_space)
    if images.shape[1] == 1 and tokenizer.in_chans == 3:
        images = images.expand(-1, 3, -1, -1)
    images = images.to(next(tokenizer.parameters()).dtype)  # e.g. float64 input, float32 weights
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        return tokenizer.partition(
            images,
            budget=budget,
            criterion=criterion,
            resolution=resolution,
            cell=cell,
            min_width=min_width,
        )
    finally:
        tokenizer.train(was_training)


def check_model_options(options: Mapping[str, object], image_size: int, in_chans: int) -> None:
    """Refuse the per-call options of a model's dHT tokenizer when the model is built (a budget
    of 0 would otherwise fail at its first forward); construction options are checked by
    building the tokenizer."""
    check_budget(options.get("budget", AUTO))
    if "criterion" in options:
        check_criterion(options["criterion"])
    if not isinstance(options.get("sample_budget", False), bool):
        raise AdaptokError(f"sample_budget must be True or False, got {options['sample_budget']!r}")
    check_cell(options.get("cell"), image_size, image_size, options.get("resolution", 1.0))
    if options.get("min_width") is not None:
        check_min_width(options["min_width"])


# A ViT's dHT tokens are found at this many working pixels per patch side (resolution 8 / P,
# at most 1): chosen on held-out photos (benchmarks/results/dht_resolution.md: retina,
# stereo_motorcycle, colorwheel, logo and six grey textures, none of them a benchmark photo) at
# the ViT-S/16 setting (224x224, cap 98): working at 112 gave a better mean-colour PSNR at the
# same 98 regions (23.64 against 22.34 dB) in a quarter of the time.
PATCH_PIXELS = 8
# Regions made of whole cells (`cell`) are found at this many working pixels per cell side, with
# min_width off (a whole cell is never a thin token; the bundled weights' 3 working pixels would
# keep no region narrower than 1.5 cells there): chosen on held-out images
# (benchmarks/results/align_probe.md: the last 1,000 of each Fashion-MNIST training split, no
# benchmark's) with the accuracy benchmark's grid parents retrofitted at cap 31: 2 pixels kept
# them at 73.3 / 41.2% (Fashion-MNIST 64 / cluttered 128) against 72.2 / 40.3% at 8, in a fifth
# of the partition's time.
CELL_PIXELS = 2


def derive_options(image_size: int, patch_size: int, given: Mapping[str, object]) -> dict:
    """A model's dHT options: a cap of half the plain grid's tokens (98 for a 224 ViT with
    16-pixel patches), as the quadtree's derived budget, and the hierarchy run at PATCH_PIXELS
    working pixels per patch side (half size for 16-pixel patches, full size up to 8), or at
    CELL_PIXELS per cell side, min_width off, when regions are made of whole cells (`cell`);
    `given` merged over them. The image-level default (`"auto"`, 400 at 224) would give a
    retrofitted ViT-S twice its grid's tokens: slower, where the point of retrofitting is fewer
    tokens."""
    grid = (image_size // patch_size) ** 2
    derived: dict[str, object] = {"budget": max(1, grid // 2)}
    cell = given.get("cell")
    if isinstance(cell, int) and not isinstance(cell, bool) and cell > 0:
        derived.update(resolution=min(1.0, CELL_PIXELS / cell), min_width=0.0)
    else:  # unaligned (a wrong cell is refused by check_model_options)
        derived["resolution"] = min(1.0, PATCH_PIXELS / patch_size)
    return {**derived, **given}


SPEC = PartitionerSpec(
    name="dht",
    function=dht_partition,
    budget="cap",
    none_means=NO_CAP,
    default='budget="auto": at most round(sqrt(H*W) / 0.56) regions (400 at 224x224)',
    default_budget=lambda height, width, options: default_budget(height, width),
    derive=derive_options,
    validate=check_model_options,
    call_options=("budget", "criterion", "sample_budget", "resolution", "cell", "min_width"),
)
