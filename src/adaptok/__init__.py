"""adaptok: adaptive visual tokenizers for Vision Transformers.

Images -> `partition` -> `Partition` -> `embed_inputs` -> `Tokens` -> ViT.
"""

from .embed_patch import PatchEmbedder, embed_patches
from .errors import AdaptokError, check_images
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
from .tokens import Tokens, embed_inputs, sincos_2d

__version__ = "0.1.0"

__all__ = [
    "AdaptokError",
    "FeatureScorer",
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
    "check_images",
    "check_partition",
    "connected_components",
    "embed_inputs",
    "embed_patches",
    "label_components",
    "partition",
    "quadtree_partition",
    "register_partitioner",
    "sincos_2d",
    "valid_budgets",
]
