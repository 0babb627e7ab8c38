"""Embedders: `Tokens` -> ViT token embeddings (plain patch embedding, dHT embedding)."""

from .dht import DHTEmbedder, position_columns
from .patch import PatchEmbedder, embed_patches

__all__ = ["DHTEmbedder", "PatchEmbedder", "embed_patches", "position_columns"]
