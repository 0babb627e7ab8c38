"""Accuracy against tokens per image: grid vs quadtree vs dHT tokens for one small ViT (issue 9).

The command; the benchmark itself lives in benchmarks/accuracy/ (plan, runs, report, plots) and
trains every row with the library's `adaptok.train.fit`.

Every row trains (or retrofits) the same ViT trunk (timm `vit_tiny` layout at width 128, depth 4,
4 heads, built with `pretrained=False` and turned into an `AdaptiveViT` by `adaptok.retrofit`),
with the same optimiser (AdamW, lr 1e-3, weight decay 0.05, grad clip 1), warm-up + cosine
schedule, batch and number of steps; only the tokenizer (and its token side P) differs. Nothing is
tuned per method and nothing looks at the test split before the end: the reported checkpoint of a
run is the one with the best accuracy on a validation split held out of the *training* split
(`adaptok.train.holdout`, evaluated every `eval_every` steps of the profile), and the test split
is scored once, with that checkpoint.

Datasets: Fashion-MNIST at 64x64, cluttered Fashion-MNIST at 128x128
(`adaptok.train.cluttered`), and the generated shapes segmentation set (mIoU and boundary F1).

Incremental and resumable: each finished run appends its rows to
benchmarks/results/accuracy_vs_tokens.csv at once (a rerun skips rows already there); a run
checkpoints every `--checkpoint-every` steps under --work and resumes from there. Several
processes may work on the same table at once (a lock file per run).

    # the reduced CPU table (what ran on the 2-core CPU machine), two workers:
    nice -n 10 python benchmarks/accuracy_vs_tokens.py --profile cpu-small &
    nice -n 10 python benchmarks/accuracy_vs_tokens.py --profile cpu-small &
    # the full table on a GPU (three seeds everywhere, the whole training split); every run is
    # a small model, so start several workers on the one GPU (they share the table by locks):
    for i in 1 2 3 4 5 6; do python benchmarks/accuracy_vs_tokens.py --profile full \
        --device cuda --threads 2 & done; wait
    # only some rows (any field of the run id), then the Markdown and plots from the CSV:
    python benchmarks/accuracy_vs_tokens.py --profile cpu-small --only cluttered --only grid
    python benchmarks/accuracy_vs_tokens.py --report

Runs take hours; to keep editing the library meanwhile, run them against a pinned snapshot of
a commit (its `library_commit` column then names that commit, see `library_commit`):

    mkdir -p runs/lib && git archive HEAD src | tar -x -C runs/lib
    git rev-parse --short HEAD > runs/lib/LIBRARY_COMMIT
    PYTHONPATH=runs/lib/src nice -n 10 python benchmarks/accuracy_vs_tokens.py --profile cpu-small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `accuracy` beside this file

from accuracy.plan import PROFILES, plan
from accuracy.report import write_report
from accuracy.runs import CSV_PATH, ROOT, done_ids, worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu-small")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work", default=str(ROOT / "runs/accuracy_vs_tokens"))
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="a regular expression run ids must contain (repeated: all of them), e.g. a "
        "substring, or one run's id followed by $",
    )
    parser.add_argument(
        "--csv",
        default=str(CSV_PATH),
        help="the results table; the Markdown report is written beside it, and so are the plots "
        "unless it is the default table (whose plots go to docs/)",
    )
    parser.add_argument("--skip-dht", action="store_true", help="leave the dHT rows for later")
    parser.add_argument("--report", action="store_true", help="only write Markdown and plots")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    csv_path = Path(args.csv)
    default_table = csv_path.resolve() == CSV_PATH.resolve()
    plots = ROOT / "docs" if default_table else csv_path.parent
    torch.set_num_threads(args.threads)
    if args.list:
        done = done_ids(csv_path, args.profile)
        for run in plan(PROFILES[args.profile]):
            print(("done " if run.run_id in done else "todo ") + run.run_id, run.patch, run.options)
        return 0
    if not args.report:
        worker(
            args.profile, Path(args.work), csv_path, only=args.only, device=args.device,
            skip_dht=args.skip_dht,
        )  # fmt: skip
    write_report(csv_path, csv_path.with_suffix(".md"), plots, Path(args.work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
