"""`partition(images, method=...)`: one entry point, a registry of partitioners behind it.

Each partitioner declares its options in a `PartitionerSpec` beside it (what its budget
means, its defaults, how a model derives them), including what it needs to partition an image
of any size (`SizePolicy`): square-patch methods (grid, quadtree) run on a copy padded at the
bottom and right to a multiple of their largest patch, and `partition` crops the result back.
The Python API, `adaptok tokenize` and `adaptok vectorize` all go through `partition`, so they
take the same sizes."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from ..errors import AdaptokError
from ..graph import label_components
from ..io import ImageLike, as_images, pad_to_multiple
from ..ops import round_up
from ..regions import Partition
from ..validate import accepted_options, as_int, check_options
from .spec import PartitionerSpec, SizePolicy

__all__ = [
    "PartitionerSpec",
    "SizePolicy",
    "available_methods",
    "derive_options",
    "get_partitioner",
    "get_spec",
    "padded_size",
    "partition",
    "register_partitioner",
]

Partitioner = Callable[..., Partition]

# name -> "module:SPEC" (the partitioner's `PartitionerSpec`, declared beside it), imported on
# first use so that `import adaptok` stays light. The one list of the built-in methods.
_REGISTRY: dict[str, str | PartitionerSpec] = {
    "grid": "adaptok.partitioners.grid:SPEC",
    "quadtree": "adaptok.partitioners.quadtree:SPEC",
    "dht": "adaptok.partitioners.dht:SPEC",
    "slic": "adaptok.partitioners.slic:SPEC",
}


def register_partitioner(
    name: str,
    function: Partitioner,
    *,
    size_policy: SizePolicy | None = None,
    spec: PartitionerSpec | None = None,
    replace: bool = False,
) -> None:
    """Make `partition(images, method=name, **options)` call `function(images, **options)`.

    Args:
        name: the method name.
        function: images [B, C, H, W] in [0, 1] and keyword options -> Partition of those
            B images at their H x W (checked on every call).
        size_policy: for methods that only take some sizes, (H, W, options) -> the multiple that
            H and W are padded to (see `partition`); None: the method takes any size (or the
            spec's policy).
        spec: what its options mean (`PartitionerSpec`: the budget's meaning, defaults, how a
            model derives them); None: a budget ("count") is passed on as given when the
            function names one (none otherwise), nothing is derived for a model, and a model's
            options are checked on one blank image.
        replace: allow replacing a method already registered (the built-in ones included).
    """
    if not isinstance(name, str) or not name:
        raise AdaptokError(f"a partitioner's name must be a non-empty string, got {name!r}")
    if not callable(function):
        raise AdaptokError(f"partitioner {name!r} must be callable, got {type(function).__name__}")
    if spec is not None and not isinstance(spec, PartitionerSpec):
        raise AdaptokError(
            f"spec must be an adaptok.partitioners.spec.PartitionerSpec, got {type(spec).__name__}"
        )
    if name in _REGISTRY and not replace:
        raise AdaptokError(
            f"partition method {name!r} is already registered; pick another name, or pass "
            "replace=True to replace it"
        )
    if spec is None:  # a budget is passed on as given to a function that names one
        takes_budget = "budget" in (accepted_options(function) or [])
        spec = PartitionerSpec(
            budget="count" if takes_budget else None,
            none_means="the default" if takes_budget else None,
        )
    if size_policy is not None and spec.size_policy not in (None, size_policy):
        raise AdaptokError(
            f"partitioner {name!r} got a size_policy and a spec with another one; pass one"
        )
    _REGISTRY[name] = dataclasses.replace(
        spec, name=name, function=function, size_policy=size_policy or spec.size_policy
    )


def available_methods() -> list[str]:
    """Names accepted by `partition(..., method=...)`."""
    return sorted(_REGISTRY)


def get_spec(method: str) -> PartitionerSpec:
    """The `PartitionerSpec` of `method`; raises listing the known names otherwise."""
    if method not in _REGISTRY:
        raise AdaptokError(
            f"unknown partition method {method!r}; known methods: {', '.join(available_methods())}"
        )
    entry = _REGISTRY[method]
    if isinstance(entry, str):
        module_name, attribute = entry.split(":")
        entry = getattr(importlib.import_module(module_name), attribute)
        _REGISTRY[method] = entry
    return entry


def get_partitioner(method: str) -> Partitioner:
    """The function registered under `method`; raises listing the known names otherwise."""
    return get_spec(method).function  # type: ignore[return-value]


def derive_options(
    method: str, image_size: int, patch_size: int, given: Mapping[str, object] | None = None
) -> dict[str, object]:
    """A model's options for `method` on square images of side `image_size` with tokens of
    `patch_size`: the caller's `given` options merged over the ones the method's spec derives
    (grid: the patch size; quadtree: patch sizes and about half the grid's tokens; slic: the
    grid's count; dht: a cap of half the grid's tokens; registered methods: their own
    defaults). `ModelConfig` calls it, so every model config holds the merged options
    (`adaptok train`, `retrofit` and `init_from_checkpoint` make one)."""
    return get_spec(method).derive(image_size, patch_size, dict(given or {}))


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
    policy = get_spec(method).size_policy
    return 1 if policy is None else policy(height, width, dict(options))


def padded_size(method: str, height: int, width: int, options: dict[str, Any]) -> tuple[int, int]:
    """The size at which `partition` runs `method` on an H x W image with these options (the
    image's own size unless the method pads it; see `partition`)."""
    multiple = _size_multiple(method, height, width, options)
    return round_up(height, multiple), round_up(width, multiple)
