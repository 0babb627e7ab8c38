"""Where one dHT training step spends its time: a torch.profiler table per stage and per operation.

The setting of the training-speed issue: `build_model` with dHT tokens (budget 64, patch 8,
position grid 8), a ViT of width 128, depth 4, 4 heads, batch 64 of 128x128 crops of
scikit-image photos, AdamW, one CPU thread by default. One warm-up step, then one profiled step.
Stages are the model's parts (tokenizer, and inside it the pixel encoder and the tokenizer's own
steps; extractor; embedder; trunk; head) plus loss, backward and optimiser. Backward time is
listed per autograd function, so the backward passes of the tokenizer and the extractor can be
told apart.

    python benchmarks/profile_dht_step.py                      # print the Markdown tables
    python benchmarks/profile_dht_step.py --grid               # the same step on grid tokens
    PYTHONPATH=/old/checkout/src python benchmarks/profile_dht_step.py   # an older version
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import adaptok.models.vit as vit_module
from accuracy.runs import library_commit  # benchmarks/ is the script's folder
from adaptok.cli.benchmarking import machine_header
from train_throughput import cases, photo_crops

# Methods of DHTTokenizer ("_name") and functions of its package's modules ("module.name"),
# profiled as stages when the running version has them (the table then also works for older
# versions of the tokenizer, which kept thin-piece absorption as the method `_absorb_thin`).
TOKENIZER_STEPS = (
    "_partition",
    "_hierarchy",
    "selection.absorb_thin",
    "_absorb_thin",
    "_log_weights",
)


def _labelled(label: str, function: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        with record_function(label):
            return function(*args, **kwargs)

    return wrapped


def instrument(model: torch.nn.Module) -> list[str]:
    """Wrap the model's stages in profiler labels; returns the labels in pipeline order."""
    labels = []

    def label_module(module: torch.nn.Module, label: str) -> None:
        module.forward = _labelled(label, module.forward)
        labels.append(label)

    label_module(model.tokenizer, "tokenizer")
    dht = getattr(model.tokenizer, "tokenizer", None)
    if dht is not None:
        label_module(dht.encoder, "  pixel encoder")
        for step in TOKENIZER_STEPS:
            module_name, _, name = step.rpartition(".")
            owner: object = dht
            if module_name:
                path = f"adaptok.partitioners.dht.{module_name}"
                owner = importlib.import_module(path) if importlib.util.find_spec(path) else None
            if hasattr(owner, name):
                label = f"  {name.strip('_')}"
                setattr(owner, name, _labelled(label, getattr(owner, name)))
                labels.append(label)
    vit_module.extract_tokens = _labelled("extractor", vit_module.extract_tokens)
    labels.append("extractor")
    label_module(model.embedder, "embedder")
    label_module(model.encoder, "trunk")
    label_module(model.head, "head")
    return labels


def top_table(events: dict, prefix: str, title: str, time_field: str, rows: int) -> None:
    """Print the `rows` profiler events named `prefix...` that took the longest."""
    chosen = sorted(
        (event for event in events.values() if event.key.startswith(prefix)),
        key=lambda event: -getattr(event, time_field),
    )
    print(f"| {title} | ms | calls |")
    print("|---|---:|---:|")
    for event in chosen[:rows]:
        name = event.key.split(": ", 1)[-1]
        print(f"| {name} | {getattr(event, time_field) / 1e3:.0f} | {event.count} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64, help="dHT budget (grid: its count)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", action="store_true", help="profile grid tokens instead")
    parser.add_argument(
        "--retrofit", action="store_true", help="profile the dHT retrofit of a timm ViT instead"
    )
    parser.add_argument("--rows", type=int, default=12, help="rows of the operation tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = cases(args.size, args.tokens, 8, (128, 4, 4))
    name = "grid" if args.grid else "dht"
    if args.retrofit:
        name = next(row for row in rows if row.startswith("dht retrofit"))
    model = rows[name]()
    method, options = model.config.method, model.config.partition_options
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = photo_crops(args.batch, args.size)
    labels = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(1))
    stages = instrument(model)

    def step() -> None:
        logits = model(images)
        with record_function("loss"):
            loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.backward()
        with record_function("optimiser"):
            optimizer.step()

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler, record_function("step"):
        step()
    events = {event.key: event for event in profiler.key_averages()}

    def total_ms(key: str) -> float:
        event = events.get(key)
        return event.cpu_time_total / 1e3 if event is not None else 0.0

    step_ms = total_ms("step")
    print(
        f"{machine_header()} · commit {library_commit()} · {method} tokens ({options}), batch "
        f"{args.batch} of {args.size}x{args.size} photo crops, ViT 128 wide, depth 4"
    )
    print()
    print("| stage | ms | share of the step |")
    print("|---|---:|---:|")
    for label in [*stages, "loss", "backward", "optimiser"]:
        if label in events:
            name = label.replace("  ", "&nbsp;&nbsp;") if label.startswith(" ") else label
            ms = total_ms(label)
            print(f"| {name} | {ms:.0f} | {100 * ms / step_ms:.0f}% |")
    print(f"| **step** | **{step_ms:.0f}** | 100% |")
    print()
    top_table(events, "autograd::engine", "backward function", "cpu_time_total", args.rows)
    print()
    top_table(
        events,
        "aten::",
        "operation (self time, forward and backward)",
        "self_cpu_time_total",
        args.rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
