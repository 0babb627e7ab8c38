"""`partition(images, method=...)`: one entry point, a registry of partitioners behind it."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import AdaptokError
from ..io import ImageLike, as_images
from ..regions import Partition
from ..validate import check_options

__all__ = ["available_methods", "partition", "register_partitioner"]

Partitioner = Callable[..., Partition]

# name -> "module:function", imported on first use so that `import adaptok` stays light.
_REGISTRY: dict[str, str | Partitioner] = {
    "grid": "adaptok.partitioners.grid:grid_partition",
    "quadtree": "adaptok.partitioners.quadtree:quadtree_partition",
    "dht": "adaptok.partitioners.dht:dht_partition",
    "slic": "adaptok.partitioners.slic:slic_partition",
}


def register_partitioner(name: str, function: Partitioner) -> None:
    """Make `partition(images, method=name, **options)` call `function(images, **options)`."""
    _REGISTRY[name] = function


def available_methods() -> list[str]:
    """Names accepted by `partition(..., method=...)`."""
    return sorted(_REGISTRY)


def get_partitioner(method: str) -> Partitioner:
    """The function registered under `method`; raises listing the known names otherwise."""
    if method not in _REGISTRY:
        raise AdaptokError(
            f"unknown partition method {method!r}; known methods: {', '.join(available_methods())}"
        )
    entry = _REGISTRY[method]
    if isinstance(entry, str):
        module_name, function_name = entry.split(":")
        entry = getattr(importlib.import_module(module_name), function_name)
        _REGISTRY[method] = entry
    return entry


def partition(
    images: ImageLike, method: str = "grid", *, input_space: str = "unit", **options: object
) -> Partition:
    """Cut a batch of images into regions.

    Args:
        images: [B, C, H, W] (or [C, H, W]) float images in [0, 1], uint8 tensors, numpy arrays,
            PIL images, paths, or a list of those of one size (see `adaptok.io.as_images`).
        method: one of `available_methods()`: "grid", "quadtree", "dht", "slic", or a
            registered one.
        input_space: "unit" for [0, 1] images, "imagenet" for ImageNet-normalised tensors.
            Values far outside [0, 1] are refused rather than partitioned wrongly.
        **options: the method's own options (e.g. patch_size for grid; budget, min_patch,
            max_patch, scorer for quadtree); options the method does not take are refused.

    Returns:
        The Partition of the batch.
    """
    function = get_partitioner(method)
    check_options(function, options, what=f"method {method!r}", skip=1)
    return function(as_images(images, input_space=input_space), **options)
