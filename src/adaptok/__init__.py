"""adaptok: adaptive visual tokenizers for Vision Transformers.

images -> `partition` -> `Partition` -> `extract_tokens` -> `Tokens` -> embedder -> ViT -> head.

The top level holds what a user needs; the rest lives in the subpackages named after the stage:
`adaptok.partitioners` (grid, quadtree + scorers, dht, slic), `adaptok.tokens`, `adaptok.embed`,
`adaptok.models`, `adaptok.train`, `adaptok.vector`, `adaptok.io`. Names and subpackages load on
first use (`import adaptok; adaptok.ops.normalize(x)` works), so `import adaptok` (and
`adaptok --help`) need not load torch or timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

# public name -> the module that defines it (imported on first access)
_HOME = {
    "AdaptokError": "adaptok.errors",
    "Partition": "adaptok.regions",
    "Tokens": "adaptok.tokens",
    "extract_tokens": "adaptok.tokens",
    "available_methods": "adaptok.partitioners",
    "partition": "adaptok.partitioners",
    "register_partitioner": "adaptok.partitioners",
    "vectorize": "adaptok.vector",
    "AdaptiveViT": "adaptok.models",
    "ModelConfig": "adaptok.models",
    "build_model": "adaptok.models",
    "load_model": "adaptok.models",
    "retrofit": "adaptok.models",
}

# subpackages and modules reachable as attributes after a plain `import adaptok`
# (`adaptok.ops.normalize(x)`), also imported on first access
_SUBMODULES = frozenset(
    {
        "cli", "embed", "errors", "graph", "io", "models", "ops", "partitioners", "regions",
        "tokens", "train", "validate", "vector", "visualize", "weights",
    }
)  # fmt: skip

if TYPE_CHECKING:
    from .errors import AdaptokError
    from .models import AdaptiveViT, ModelConfig, build_model, load_model, retrofit
    from .partitioners import available_methods, partition, register_partitioner
    from .regions import Partition
    from .tokens import Tokens, extract_tokens
    from .vector import vectorize


def __getattr__(name: str) -> object:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"adaptok.{name}")  # the import binds it here too
    raise AttributeError(f"module 'adaptok' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AdaptiveViT",
    "AdaptokError",
    "ModelConfig",
    "Partition",
    "Tokens",
    "__version__",
    "available_methods",
    "build_model",
    "extract_tokens",
    "load_model",
    "partition",
    "register_partitioner",
    "retrofit",
    "vectorize",
]
