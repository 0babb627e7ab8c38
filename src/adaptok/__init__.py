"""adaptok: adaptive visual tokenizers for Vision Transformers.

Images -> `partition` -> `Partition` -> `embed_inputs` -> `Tokens` -> ViT.
"""

from .dht import DHTResult, DHTTokenizer, dht_partition, load_default_tokenizer
from .dht_embed import DHTEmbedder, position_columns
from .embed_patch import PatchEmbedder, embed_patches
from .errors import AdaptokError, check_images
from .extract import extract_regions
from .graph import connected_components, label_components
from .partition import Partition, PartitionError, check_partition
from .quadtree import quadtree_partition, valid_budgets
from .registry import available_methods, partition, register_partitioner
from .scorers import (
    FeatureScorer,
    PixelBlurScorer,
    PrecomputedScorer,
    RandomScorer,
    available_scorers,
)
from .slic import slic_partition
from .tokens import Tokens, embed_inputs, sincos_2d
from .vectorize import vectorize

__version__ = "0.1.0"

# The models import timm (about 1.5 s), so they load on first use.
_LAZY = {
    name: "adaptok.models"
    for name in (
        "AdaptiveViT",
        "EncoderConfig",
        "MaskedEncoder",
        "ModelConfig",
        "build_model",
        "retrofit",
    )
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptok' has no attribute {name!r}")


__all__ = [
    "AdaptiveViT",
    "AdaptokError",
    "DHTEmbedder",
    "DHTResult",
    "DHTTokenizer",
    "EncoderConfig",
    "FeatureScorer",
    "MaskedEncoder",
    "ModelConfig",
    "Partition",
    "PartitionError",
    "PatchEmbedder",
    "PixelBlurScorer",
    "PrecomputedScorer",
    "RandomScorer",
    "Tokens",
    "__version__",
    "available_methods",
    "available_scorers",
    "build_model",
    "check_images",
    "check_partition",
    "connected_components",
    "dht_partition",
    "embed_inputs",
    "embed_patches",
    "extract_regions",
    "label_components",
    "load_default_tokenizer",
    "partition",
    "position_columns",
    "quadtree_partition",
    "register_partitioner",
    "retrofit",
    "sincos_2d",
    "slic_partition",
    "valid_budgets",
    "vectorize",
]
