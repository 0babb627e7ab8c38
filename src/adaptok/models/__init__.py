"""Models over adaptive tokens: config, builders, AdaptiveViT, retrofitting timm ViTs.

`build_model(ModelConfig)` builds from scratch, `retrofit(timm_vit)` around a pretrained ViT,
`load_model(path)` from a training checkpoint; all three share the builders. `tome_forward`
runs a timm ViT with token merging (ToMe), the training-free baseline retrofits are compared to.
"""

from .builders import assemble_model, make_embedder, make_head, make_tokenizer
from .config import EncoderConfig, ModelConfig
from .encoder import MaskedEncoder, key_padding_mask
from .factory import build_model, load_model, model_from_checkpoint
from .heads import ClassificationHead, DenseHead, region_logits
from .retrofitting import (
    RETROFIT_DEFAULTS,
    export_timm,
    load_timm_weights,
    remap_timm_state_dict,
    retrofit,
)
from .tome import tome_forward
from .vit import AdaptiveViT, LearnedTokenizer, ModelOutput, PartitionTokenizer, TokenizerOutput

__all__ = [
    "RETROFIT_DEFAULTS",
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
    "assemble_model",
    "build_model",
    "export_timm",
    "key_padding_mask",
    "load_model",
    "load_timm_weights",
    "make_embedder",
    "make_head",
    "make_tokenizer",
    "model_from_checkpoint",
    "region_logits",
    "remap_timm_state_dict",
    "retrofit",
    "tome_forward",
]
