"""The public surface: the names users rely on must not vanish, and nothing else leaks in."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import adaptok

TOP_LEVEL = {
    "AdaptiveViT", "AdaptokError", "ModelConfig", "Partition", "Tokens", "__version__",
    "available_methods", "build_model", "extract_tokens", "load_model", "partition",
    "register_partitioner", "retrofit", "vectorize",
}  # fmt: skip

# Subpackage names that benchmarks, docs and the README use.
SUBPACKAGES = {
    "adaptok.partitioners": ["available_methods", "get_partitioner", "partition"],
    "adaptok.partitioners.quadtree": ["quadtree_partition", "valid_budgets", "nearest_budget"],
    "adaptok.partitioners.scorers": [
        "FeatureScorer", "PixelBlurScorer", "PrecomputedScorer", "RandomScorer",
        "available_scorers",
    ],
    "adaptok.partitioners.dht": ["DHTTokenizer", "dht_partition", "load_default_tokenizer"],
    "adaptok.partitioners.slic": ["slic_partition"],
    "adaptok.regions": ["Partition", "PartitionError", "check_partition"],
    "adaptok.tokens": ["Tokens", "extract_tokens", "extract_regions"],
    "adaptok.ops": ["halve", "sincos_2d"],
    "adaptok.embed": ["DHTEmbedder", "PatchEmbedder", "position_columns"],
    "adaptok.models": ["EncoderConfig", "MaskedEncoder", "export_timm", "load_model", "retrofit"],
    "adaptok.weights": ["read_state_dict"],
    "adaptok.validate": ["check_int", "check_choice", "check_options"],
}  # fmt: skip


def test_top_level_is_the_small_public_api() -> None:
    assert set(adaptok.__all__) == TOP_LEVEL


@pytest.mark.parametrize("module", sorted(SUBPACKAGES))
def test_subpackage_names_exist(module: str) -> None:
    imported = __import__(module, fromlist=["_"])
    for name in SUBPACKAGES[module]:
        assert getattr(imported, name) is not None, f"{module}.{name}"


def test_every_exported_name_resolves() -> None:
    for name in adaptok.__all__:
        getattr(adaptok, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        adaptok.nope  # noqa: B018


def test_subpackages_are_attributes_after_a_plain_import() -> None:
    # The README writes `adaptok.ops.normalize(x)` and `adaptok.models.export_timm(...)`; in a
    # fresh interpreter nothing else has imported those subpackages yet.
    names = sorted({module.split(".")[1] for module in SUBPACKAGES})
    code = (
        "import adaptok; "
        f"print(all(getattr(adaptok, n).__name__ == 'adaptok.' + n for n in {names!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_attribute_paths() -> list[str]:
    """Every `adaptok.a.b` path the README names, and every `from adaptok.x import a, b`, and the
    scorers it lists under `adaptok.partitioners.scorers`, as full dotted paths."""
    text = README.read_text()
    paths = {match.rstrip(".") for match in re.findall(r"\badaptok(?:\.[A-Za-z_]\w*)+\.?", text)}
    for module, names in re.findall(r"from (adaptok[\w.]*) import ([\w, ]+)", text):
        paths.update(f"{module}.{name.strip()}" for name in names.split(","))
    scorers = re.search(r"Scorers \(`adaptok\.partitioners\.scorers`\):(.*?)\* ", text, re.S)
    assert scorers is not None, "the README no longer lists the quadtree scorers"
    paths.update(
        f"adaptok.partitioners.scorers.{name}" for name in re.findall(r"`([A-Z]\w*)\(", scorers[1])
    )
    return sorted(paths)


def test_every_attribute_path_in_the_readme_works_after_a_plain_import() -> None:
    # A fresh interpreter per subpackage path (adaptok.a.b): a lookup in one interpreter may
    # import what a later one needs and hide that it fails on its own.
    paths = readme_attribute_paths()
    assert {"adaptok.partitioners.scorers.PrecomputedScorer",
            "adaptok.partitioners.dht.load_default_tokenizer"} <= set(paths)  # fmt: skip
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(".".join(path.split(".")[:3]) if path.count(".") > 1 else "", []).append(
            path
        )
    code = (
        "import functools, sys, adaptok\n"
        "for path in sys.argv[1:]:\n"
        "    functools.reduce(getattr, path.split('.')[1:], adaptok)"
    )
    failed = {}
    for group in groups.values():
        out = subprocess.run([sys.executable, "-c", code, *group], capture_output=True, text=True)
        if out.returncode:
            failed[tuple(group)] = out.stderr.strip().splitlines()[-1]
    assert not failed


def test_no_function_shadows_a_submodule() -> None:
    # `adaptok.partition` and `adaptok.vectorize` are functions; no module may share their names.
    code = (
        "import adaptok, adaptok.models, adaptok.train, adaptok.cli; "
        "print(callable(adaptok.partition), callable(adaptok.vectorize))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_registry_names() -> None:
    assert adaptok.available_methods() == ["dht", "grid", "quadtree", "slic"]


def test_import_does_not_load_timm_or_skimage() -> None:
    code = "import sys, adaptok; print('timm' in sys.modules, 'skimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_dht_partition_does_not_load_timm() -> None:
    # timm (with torchvision) took seconds to import; the tokenizers do not need it.
    code = (
        "import sys, torch, adaptok; adaptok.partition(torch.rand(1, 3, 32, 32), 'dht'); "
        "adaptok.partition(torch.rand(1, 3, 64, 64), 'quadtree'); print('timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_imagenet_constants_are_timms() -> None:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from adaptok.ops import imagenet_mean_std

    assert imagenet_mean_std() == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))


# Lower layers never import higher ones: partition < tokens < embed < models < train < cli.
LAYERS = ["partitioners", "tokens", "embed", "models", "train", "cli"]


def imported_modules(
    source: str, module: str, *, is_package: bool = False
) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything a source file imports, in every form: `import
    adaptok.x`, `from adaptok.x import y`, relative imports of any depth, imports inside
    functions. For `from p import a` both `p` and `p.a` are listed (`a` may be a submodule), and a
    top-level name such as `adaptok.retrofit` is resolved to the subpackage that defines it."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    resolved = []
    for line, name in found:
        parts = name.split(".")
        if parts[0] == "adaptok" and len(parts) > 1 and parts[1] in adaptok._HOME:
            name = adaptok._HOME[parts[1]]
        resolved.append((line, name))
    return resolved


def layer_of(module: str) -> str:
    """'models' for adaptok.models.vit; '' outside adaptok's subpackages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "adaptok" and len(parts) > 1 else ""


def layer_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """'module:line imports adaptok.higher...' for every import of a higher layer."""
    if layer_of(module) not in LAYERS:
        return []
    higher = set(LAYERS[LAYERS.index(layer_of(module)) + 1 :])
    return [
        f"{module}:{line} imports {name}"
        for line, name in imported_modules(source, module, is_package=is_package)
        if layer_of(name) in higher
    ]


def test_no_import_runs_up_the_layers() -> None:
    root = Path(adaptok.__file__).parent
    checked, violations = 0, []
    for path in sorted(root.rglob("*.py")):
        parts = ("adaptok", *path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        violations += layer_violations(path.read_text(), module, is_package=is_package)
        checked += layer_of(module) in LAYERS
    assert checked > 30  # the walk found the layered packages
    assert not violations


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("adaptok.partitioners.grid", "from adaptok.models import retrofit"),
        ("adaptok.partitioners.grid", "import adaptok.train.loop"),
        ("adaptok.partitioners.grid", "import adaptok.cli as cli"),
        ("adaptok.partitioners.grid", "from adaptok import retrofit"),
        ("adaptok.partitioners.grid", "from adaptok import embed"),
        ("adaptok.tokens.extract", "from ..embed import PatchEmbedder"),
        ("adaptok.tokens.extract", "from .. import models"),
        ("adaptok.partitioners.dht.tokenizer", "from ...train.fit import fit"),
        ("adaptok.embed.patch", "def build():\n    from ..models.vit import AdaptiveViT\n"),
        ("adaptok.models.vit", "class A:\n    def f(self):\n        import adaptok.cli.main\n"),
    ],
)
def test_layer_check_catches_every_import_form(module: str, source: str) -> None:
    assert len(layer_violations(source, module)) >= 1, source


@pytest.mark.parametrize(
    ("module", "source", "is_package"),
    [
        ("adaptok.cli.main", "from adaptok.models import retrofit\nfrom ..train import fit", False),
        (
            "adaptok.embed.patch",
            "from ..tokens import Tokens\nfrom ..regions import Partition",
            False,
        ),
        (
            "adaptok.partitioners.dht.tokenizer",
            "from . import hierarchy\nfrom .. import grid",
            False,
        ),
        ("adaptok.partitioners.dht", "from .tokenizer import DHTTokenizer", True),
        ("adaptok.partitioners", "from . import dht", True),
        ("adaptok.models.vit", "import torch\nfrom adaptok import partition", False),
    ],
)
def test_layer_check_accepts_imports_down_or_sideways(
    module: str, source: str, is_package: bool
) -> None:
    assert layer_violations(source, module, is_package=is_package) == []


def test_readme_python_example_runs() -> None:
    """The README's ten-line API example is real code (run with its defaults)."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["svg"].startswith("<svg") or "<svg" in namespace["svg"][:200]
    assert namespace["tokens"].patches.shape[0] == 1
