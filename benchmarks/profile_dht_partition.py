"""Where `adaptok.partition(images, "dht")` spends its time, stage by stage.

The setting of the dHT speed issue (19): the six benchmark photos plus the first two again
(bench_tokenizers' batch 8) at 224x224, one thread, a ViT-S-scale budget of 98 regions, the
bundled weights. The tokenizer's steps are wrapped in timers that count this thread's CPU time
(`time.thread_time`, robust to other processes on a shared machine), each stage exclusive of the
stages it calls; after `--warmup` calls, `--repeats` calls are timed and the median per stage is
printed per image. A torch.profiler table of the most expensive operations follows.

    python benchmarks/profile_dht_partition.py [--size 224] [--batch 8] [--budget 98]
    PYTHONPATH=/old/checkout/src python benchmarks/profile_dht_partition.py   # an older version
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import adaptok
from adaptok.cli.benchmarking import machine_header
from adaptok.partitioners.dht import tokenizer as dht_tokenizer
from adaptok.partitioners.dht.tokenizer import DHTTokenizer
from bench_tokenizers import load_photos  # benchmarks/ is the script's folder


class StageTimer:
    """Exclusive CPU time per stage: a stage's time minus that of the stages it calls."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.order: list[str] = []
        self.stack: list[list[float]] = []

    def wrap(self, label: str | Callable[..., str], function: Callable) -> Callable:
        def timed(*args, **kwargs):
            name = label(*args, **kwargs) if callable(label) else label
            if name not in self.order:
                self.order.append(name)
            self.stack.append([time.thread_time(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                start, children = self.stack.pop()
                spent = time.thread_time() - start
                self.totals[name] += spent - children
                if self.stack:
                    self.stack[-1][1] += spent

        return timed


def instrument(timer: StageTimer) -> None:
    """Wrap the tokenizer's stages (module functions the tokenizer calls, and its methods) that
    the running version has (older versions lack some, and kept them all in `tokenizer.py`:
    PYTHONPATH=/old/checkout/src profiles them too)."""

    def per_level(stage: str) -> Callable[..., str]:
        def label(graph, *args, **kwargs) -> str:
            return f"{stage}, {'pixel level' if graph.grid is not None else 'levels 2+'}"

        return label

    modules = [dht_tokenizer]
    for name in ("hierarchy", "selection"):  # the split of tokenizer.py (issue 21)
        if importlib.util.find_spec(f"adaptok.partitioners.dht.{name}") is not None:
            modules.append(importlib.import_module(f"adaptok.partitioners.dht.{name}"))
    functions = {
        "pixel_graph": "pixel graph (edge distances)",
        "flat_edges": "flat edges (receptive fields one colour)",
        "join_across": "join flat atoms",
        "region_ic": "information criterion",
        "whole_image_ic": "information criterion",
        "connected_components": "relabel into 4-connected pieces",
        "absorb_thin": "thin-piece absorption",
        "enforce_budget": "budget (rank, absorb)",
    }
    methods = {
        "_features": "pixel encoder",
        "_partition": "partition: other (selection keys, partition from atoms)",
        "_hierarchy": "hierarchy: other (selection bookkeeping)",
        "_ic": "information criterion",  # older versions: methods of the tokenizer
        "_whole_image_ic": "information criterion",
        "_self_edge_of": "self-edges",
        "_absorb_thin": "thin-piece absorption",
    }
    for owner, labels in [*((module, functions) for module in modules), (DHTTokenizer, methods)]:
        for name, label in labels.items():
            if hasattr(owner, name):
                setattr(owner, name, timer.wrap(label, getattr(owner, name)))
    for module in modules:
        for name, stage in (("link_vertices", "links"), ("pool_vertices", "pool")):
            if hasattr(module, name):
                setattr(module, name, timer.wrap(per_level(stage), getattr(module, name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--budget", type=int, default=98)
    parser.add_argument(
        "--resolution",
        type=float,
        default=1.0,
        help="the hierarchy's working resolution (0.5: what a ViT-S/16 retrofit uses)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = load_photos(args.size, "cpu")
    images = photos.repeat(args.batch // photos.shape[0] + 1, 1, 1, 1)[: args.batch]

    def run() -> adaptok.Partition:
        options = {"resolution": args.resolution} if args.resolution != 1 else {}
        return adaptok.partition(images, method="dht", budget=args.budget, **options)

    for _ in range(args.warmup):
        run()
    timer = StageTimer()
    instrument(timer)
    runs, totals = [], []
    for _ in range(args.repeats):
        timer.totals.clear()
        start = time.thread_time()
        part = run()
        totals.append(time.thread_time() - start)
        runs.append(dict(timer.totals))
    per_image = 1000 / args.batch
    total = statistics.median(totals) * per_image
    print(f"# dHT partition profile — {machine_header()}")
    print(
        f"{args.batch} images of {args.size}x{args.size}, budget {args.budget}, resolution "
        f"{args.resolution} "
        f"({part.counts.float().mean():.0f} regions per image), {args.threads} thread(s); "
        f"CPU time of this thread, median of {args.repeats} calls, per image\n"
    )
    print("| stage | ms / image | share |")
    print("|---|---:|---:|")
    rows = [(name, statistics.median(run.get(name, 0.0) for run in runs)) for name in timer.order]
    for name, seconds in sorted(rows, key=lambda row: -row[1]):
        print(f"| {name} | {seconds * per_image:.2f} | {seconds * per_image / total:.0%} |")
    staged = sum(seconds for _, seconds in rows) * per_image
    print(f"| outside the stages (checks, chunking, registry) | {total - staged:.2f} | |")
    print(f"| **whole call** | **{total:.2f}** | |\n")
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    print("Operations by self CPU time (one call, profiler on):\n")
    print("| operation | self ms / image | calls |")
    print("|---|---:|---:|")
    events = sorted(profiler.key_averages(), key=lambda event: -event.self_cpu_time_total)
    for event in events[:15]:
        self_ms = event.self_cpu_time_total / 1e3 / args.batch
        print(f"| {event.key} | {self_ms:.2f} | {event.count} |")


if __name__ == "__main__":
    main()
