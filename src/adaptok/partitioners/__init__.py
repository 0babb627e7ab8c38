"""Partitioners: images -> `Partition`, behind one registry (`partition(images, method=...)`).

grid and quadtree (square tokens), dht (learned hierarchical superpixels), slic (the classic
superpixel baseline). Their modules load on first use so that `import adaptok` stays light:
`adaptok.partitioners.scorers.PrecomputedScorer` works after a plain `import adaptok`.
"""

from __future__ import annotations

import importlib

from .registry import available_methods, get_partitioner, partition, register_partitioner

# modules reachable as attributes (`adaptok.partitioners.dht`), imported on first access
_SUBMODULES = frozenset({"dht", "grid", "quadtree", "registry", "scorers", "slic"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import binds it here too
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["available_methods", "get_partitioner", "partition", "register_partitioner"]
