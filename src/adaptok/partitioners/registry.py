"""`partition(images, method=...)`: one entry point, a registry of partitioners behind it.

Each partitioner also declares what it needs to partition an image of any size
(`SizePolicy`): square-patch methods (grid, quadtree) run on a copy padded at the bottom and
right to a multiple of their largest patch, and `partition` crops the result back. The Python API,
`adaptok tokenize` and `adaptok vectorize` all go through `partition`, so they take the same
sizes."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..errors import AdaptokError
from ..graph import label_components
from ..io import ImageLike, as_images, pad_to_multiple
from ..ops import round_up
from ..regions import Partition
from ..validate import as_int, check_options

__all__ = [
    "SizePolicy",
    "available_methods",
    "get_partitioner",
    "padded_size",
    "partition",
    "register_partitioner",
]

Partitioner = Callable[..., Partition]
# (height, width, options) -> the multiple that H and W are padded to (options it cannot take at
# that size are refused here, naming the image's own size).
SizePolicy = Callable[[int, int, dict[str, Any]], int]

# name -> "module:function", imported on first use so that `import adaptok` stays light.
_REGISTRY: dict[str, str | Partitioner] = {
    "grid": "adaptok.partitioners.grid:grid_partition",
    "quadtree": "adaptok.partitioners.quadtree:quadtree_partition",
    "dht": "adaptok.partitioners.dht:dht_partition",
    "slic": "adaptok.partitioners.slic:slic_partition",
}


# name -> "module:function" of its size policy; methods without one take any size.
_SIZE_POLICIES: dict[str, str | SizePolicy] = {
    "grid": "adaptok.partitioners.grid:grid_size_policy",
    "quadtree": "adaptok.partitioners.quadtree:quadtree_size_policy",
}


def register_partitioner(
    name: str,
    function: Partitioner,
    *,
    size_policy: SizePolicy | None = None,
    replace: bool = False,
) -> None:
    """Make `partition(images, method=name, **options)` call `function(images, **options)`.

    Args:
        name: the method name.
        function: images [B, C, H, W] in [0, 1] and keyword options -> Partition of those
            B images at their H x W (checked on every call).
        size_policy: for methods that only take some sizes, (H, W, options) -> the multiple that
            H and W are padded to (see `partition`); None: the method takes any size.
        replace: allow replacing a method already registered (the built-in ones included).
    """
    if not isinstance(name, str) or not name:
        raise AdaptokError(f"a partitioner's name must be a non-empty string, got {name!r}")
    if not callable(function):
        raise AdaptokError(f"partitioner {name!r} must be callable, got {type(function).__name__}")
    if name in _REGISTRY and not replace:
        raise AdaptokError(
            f"partition method {name!r} is already registered; pick another name, or pass "
            "replace=True to replace it"
        )
    _REGISTRY[name] = function
    _SIZE_POLICIES.pop(name, None)
    if size_policy is not None:
        _SIZE_POLICIES[name] = size_policy


def available_methods() -> list[str]:
    """Names accepted by `partition(..., method=...)`."""
    return sorted(_REGISTRY)


def get_partitioner(method: str) -> Partitioner:
    """The function registered under `method`; raises listing the known names otherwise."""
    if method not in _REGISTRY:
        raise AdaptokError(
            f"unknown partition method {method!r}; known methods: {', '.join(available_methods())}"
        )
    return _resolve(_REGISTRY, method)


def _resolve(table: dict[str, Any], name: str) -> Any:
    entry = table[name]
    if isinstance(entry, str):
        module_name, function_name = entry.split(":")
        entry = getattr(importlib.import_module(module_name), function_name)
        table[name] = entry
    return entry


def partition(
    images: ImageLike, method: str = "grid", *, input_space: str = "unit", **options: object
) -> Partition:
    """Cut a batch of images into regions.

    Size policy: grid and quadtree need H and W to be multiples of their largest patch
    (patch_size, max_patch). Other sizes run on a copy padded at the bottom and right (edge pixels
    repeated) to the next multiple, and the regions are cropped back to the image: a patch cut
    by the crop keeps its part inside the image (a narrower rectangle), and patches wholly in the
    padding are dropped, so a quadtree may return a few tokens fewer than its budget, which must
    be valid for the padded size. dht and slic take any size as it is. `adaptok tokenize` and
    `adaptok vectorize` apply the same policy (they call this function).

    Args:
        images: [B, C, H, W] (or [C, H, W]) float images in [0, 1], uint8 tensors, numpy arrays,
            PIL images, paths, or a list of those of one size (see `adaptok.io.as_images`).
        method: one of `available_methods()`: "grid", "quadtree", "dht", "slic", or a
            registered one.
        input_space: "unit" for [0, 1] images, "imagenet" for ImageNet-normalised tensors.
            Values far outside [0, 1] are refused rather than partitioned wrongly.
        **options: the method's own options (e.g. patch_size for grid; budget, min_patch,
            max_patch, scorer for quadtree); options the method does not take are refused.
            Integer scalars of numpy and torch (np.int64(100), a 0-d tensor) count as ints.

    Returns:
        The Partition of the batch, at the images' own H x W.
    """
    images = as_images(images, input_space=input_space)
    options = {name: as_int(value) for name, value in options.items()}
    height, width = images.shape[2:]
    padded = pad_to_multiple(images, _size_multiple(method, height, width, options))
    part = _partition_unit(padded, method, options)
    if padded.shape == images.shape:
        return part
    # a region cut by the crop is split into its 4-connected pieces
    return Partition.from_labels(label_components(part.labels[:, :height, :width]))


def _partition_unit(images: Tensor, method: str, options: dict[str, Any]) -> Partition:
    """Partition a batch that `as_images` has already converted and checked, at its own size."""
    function = get_partitioner(method)
    check_options(function, options, what=f"method {method!r}", skip=1)
    part = function(images, **options)
    # A registered partitioner's mistake surfaces here, not as a wrong shape three stages on.
    if not isinstance(part, Partition):
        raise AdaptokError(
            f"partition method {method!r} returned {type(part).__name__}, not a Partition"
        )
    if part.batch_size != images.shape[0] or part.image_size != tuple(images.shape[2:]):
        raise AdaptokError(
            f"partition method {method!r} returned a Partition of {part.batch_size} image(s) of "
            f"{part.image_size[0]}x{part.image_size[1]} for {images.shape[0]} image(s) of "
            f"{images.shape[2]}x{images.shape[3]}"
        )
    return part


def _size_multiple(method: str, height: int, width: int, options: dict[str, Any]) -> int:
    """The multiple that `method` needs H and W to have (1 for methods that take any size)."""
    get_partitioner(method)
    if method not in _SIZE_POLICIES:
        return 1
    return _resolve(_SIZE_POLICIES, method)(height, width, dict(options))


def padded_size(method: str, height: int, width: int, options: dict[str, Any]) -> tuple[int, int]:
    """The size at which `partition` runs `method` on an H x W image with these options (the
    image's own size unless the method pads it; see `partition`)."""
    multiple = _size_multiple(method, height, width, options)
    return round_up(height, multiple), round_up(width, multiple)
