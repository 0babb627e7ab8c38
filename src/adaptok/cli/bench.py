"""`adaptok bench`: time each tokenizer on the bundled photo on this machine."""

from __future__ import annotations

import argparse

import torch

from ..io import sample_image
from ..partitioners.registry import partition
from ..tokens import extract_tokens
from ..train.distributed import check_device
from ..validate import check_int
from .benchmarking import machine_header, median_ms
from .demo import METHODS, check_size, method_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--size", type=int, default=512, help="image side (a multiple of 128)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    check_size(args.size)
    for batch in args.batch:
        check_int("--batch", batch)
    check_int("--repeats", args.repeats)
    device = str(check_device(args.device))
    print(f"adaptok bench · {machine_header(device)}")
    print(
        f"bundled photo at {args.size}x{args.size}; median of {args.repeats} runs; "
        "time = partition + token extraction (16x16 tokens); every method asked for "
        f"({args.size} / 32)^2 = {(args.size // 32) ** 2} tokens"
    )
    print("| method | batch | tokens/image | ms/batch | ms/image |\n|---|---:|---:|---:|---:|")
    for batch in args.batch:
        images = sample_image(args.size).repeat(batch, 1, 1, 1).to(device)
        for method in args.methods:
            options = method_options(args.size)[method]

            def tokenize(method=method, options=options, images=images) -> object:
                with torch.no_grad():
                    return extract_tokens(images, partition(images, method=method, **options))

            tokens = tokenize()
            count = tokens.patch_valid.sum().item() / batch
            elapsed = median_ms(tokenize, repeats=args.repeats, device=device)
            print(f"| {method} | {batch} | {count:.0f} | {elapsed:.1f} | {elapsed / batch:.1f} |")
    return 0
