"""Models over adaptive tokens: masked encoder, heads, AdaptiveViT, retrofitting timm ViTs."""

from .encoder import EncoderConfig, MaskedEncoder, key_padding_mask
from .heads import ClassificationHead, DenseHead, region_logits
from .retrofit import load_weights, remap_timm_state_dict, retrofit
from .vit import (
    AdaptiveViT,
    LearnedTokenizer,
    ModelConfig,
    ModelOutput,
    PartitionTokenizer,
    TokenizerOutput,
    build_model,
)

__all__ = [
    "AdaptiveViT",
    "ClassificationHead",
    "DenseHead",
    "EncoderConfig",
    "LearnedTokenizer",
    "MaskedEncoder",
    "ModelConfig",
    "ModelOutput",
    "PartitionTokenizer",
    "TokenizerOutput",
    "build_model",
    "key_padding_mask",
    "load_weights",
    "region_logits",
    "remap_timm_state_dict",
    "retrofit",
]
