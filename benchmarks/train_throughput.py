"""Training throughput of AdaptiveViT per tokenizer on this machine (CPU or CUDA).

Times full training steps (tokenize, extract, embed, encode, loss, backward, AdamW) on random
64x64 images after warm-up, and checks that the loss stays finite under the device's autocast
policy (bf16 on CUDA). Prints a markdown table with the date and machine.

    nice python benchmarks/train_throughput.py --device cpu --threads 1
    python benchmarks/train_throughput.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch

from adaptok.cli.benchmarking import cpu_name
from adaptok.models import EncoderConfig, ModelConfig, build_model
from adaptok.train.loop import autocast_context

CASES = {
    "grid-8": ("grid", 8, {"patch_size": 8}),
    "quadtree-31": ("quadtree", 8, {"budget": 31, "min_patch": 8, "max_patch": 32}),
    "dht-31": ("dht", 8, {"budget": 31}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {device} ({name}); "
        f"torch {torch.__version__}; threads {torch.get_num_threads()}; amp {args.amp}; "
        f"batch {args.batch} of 64x64; ViT embed 128 depth 4; median of {args.steps} steps"
    )
    print("| tokenizer | tokens/image | ms/step | images/s | final loss |")
    print("|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, 64, 64, generator=generator).to(device)
    labels = torch.randint(0, 10, (args.batch,), generator=generator).to(device)
    for case, (method, patch, options) in CASES.items():
        torch.manual_seed(0)
        config = ModelConfig(
            method=method,
            image_size=64,
            patch_size=patch,
            embedder="dht",
            position_grid=8,
            partition_options=options,
            encoder=EncoderConfig(embed_dim=128, depth=4, num_heads=4),
        )
        model = build_model(config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        times = []
        for step in range(args.steps + 2):  # two warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            tick = time.perf_counter()
            with autocast_context(device, args.amp):
                logits, counts = model(images, return_counts=True)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - tick)
        if not torch.isfinite(loss):
            raise SystemExit(f"{case}: loss is {float(loss.detach())}")
        median = sorted(times)[len(times) // 2]
        print(
            f"| {case} | {float(counts.float().mean()):.1f} | {median * 1e3:.1f} "
            f"| {args.batch / median:.0f} | {float(loss.detach()):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
