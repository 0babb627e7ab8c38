"""The accuracy benchmark's plan and verdicts (benchmarks/accuracy_vs_tokens.py).

The README states each goal of the accuracy table from `goals()`, so the plan and the verdicts
are tested like library code; the runs themselves are too long for CI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from adaptok.partitioners.quadtree import valid_budgets

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy_vs_tokens.py"
CLUTTERED = "cluttered-fashion-mnist-128"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_vs_tokens", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("profile", ["cpu-small", "cpu-long", "full", "smoke"])
def test_every_planned_run_can_start(bench, profile) -> None:
    runs = bench.plan(bench.PROFILES[profile])
    order = {run.run_id: index for index, run in enumerate(runs)}
    assert len(order) == len(runs), "run ids must be unique (they key the CSV and the resume)"
    for run in runs:
        size = bench.DATASET_SIZES[run.dataset]
        assert size % run.patch == 0, run.run_id
        if run.tokenizer.startswith("retrofit"):
            # The parent is a planned grid run that a worker reaches first.
            assert run.parent in order and order[run.parent] < order[run.run_id], run.run_id
            assert run.parent.split("/")[1].startswith("grid-")
        if "quadtree" in run.tokenizer:
            options = run.options
            budgets = valid_budgets(
                size, size, min_patch=options["min_patch"], max_patch=options["max_patch"]
            )
            assert options["budget"] in budgets, run.run_id
    # Three seeds at the middle count for every from-scratch tokenizer of the goals.
    middle = {
        (run.dataset, run.tokenizer)
        for run in runs
        if run.tokens == bench.MIDDLE and not run.tokenizer.startswith("retrofit")
    }
    for dataset, tokenizer in middle:
        seeds = {
            run.seed
            for run in runs
            if (run.dataset, run.tokenizer, run.tokens) == (dataset, tokenizer, bench.MIDDLE)
        }
        assert seeds == {0, 1, 2}, (dataset, tokenizer)


def rows(tokenizer: str, values: list[float], *, tokens: int = 64, profile: str = "cpu-long"):
    return [
        {
            "profile": profile,
            "dataset": CLUTTERED,
            "tokenizer": tokenizer,
            "run_id": f"{CLUTTERED}/{tokenizer}-{tokens}-s{seed}",
            "steps": "1600",
            "metric": "accuracy",
            "value": str(value),
            "tokens_per_image": str(tokens),
            "train_seconds": "1",
            "eval_images_per_second": "1",
            "device": "cpu",
        }
        for seed, value in enumerate(values)
    ]


def best_adaptive_verdict(bench, table: list[dict[str, str]]) -> str:
    lines = bench.goals(bench.group_rows(table), "cpu-long")
    return next(line for line in lines if "best adaptive" in line)


def test_the_five_point_goal_needs_three_seeds_and_a_gap_beyond_the_spread(bench) -> None:
    grid = rows("grid", [0.449, 0.451, 0.431])
    met = best_adaptive_verdict(bench, grid + rows("dht-learned", [0.534, 0.568, 0.532]))
    assert "+10.1 points" in met and met.endswith("**met**")
    one_seed = best_adaptive_verdict(bench, grid + rows("dht-learned", [0.55]))
    assert "**not decided**" in one_seed
    small = best_adaptive_verdict(bench, grid + rows("quadtree", [0.47, 0.48, 0.46]))
    assert "+2.6 points" in small and small.endswith("**missed** by 2.4 points")
    # A big mean gap inside the seeds' spread is not a win either.
    noisy = best_adaptive_verdict(bench, grid + rows("dht-learned", [0.40, 0.70, 0.55]))
    assert "**missed**" in noisy


def test_quadtree_goal_and_the_four_times_the_tokens_goal(bench) -> None:
    table = (
        rows("grid", [0.44, 0.45, 0.43])
        + rows("grid", [0.478], tokens=256)
        + rows("quadtree", [0.409])
        + rows("dht-learned", [0.534, 0.568, 0.532])
    )
    lines = bench.goals(bench.group_rows(table), "cpu-long")
    assert any(
        line.startswith("- Cluttered, dHT (dht-learned) at 64 tokens vs grid at 256: +6.7")
        and line.endswith("**met**")
        for line in lines
    )
    assert any(
        line.startswith("- Cluttered, quadtree vs grid at 64 tokens (1 vs 3 seeds): -3.1")
        and line.endswith("**missed**")
        for line in lines
    )
    # A mean above the grid but inside the seeds' spread is said to be no clear win.
    close = bench.group_rows(
        rows("grid", [0.449, 0.451, 0.431]) + rows("quadtree-cnn", [0.4465, 0.4515, 0.445])
    )
    line = next(x for x in bench.goals(close, "cpu-long") if "quadtree-cnn vs grid" in x)
    assert "+0.4 points" in line and line.endswith("no clear win")
