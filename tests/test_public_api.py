"""The public surface: names users and benchmarks rely on (DESIGN.md section 8) must not vanish."""

import subprocess
import sys

import pytest

import adaptok

PUBLIC = [
    "AdaptiveViT", "AdaptokError", "DHTEmbedder", "DHTResult", "DHTTokenizer", "FeatureScorer",
    "Partition", "PartitionError", "PatchEmbedder", "PixelBlurScorer", "PrecomputedScorer",
    "RandomScorer", "Tokens", "available_methods", "available_scorers", "check_partition",
    "dht_partition", "extract_tokens", "extract_regions", "label_components",
    "load_default_tokenizer", "partition", "quadtree_partition", "retrofit", "slic_partition",
    "valid_budgets", "vectorize",
]  # fmt: skip


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists(name: str) -> None:
    assert name in adaptok.__all__
    assert getattr(adaptok, name) is not None


def test_every_exported_name_resolves() -> None:
    for name in adaptok.__all__:
        getattr(adaptok, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        adaptok.nope  # noqa: B018


def test_registry_names() -> None:
    assert adaptok.available_methods() == ["dht", "grid", "quadtree", "slic"]


def test_import_does_not_load_timm_or_skimage() -> None:
    code = "import sys, adaptok; print('timm' in sys.modules, 'skimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
