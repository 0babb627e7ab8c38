"""Issue 18's goals again on a second pair of parents: the retrofit rows the goals read, rerun
from grid parents retrained with the same recipe, judged by the accuracy report's own rules.

The accuracy benchmark's retrofit rows (benchmarks/results/accuracy_vs_tokens.csv) start from one
grid parent per dataset; training is not bit-reproducible across machines, so retraining the
parents gives a second pair, and a second look at how much the goals' verdicts depend on the
parent. The replication table holds, per dataset, the retrained parent, its ToMe rows, the
retrofits without fine-tuning, and the one-epoch fine-tunes of the protocol the selection split
chose on the first parents (`LIMIT_PROTOCOLS`: distilled, 0.3 of the peak rate), three seeds at
31 and 37 tokens. This script prints its rows and the issue-18 verdicts
(`accuracy.report.retrofit_verdicts`; the ToMe goals on `benchmarks/results/inference_speed.json`,
whose fine-tuned dHT rows are this table's seed-0 models) as Markdown.

    python benchmarks/retrofit_replication.py > benchmarks/results/retrofit_replication.md

The rows come from the accuracy benchmark run against a table that starts with the parents'
rows (run ids as in the main table; a separate CSV, so the two pairs never mix):

    python benchmarks/accuracy_vs_tokens.py --profile cpu-long --csv REPLICA.csv --work WORK \\
        --only 'fashion-mnist-64/grid-64-s0-aug75$'      # then the retrofit, ToMe rows
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `accuracy` beside this file

from accuracy.report import group_rows, retrofit_verdicts
from accuracy.runs import CSV_PATH, read_rows
from accuracy.speeds import SPEEDS_PATH, read_speeds

TABLE = Path(__file__).resolve().parent / "results" / "retrofit_replication.csv"
PROFILE = "cpu-long"


def row_lines(rows: list[dict[str, str]], first: list[dict[str, str]]) -> list[str]:
    """Markdown table of the replication's groups: test accuracy over seeds, tokens, selection
    score (fine-tunes only), and the same group on the first parents (`first`: the main
    table's rows)."""
    before = group_rows(first)
    lines = [
        "| dataset | rows | tokens / image | steps | seeds | test accuracy (%) "
        "| selection split (%) | first parents: test (%) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, group in group_rows(rows).items():
        if group.profile != PROFILE or group.metric != "accuracy":
            continue
        selection = (
            f"{100 * sum(group.selection) / len(group.selection):.1f}" if group.selection else ""
        )
        earlier = before[key].cell() if key in before else ""
        lines.append(
            f"| {group.dataset} | {group.tokenizer} | {group.mean_tokens:.1f} | {group.steps} | "
            f"{len(group.values)} | {group.cell()} | {selection} | {earlier} |"
        )
    return lines


def report(table: Path, speeds_path: Path = SPEEDS_PATH, first: Path = CSV_PATH) -> list[str]:
    """The replication's Markdown: its rows beside the first parents' (`first`, the main
    table), then the issue-18 verdicts on the replication's rows alone."""
    rows = read_rows(table)
    if not rows:
        raise FileNotFoundError(f"{table}: no rows (this script's docstring says how to run them)")
    groups = group_rows(rows)
    found = retrofit_verdicts(groups, PROFILE, speeds=read_speeds(speeds_path))
    lines = [
        "# Issue 18's goals on a second pair of parents",
        "",
        f"Rows: `{table.name}` ({len(rows)} runs, `{PROFILE}`), beside the same rows of the "
        f"first parents (`{first.name}`); the verdicts by the accuracy report's rules "
        "(`benchmarks/accuracy/report.py`) on the replication's rows alone, the ToMe ones on "
        f"`{speeds_path.name}`. Made by `python benchmarks/retrofit_replication.py`.",
        "",
        *row_lines(rows, read_rows(first)),
        "",
        "Verdicts (only those this table measures):",
        "",
    ]
    return lines + [v.line() for v in found if v.status != "not measured"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=TABLE, help="the replication's rows")
    args = parser.parse_args(argv)
    print("\n".join(report(args.csv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
