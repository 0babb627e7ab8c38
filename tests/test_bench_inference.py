"""The end-to-end inference benchmark (benchmarks/bench_inference.py) runs and reports every row
with the token counts it promises; its timings are not tested (no timed unit tests)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling train_throughput
    spec = importlib.util.spec_from_file_location(
        "bench_inference", BENCHMARKS / "bench_inference.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        sys.path.remove(str(BENCHMARKS))


def test_smoke_setting_prints_every_row(bench, capsys):
    assert bench.main(["--setting", "smoke", "--repeats", "1", "--warmup", "0"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    rows = {row[0]: row[1:] for row in cells}
    # 32x32 images, 8-px patches: 16 grid tokens, half = 8; quadtree 8..16 reaches 4 + 3j.
    assert list(rows) == [
        "timm grid (16 tokens)",
        "retrofit grid",
        "retrofit quadtree (budget 7, patches 8..16)",
        "retrofit dht (budget 8, resolution 1.0)",
        "ToMe (final 8 tokens)",
        "dHT partition alone",
    ]
    tokens = {name: cells[0] for name, cells in rows.items()}
    assert tokens["retrofit grid"] == "16.0"
    assert tokens["retrofit quadtree (budget 7, patches 8..16)"] == "7.0"
    assert tokens["ToMe (final 8 tokens)"] == "8.0"
    assert 1 <= float(tokens["retrofit dht (budget 8, resolution 1.0)"]) <= 8
    assert rows["timm grid (16 tokens)"][-1].startswith("1.00x")
    assert re.match(r"\d+% of the timm forward", rows["dHT partition alone"][-1])
