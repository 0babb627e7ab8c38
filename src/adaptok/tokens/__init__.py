"""Tokens: every region's pixels resampled to a fixed P x P (square and box extraction)."""

from .boxes import extract_regions, gradient_histogram, position_histogram
from .core import Tokens, assemble_tokens
from .extract import extract_squares, extract_tokens, is_square_partition, pool_patches

__all__ = [
    "Tokens",
    "assemble_tokens",
    "extract_regions",
    "extract_squares",
    "extract_tokens",
    "gradient_histogram",
    "is_square_partition",
    "pool_patches",
    "position_histogram",
]
