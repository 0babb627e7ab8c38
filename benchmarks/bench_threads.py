"""Every `adaptok` command on 1 and 2 torch threads, on an idle machine and beside one busy
process: the measurement behind the CLI's default `--threads` (benchmarks/results/threads.md).

Each command runs in a fresh process (start-up included, as a user sees it); "busy" starts one
`python -c "while True: pass"` before the command and stops it after. Conditions and thread counts
are interleaved round by round, so that a change in the machine's other load hits all of them
alike; the table gives the median of the rounds and the 1-minute load average seen before each
run (other users' load included: say so where the machine is shared).

    python benchmarks/bench_threads.py [--rounds 3] [--threads 1 2] [--default]

"default (1, 1, 2)" rows ran without --threads and without $OMP_NUM_THREADS; the numbers are the
thread counts `default_threads()` picked in each round (computed here just before the run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from adaptok.cli.benchmarking import machine_header
from adaptok.cli.main import default_threads
from adaptok.io import sample_image, to_uint8

BUSY = [sys.executable, "-c", "while True: pass"]
ADAPTOK = [sys.executable, "-c", "import sys; from adaptok.cli.main import main; sys.exit(main())"]


def prepare(folder: Path) -> dict[str, list[str]]:
    """The command lines (after `adaptok`), small enough to repeat, on files made here."""
    photo = to_uint8(sample_image(512)[0])
    shots = []
    for index, (top, left) in enumerate([(40, 60), (200, 150), (300, 300), (100, 330)]):
        path = folder / f"shot{index}.png"
        Image.fromarray(np.ascontiguousarray(photo[top : top + 120, left : left + 160])).save(path)
        shots.append(str(path))
    run = folder / "run"
    subprocess.run(  # the checkpoint that eval reads (its own threads do not matter here)
        [*ADAPTOK, "train", *TRAIN, "--out", str(run), "--threads", "1"],
        check=True,
        capture_output=True,
    )
    return {
        "tokenize": ["tokenize", *shots, "--method", "dht", "-o", str(folder / "tok")],
        "vectorize": ["vectorize", shots[0], shots[1], "-o", str(folder / "vec")],
        "demo": ["demo", "--size", "128", "-o", str(folder / "demo")],
        "train": ["train", *TRAIN, "--out", str(folder / "train"), "--overwrite"],
        "eval": ["eval", str(run / "last.pt"), "--limit", "256"],
        "bench": ["bench", "--size", "128", "--batch", "1", "4", "--repeats", "3"],
    }


TRAIN = ["--dataset", "shapes", "--method", "quadtree", "--image-size", "64", "--patch-size",
         "8", "--steps", "10", "--batch-size", "32", "--no-progress"]  # fmt: skip


def seconds(command: list[str], threads: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    flags = [] if threads is None else ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(
        [*ADAPTOK, *command, *flags],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--default", action="store_true", help="also time the default (no flag)")
    parser.add_argument("--commands", nargs="+", default=None)
    args = parser.parse_args()
    settings: list[int | None] = [*args.threads, *([None] if args.default else [])]
    with tempfile.TemporaryDirectory() as tmp:
        commands = prepare(Path(tmp))
        names = args.commands or list(commands)
        times: dict[tuple[str, int | None, str], list[float]] = {}
        loads: dict[tuple[str, int | None, str], list[float]] = {}
        chosen: dict[tuple[str, str], list[int]] = {}
        for round_index in range(args.rounds):
            for name in names:
                for condition in ("idle", "busy"):
                    for threads in settings:
                        busy = subprocess.Popen(BUSY) if condition == "busy" else None
                        try:
                            load = os.getloadavg()[0]
                            if threads is None:  # what the default picks now (same rule)
                                chosen.setdefault((name, condition), []).append(default_threads())
                            elapsed = seconds(commands[name], threads)
                        finally:
                            if busy is not None:
                                busy.kill()
                                busy.wait()
                        key = (name, threads, condition)
                        times.setdefault(key, []).append(elapsed)
                        loads.setdefault(key, []).append(load)
                        line = f"round {round_index + 1} {name} {condition} threads={threads}"
                        print(f"{line}: {elapsed:.2f} s (load {load:.1f})", file=sys.stderr)
    print(f"adaptok bench_threads · {machine_header()} · {args.rounds} rounds")
    print("| command | threads | machine | median s | runs (s) | load avg (median) |")
    print("|---|---|---|---:|---|---:|")
    for (name, threads, condition), values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        load = statistics.median(loads[(name, threads, condition)])
        picked = ", ".join(str(n) for n in chosen.get((name, condition), []))
        label = f"default ({picked})" if threads is None else str(threads)
        print(f"| {name} | {label} | {condition} | {statistics.median(values):.2f} | {runs} | "
              f"{load:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
