"""adaptok: adaptive visual tokenizers for Vision Transformers.

Images -> `partition` -> `Partition` -> `extract_tokens` -> `Tokens` -> ViT.
"""

from .embed.dht import DHTEmbedder, position_columns
from .embed.patch import PatchEmbedder, embed_patches
from .errors import AdaptokError, check_images
from .graph import connected_components, label_components
from .partitioners.dht import DHTResult, DHTTokenizer, dht_partition, load_default_tokenizer
from .partitioners.quadtree import quadtree_partition, valid_budgets
from .partitioners.registry import available_methods, partition, register_partitioner
from .partitioners.scorers import (
    FeatureScorer,
    PixelBlurScorer,
    PrecomputedScorer,
    RandomScorer,
    available_scorers,
)
from .partitioners.slic import slic_partition
from .regions import Partition, PartitionError, check_partition
from .tokens import Tokens, extract_tokens, sincos_2d
from .tokens.boxes import extract_regions
from .vector import vectorize

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
    "embed_patches",
    "extract_regions",
    "extract_tokens",
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
