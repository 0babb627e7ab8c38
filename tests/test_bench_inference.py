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
    # dHT at retrofit's 2 working pixels per patch side, and at the first aligned rows' 8.
    assert list(rows) == [
        "timm grid (16 tokens)",
        "retrofit grid",
        "retrofit quadtree (budget 7, patches 8..16, pooling)",
        "retrofit dht (budget 8, resolution 0.25, aligned to 8-px patches)",
        "retrofit dht (budget 8, resolution 1.0, aligned to 8-px patches)",
        "ToMe (final 8 tokens)",
        "dHT partition alone",
    ]
    tokens = {name: cells[0] for name, cells in rows.items()}
    assert tokens["retrofit grid"] == "16.0"
    assert tokens["retrofit quadtree (budget 7, patches 8..16, pooling)"] == "7.0"
    assert tokens["ToMe (final 8 tokens)"] == "8.0"
    for resolution in ("0.25", "1.0"):
        dht = f"retrofit dht (budget 8, resolution {resolution}, aligned to 8-px patches)"
        assert 1 <= float(tokens[dht]) <= 8
    assert rows["timm grid (16 tokens)"][-1].startswith("1.00x")
    assert re.match(r"\d+% of the timm forward", rows["dHT partition alone"][-1])


def test_json_holds_the_markdown_rows_and_the_machine(bench, tmp_path, capsys):
    """--json writes what the Markdown table shows (row, tokens, ratio), each row's kind and
    budget, and the facts of the header; read back, it is the same table."""
    from accuracy.speeds import read_speeds

    path = tmp_path / "speed.json"
    argv = ["--setting", "smoke", "--repeats", "1", "--warmup", "0", "--json", str(path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    (table,) = read_speeds(path)
    assert (table.setting, table.dataset, table.batch, table.repeats) == ("smoke", None, 2, 1)
    assert table.facts.threads == 1 and table.facts.date in out
    assert [row.row for row in table.rows] == [
        line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")
    ][1:]
    kinds = {row.row: (row.kind, row.budget) for row in table.rows}
    assert kinds["retrofit quadtree (budget 7, patches 8..16, pooling)"] == ("retrofit-quadtree", 7)
    dht = "retrofit dht (budget 8, resolution 0.25, aligned to 8-px patches)"
    assert kinds[dht] == ("retrofit-dht-cells", 8)
    assert kinds["ToMe (final 8 tokens)"] == ("tome", 8)
    assert kinds["dHT partition alone"] == ("dht-partition", None)
    for row in table.rows:
        if row.ratio is not None:
            assert f"| {row.ratio:.2f}x |" in out
    assert table.rows[0].ratio == 1.0 and table.rows[-1].ratio is None


@pytest.mark.parametrize("dataset", ["fashion-mnist-64", "cluttered-fashion-mnist-128"])
def test_accuracy_settings_time_the_accuracy_benchmark_s_rows(bench, dataset, tmp_path):
    """The settings of the accuracy benchmark's datasets time its trunk and every retrofit and
    ToMe row its plan has for issue 18, with the plan's budgets (what the report's ToMe verdicts
    look up), on the dataset's test images."""
    from accuracy.plan import DATASET_SIZES, speed_runs
    from accuracy.speeds import read_speeds, speed_kind
    from adaptok.train.datasets import FASHION_MNIST_ROOT

    if not Path(FASHION_MNIST_ROOT).is_dir():
        pytest.fail(f"Fashion-MNIST missing at {FASHION_MNIST_ROOT}: run scripts/setup.sh")
    path = tmp_path / "speed.json"
    argv = ["--setting", dataset, "--batch", "2", "--repeats", "1", "--warmup", "0"]
    assert bench.main([*argv, "--json", str(path)]) == 0
    (table,) = read_speeds(path)
    size = DATASET_SIZES[dataset]
    assert table.dataset == dataset and table.options["img_size"] == size
    assert table.options["patch_size"] == size // 8  # 64 grid tokens, the parent's
    planned = {
        (speed_kind(run.tokenizer), int(run.options.get("budget", run.options.get("final_tokens"))))
        for run in speed_runs(dataset)
    }
    wanted = {("retrofit-quadtree", 31), ("retrofit-dht", 31), ("retrofit-dht-aligned", 31)}
    wanted |= {("retrofit-quadtree-pooling", 31), ("retrofit-dht-cells", 31)}
    assert wanted | {("tome", 31), ("tome", 16)} <= planned
    timed = {(row.kind, row.budget): row for row in table.rows if row.budget is not None}
    assert set(timed) == planned
    assert [row.kind for row in table.rows[:2]] == ["grid", "retrofit-grid"]
    assert table.rows[0].tokens == 64 and table.rows[-1].kind == "dht-partition"
    for (kind, budget), row in timed.items():
        if kind.startswith("retrofit-dht"):  # at most the budget: dHT stops where regions run out
            assert 1 <= row.tokens <= budget
        else:  # the quadtree reaches its (valid) budget, ToMe its final count
            assert row.tokens == budget
        assert row.ratio > 0


def test_trained_rows_refuse_a_work_folder_without_the_fine_tuned_model(bench, tmp_path):
    """--trained times the fine-tuned dHT models the report's one-epoch goals read; a folder
    without their best.pt is refused, naming the run and the command that trains it."""
    import torch

    with pytest.raises(FileNotFoundError, match=r"retrofit-dht-cells.*-s0-.*--only"):
        bench.trained_rows("fashion-mnist-64", tmp_path, torch.zeros(1), torch.device("cpu"))


def test_rounds_time_in_fresh_processes_and_give_the_medians(bench, tmp_path, capsys):
    """--rounds N times every row in N processes, one after another, and writes each row's
    median time and median ratio over them (each ratio against its own process's grid)."""
    path = tmp_path / "speed.json"
    arguments = ["--setting", "smoke", "--repeats", "1", "--warmup", "0", "--rounds", "2"]
    assert bench.main([*arguments, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "medians over 2 processes of each one's median of 1 calls" in out
    assert "range over processes |" in out  # each ratio's min-max over the processes
    (table,) = bench.read_speeds(path)
    assert table.rounds == 2 and table.rows[0].ratio == 1.0
    assert table.rows[0].round_ratios == (1.0, 1.0)  # through the JSON, as a tuple
    assert [row.row for row in table.rows][:2] == ["timm grid (16 tokens)", "retrofit grid"]


def test_combine_rounds_takes_medians_and_refuses_different_rows(bench):
    from adaptok.cli.benchmarking import MachineFacts

    facts = MachineFacts("2026-12-06", "cpu", 1, "2", "3.11", 1.0, 2)

    def one(ratio: float, name: str = "quadtree") -> list:
        rows = (
            bench.SpeedRow("grid", "grid", None, 64.0, 2.0, 1.0),
            bench.SpeedRow(name, "retrofit-quadtree", 31, 31.0, 2.0 / ratio, ratio),
        )
        return [bench.SpeedTable("s", None, "vit", {}, 8, 1, 0, facts, rows)]

    (table,) = bench.combine_rounds([one(1.5), one(2.0), one(1.6)])
    assert table.rounds == 3 and table.rows[1].ratio == 1.6
    assert table.rows[1].round_ratios == (1.5, 2.0, 1.6)  # each process's, in order
    assert table.rows[0].round_ratios == (1.0, 1.0, 1.0)
    (again,) = bench.combine_rounds([[table], one(1.7)])  # combined tables keep every process's
    assert again.rounds == 4 and again.rows[1].round_ratios == (1.5, 2.0, 1.6, 1.7)
    assert again.rows[1].ratio == pytest.approx(1.65)
    assert table.rows[1].ms_per_image == pytest.approx(2.0 / 1.6, abs=1e-4)
    with pytest.raises(ValueError, match="different rows"):
        bench.combine_rounds([one(1.5), one(1.5, name="dht")])
