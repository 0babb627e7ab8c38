"""Embedders: `Tokens` -> ViT token embeddings (plain patch embedding, dHT embedding)."""

from .dht import DHTEmbedder
from .patch import PatchEmbedder, embed_patches
from .timm import dht_embedder_from_timm, patch_embedder_state, position_columns

__all__ = [
    "DHTEmbedder",
    "PatchEmbedder",
    "dht_embedder_from_timm",
    "embed_patches",
    "patch_embedder_state",
    "position_columns",
]
