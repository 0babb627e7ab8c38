"""adaptok: adaptive visual tokenizers for Vision Transformers.

Images -> `partition` -> `Partition` -> `embed_inputs` -> `Tokens` -> ViT.
"""

from .errors import AdaptokError, check_images
from .graph import connected_components, label_components
from .partition import Partition, PartitionError, check_partition
from .registry import available_methods, partition, register_partitioner
from .tokens import Tokens, embed_inputs, sincos_2d

__version__ = "0.1.0"

__all__ = [
    "AdaptokError",
    "Partition",
    "PartitionError",
    "Tokens",
    "__version__",
    "available_methods",
    "check_images",
    "check_partition",
    "connected_components",
    "embed_inputs",
    "label_components",
    "partition",
    "register_partitioner",
    "sincos_2d",
]
