"""adaptok: adaptive visual tokenizers for Vision Transformers.

images -> `partition` -> `Partition` -> `extract_tokens` -> `Tokens` -> embedder -> ViT -> head.

The top level holds what a user needs; the rest lives in the subpackages named after the stage:
`adaptok.partitioners` (grid, quadtree + scorers, dht, slic), `adaptok.tokens`, `adaptok.embed`,
`adaptok.models`, `adaptok.train`, `adaptok.vector`, `adaptok.io`.
"""

from .errors import AdaptokError
from .partitioners import available_methods, partition, register_partitioner
from .regions import Partition
from .tokens import Tokens, extract_tokens
from .vector import vectorize

__version__ = "0.2.0"

# The models import timm (about 1.5 s), so they load on first use.
_MODELS = ("AdaptiveViT", "ModelConfig", "build_model", "load_model", "retrofit")


def __getattr__(name: str) -> object:
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'adaptok' has no attribute {name!r}")


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
