"""Fashion-MNIST at 64x64: one small ViT trained with grid, quadtree and dHT tokens.

The default runs use the same model (dHT-style embedder: patch, mask and 8x8
position-histogram columns, so only the tokenizer differs), the same seed, data order,
optimiser, schedule and number of steps; the optional "-sincos" runs use the plain patch
embedding with 2-D sinusoids. Reports test accuracy, tokens per image and time as a markdown
table.

    nice python scripts/experiment_fashion_mnist.py            # ~15 min on 1 CPU thread
    nice python scripts/experiment_fashion_mnist.py --steps 50 --eval-limit 500   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from adaptok.cli.benchmarking import cpu_name
from adaptok.models import EncoderConfig, ModelConfig
from adaptok.train import TrainConfig, train

# (name, method, patch size, partition options)
RUNS = {
    "grid-8": ("grid", 8, {"patch_size": 8}),
    "quadtree-31": ("quadtree", 8, {"budget": 31, "min_patch": 8, "max_patch": 32}),
    # the bundled pretrained dHT tokenizer, sampling kept regions in training as the paper does
    "dht-31": ("dht", 8, {"budget": 31, "sample_budget": True}),
    "grid-16": ("grid", 16, {"patch_size": 16}),
    # Optional (--runs): the plain ViT / Quadformer embedder (patch + 2-D sinusoids, no mask).
    "grid-8-sincos": ("grid", 8, {"patch_size": 8}),
    "quadtree-31-sincos": ("quadtree", 8, {"budget": 31, "min_patch": 8, "max_patch": 32}),
    # Optional: a freshly initialised (untrained) dHT tokenizer instead of the bundled weights.
    "dht-31-fresh": ("dht", 8, {"budget": 31, "weights": "none", "sample_budget": True}),
    # Optional: the eval-time (deterministic) budget rule in training too.
    "dht-31-det": ("dht", 8, {"budget": 31, "sample_budget": False}),
}
DEFAULT_RUNS = ["grid-8", "quadtree-31", "dht-31", "dht-31-det", "grid-16"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=10000, help="first N test images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
    parser.add_argument("--out", default="benchmarks/results/fashion_mnist.md")
    parser.add_argument("--work", default="runs/fashion_mnist", help="checkpoints and CSV logs")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the rows to an existing table (with a note saying when and how)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = EncoderConfig(embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0)
    rows = []
    started = datetime.datetime.now(datetime.UTC)
    for name in args.runs:
        method, patch, options = RUNS[name]
        model_config = ModelConfig(
            method=method,
            image_size=64,
            in_chans=3,
            patch_size=patch,
            embedder="patch" if name.endswith("sincos") else "dht",
            position="sincos",
            position_grid=8,
            partition_options=options,
            encoder=encoder,
        )
        config = TrainConfig(
            dataset="fashion-mnist",
            output=f"{args.work}/{name}",
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=0.05,
            warmup_steps=max(1, args.steps // 10),
            seed=args.seed,
            log_every=10,
            checkpoint_every=args.steps,
            eval_limit=args.eval_limit,
            device="cpu",
        )
        tick = time.perf_counter()
        result = train(model_config, config)
        total = time.perf_counter() - tick
        evaluation = result.evaluation
        rows.append(
            {
                "run": name,
                "embedder": model_config.embedder,
                "method": method,
                "patch": patch,
                "options": options,
                "test_accuracy": evaluation.accuracy,
                "test_loss": evaluation.loss,
                "tokens_per_image": evaluation.tokens_per_image,
                "train_seconds": result.train_seconds,
                "eval_images_per_second": evaluation.images_per_second,
                "total_seconds": total,
                "test_images": evaluation.images,
            }
        )
        print(json.dumps(rows[-1]))
    write_table(rows, args, started)
    return 0


def write_table(rows: list[dict], args: argparse.Namespace, started: datetime.datetime) -> None:
    header = [
        "# Fashion-MNIST 64x64: grid vs quadtree vs dHT tokens",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; seed {args.seed}",
        f"- machine: {cpu_name()}, {args.threads} torch thread(s), torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "- model: ViT embed 128, depth 4, 4 heads, MLP x4, cls token; embedder 'dht' = patch + "
        "mask + 8x8 position-histogram columns + LayerNorm, 'patch' = patch + 2-D sinusoids of "
        "the token centre (Quadformer); images 64x64, "
        "grey repeated to 3 channels, ImageNet-normalised",
        f"- training: {args.steps} steps x batch {args.batch_size} "
        f"({args.steps * args.batch_size} images, from the 60k train split), AdamW lr {args.lr}, "
        f"weight decay 0.05, 10% warm-up then cosine, no augmentation, fp32 on CPU",
        f"- test: first {rows[0]['test_images'] if rows else 0} images of the 10k test split",
        "- command: `nice python scripts/experiment_fashion_mnist.py "
        f"--steps {args.steps} --eval-limit {args.eval_limit} --seed {args.seed}`",
        "",
        "| run | tokenizer | embedder | token P | tokens/image (test) | test accuracy | test loss "
        "| train time (s) | eval images/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines = [
        f"| {r['run']} | {r['method']} {json.dumps(r['options'])} | {r['embedder']} | {r['patch']} "
        f"| {r['tokens_per_image']:.1f} | {r['test_accuracy']:.4f} | {r['test_loss']:.4f} "
        f"| {r['train_seconds']:.0f} | {r['eval_images_per_second']:.0f} |"
        for r in rows
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.is_file():
        note = (
            f"\nRows {', '.join(r['run'] for r in rows)} added by a separate run on "
            f"{started:%Y-%m-%d %H:%M} UTC (`... --runs {' '.join(args.runs)} --append`), same "
            "settings:\n\n"
        )
        text = out.read_text().rstrip("\n") + "\n" + note + "\n".join(header[-2:] + lines) + "\n"
        out.write_text(text)
        print(text)
        return
    out.write_text("\n".join(header + lines) + "\n")
    print("\n".join(header + lines))


if __name__ == "__main__":
    raise SystemExit(main())
