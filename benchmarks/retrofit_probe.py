"""Which embedder and attention keep a grid-trained ViT best on adaptive tokens (no fine-tuning).

Chooses `retrofit`'s defaults (`adaptok.models.retrofitting.RETROFIT_DEFAULTS`) by measurement,
on held-out images that no benchmark reports: a small parent ViT is trained on the grid with the
library's `train` (Fashion-MNIST 64x64, 8-px patches, the accuracy benchmark's trunk: width 128,
depth 4, 4 heads, learned positions), turned into a timm ViT (`export_timm`) and retrofitted onto
quadtree and dHT tokens at about half its 64 tokens with every embedder ("patch": box resampled
to P x P; "pooled": coverage-weighted mean of the parent's patch embeddings; "dht": masked boxes
and position histograms), each with and without size-aware (proportional) attention. Accuracy
is read on the LAST 1,000 images of the Fashion-MNIST training split, which the parent never
trained on (it trains on the first `--train-images`) and the accuracy benchmark never scores.

    python benchmarks/retrofit_probe.py                 # about 10 minutes on one CPU thread
    python benchmarks/retrofit_probe.py --steps 60      # a quick check that everything runs

The parent is cached under --work (rerunning reuses it); the table is printed and written to
benchmarks/results/retrofit_probe.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from accuracy.plan import DEPTH, HEADS  # the accuracy benchmark's one trunk
from accuracy.plan import EMBED_DIM as WIDTH
from accuracy.runs import make_vit
from adaptok.cli.benchmarking import machine_header
from adaptok.models import EncoderConfig, ModelConfig, export_timm, load_model, retrofit
from adaptok.train import FashionMNIST, TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parent.parent
SIZE, PATCH = 64, 8
HELD_OUT = 1000  # the last images of the training split
# (method, partition options) at about half the parent's 64 tokens.
METHODS = {
    "quadtree": {"budget": 31, "min_patch": PATCH, "max_patch": 4 * PATCH},
    "dht": {"budget": 31},
}
EMBEDDERS = {"quadtree": ("patch", "pooled"), "dht": ("dht", "patch", "pooled")}


def parent_config() -> ModelConfig:
    return ModelConfig(
        method="grid",
        image_size=SIZE,
        patch_size=PATCH,
        position="learned",
        encoder=EncoderConfig(embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS),
    )


def timm_parent(checkpoint: Path):
    """The trained grid parent as a timm ViT (what a user who already has a ViT holds)."""
    model = load_model(checkpoint)
    return export_timm(model, make_vit(SIZE, PATCH, num_classes=10, seed=0)).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="parent training steps")
    parser.add_argument("--train-images", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(ROOT / "runs/retrofit_probe"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/retrofit_probe.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work) / f"parent-{args.steps}"
    if not (work / "last.pt").is_file() or args.steps < 100:
        train(
            parent_config(),
            TrainConfig(
                output=str(work),
                steps=args.steps,
                train_limit=args.train_images,
                eval_limit=500,
                warmup_steps=max(1, args.steps // 10),
                progress=False,
            ),
            overwrite=True,
        )
    vit = timm_parent(work / "last.pt")
    full = FashionMNIST(split="train", image_size=SIZE, in_chans=3)
    held = Subset(full, range(len(full) - HELD_OUT, len(full)))
    held.info = full.info  # type: ignore[attr-defined]

    rows = []

    def score(name: str, model) -> None:
        tick = time.perf_counter()
        result = evaluate(model.eval(), held, batch_size=100)
        rows.append((name, result.tokens_per_image, 100 * result.accuracy))
        print(
            f"{name:40s} {result.tokens_per_image:6.1f} tokens  {100 * result.accuracy:5.1f}%  "
            f"({time.perf_counter() - tick:.0f} s)",
            flush=True,
        )

    score("parent: grid, 64 tokens", retrofit(vit, "grid"))
    for method, options in METHODS.items():
        for embedder in EMBEDDERS[method]:
            for attention in (False, True):
                model = retrofit(
                    vit,
                    method,
                    embedder=embedder,
                    proportional_attention=attention,
                    partition_options=options,
                )
                label = "size-aware" if attention else "plain"
                score(f"{method}: {embedder} embedder, {label} attention", model)

    lines = [
        "# Retrofit probe: which embedder and attention keep the parent",
        "",
        f"`python benchmarks/retrofit_probe.py --steps {args.steps}`; {machine_header()}.",
        "",
        f"Parent: grid ViT (Fashion-MNIST {SIZE}x{SIZE}, {PATCH}-px patches, 64 tokens, width "
        f"{WIDTH}, depth {DEPTH}, learned positions), {args.steps} steps on the first "
        f"{args.train_images} training images, no augmentation. Accuracy on the last {HELD_OUT} "
        "training images (held out: no benchmark reports them), no fine-tuning; one parent, so "
        "differences under about 2 points are noise.",
        "",
        "| tokens | tokens/image | accuracy (%) |",
        "|---|---:|---:|",
        *(f"| {name} | {tokens:.1f} | {accuracy:.1f} |" for name, tokens, accuracy in rows),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
