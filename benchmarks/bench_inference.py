"""End-to-end inference speed of a timm ViT on its grid, retrofitted to adaptive tokens, and with
token merging, at about half the grid's tokens (CPU or CUDA).

For each setting, one randomly initialised timm ViT (seeded) runs on a batch of photo crops
(scikit-image photos, ImageNet-normalised), in eval mode under torch.inference_mode, every row's
tokenizer inside the timer:

    timm grid        the timm model itself on its own patch grid (the reference: 1.00x)
    retrofit grid    adaptok.retrofit(vit, "grid"): the same tokens through AdaptiveViT
    retrofit quadtree   retrofit(vit, "quadtree"), patches P..2P, the valid budget nearest half
    retrofit dht     retrofit(vit, "dht"), partition_options budget = half the grid's tokens (the
                     hierarchy at the derived working resolution), and again at full size
    ToMe             adaptok.models.tome: the timm model merging down to half the tokens, and
                     to a quarter
    dHT partition alone   the dht row's tokenizer call, also as a share of the timm forward

The rows are timed in turn within each repeat (after the warm-up calls), so a change in the
machine's load touches every row alike, and the table gives medians. Printed as Markdown with
the date, processor, threads, torch version and load.

    python benchmarks/bench_inference.py                        # both settings, 1 thread
    python benchmarks/bench_inference.py --setting vit-s --threads 2 --repeats 9
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import timm
import torch
from torch import Tensor, nn

from adaptok import retrofit
from adaptok.cli.benchmarking import machine_header
from adaptok.models.tome import tome_forward
from adaptok.partitioners.dht import derive_options as dht_options
from adaptok.partitioners.quadtree import nearest_budget
from train_throughput import photo_crops


@dataclass(frozen=True)
class Setting:
    """A timm ViT and the batch it is timed on.

    Attributes:
        model: the timm model name (random weights).
        options: timm.create_model keyword arguments (image size, patch size, trunk).
        batch: images per call.
    """

    model: str
    options: dict[str, object] = field(default_factory=dict)
    batch: int = 8


SETTINGS = {
    # The ViT-S/16 at 224 (196 grid tokens).
    "vit-s": Setting("vit_small_patch16_224", {}, batch=8),
    # The accuracy benchmark's small trunk (64x64, 8-px patches: 64 grid tokens).
    "small": Setting(
        "vit_tiny_patch16_224",
        dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, num_classes=10),
        batch=64,
    ),
    # A few seconds end to end, for the smoke test.
    "smoke": Setting(
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10),
        batch=2,
    ),
}


@dataclass(frozen=True)
class Row:
    """One timed line: `run(images)` -> logits, or the tokenizer's output for the partition row.

    Attributes:
        name: the table's first column.
        run: the timed call.
        tokens: tokens per image (mean over the batch).
    """

    name: str
    run: Callable[[Tensor], object]
    tokens: float | None


def build_rows(vit: nn.Module, images: Tensor) -> list[Row]:
    """The table's rows for one timm ViT: grid, retrofits at half its tokens, ToMe, dHT alone."""
    patch = int(vit.patch_embed.patch_size[0])
    side = int(vit.patch_embed.img_size[0])
    grid = int(vit.patch_embed.num_patches)
    half = grid // 2
    budget = nearest_budget(side, side, half, min_patch=patch, max_patch=2 * patch)
    resolution = dht_options(side, patch, {})["resolution"]  # what retrofit derives
    models = {
        "grid": retrofit(vit, "grid"),
        f"quadtree (budget {budget}, patches {patch}..{2 * patch})": retrofit(
            vit,
            "quadtree",
            partition_options={"budget": budget, "min_patch": patch, "max_patch": 2 * patch},
        ),
        f"dht (budget {half}, resolution {resolution})": retrofit(
            vit, "dht", partition_options={"budget": half}
        ),
    }
    if resolution < 1:  # beside it, the same retrofit with the hierarchy at full size
        models[f"dht (budget {half}, resolution 1.0)"] = retrofit(
            vit, "dht", partition_options={"budget": half, "resolution": 1.0}
        )
    rows = [Row(f"timm grid ({grid} tokens)", vit, float(grid))]
    with torch.inference_mode():
        for name, model in models.items():
            model.eval()
            _, counts = model(images, return_counts=True)
            rows.append(Row(f"retrofit {name}", model, float(counts.float().mean())))
    # The same count, and merged further towards the quadtree's throughput where the blocks can
    # (each merges at most half its tokens).
    finals = [half]
    if grid // 4 >= math.ceil(grid / 2 ** len(vit.blocks)):
        finals.append(grid // 4)
    for final in finals:
        rows.append(
            Row(
                f"ToMe (final {final} tokens)",
                lambda x, final=final: tome_forward(vit, x, final_tokens=final),
                final,
            )
        )
    dht = models[f"dht (budget {half}, resolution {resolution})"]
    rows.append(Row("dHT partition alone", dht.tokenizer, None))
    return rows


def time_rows(
    rows: Sequence[Row], images: Tensor, *, repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Median ms per call of each row; the rows take turns within every repeat."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in rows]
    with torch.inference_mode():
        for repeat in range(warmup + repeats):
            for row, row_times in zip(rows, times, strict=True):
                sync()
                start = time.perf_counter()
                row.run(images)
                sync()
                if repeat >= warmup:
                    row_times.append(1000 * (time.perf_counter() - start))
    return [statistics.median(row_times) for row_times in times]


def table(rows: Sequence[Row], medians: Sequence[float], batch: int) -> list[str]:
    """Markdown lines: tokens, ms per image, images/s and the ratio to the timm grid row."""
    lines = [
        "| model | tokens / image | ms / image | images/s | vs timm grid |",
        "|---|---:|---:|---:|---:|",
    ]
    reference = medians[0]
    for row, median in zip(rows, medians, strict=True):
        per_image = median / batch
        if row.tokens is None:  # the partition alone: a share of the timm forward, no logits
            lines.append(
                f"| {row.name} | | {per_image:.2f} | | {100 * median / reference:.0f}% of the "
                "timm forward |"
            )
        else:
            lines.append(
                f"| {row.name} | {row.tokens:.1f} | {per_image:.2f} | "
                f"{1000 * batch / median:.1f} | {reference / median:.2f}x |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setting", nargs="+", choices=sorted(SETTINGS), default=["vit-s", "small"]
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, help="images per call (default: the setting's)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name in args.setting:
        setting = SETTINGS[name]
        batch = args.batch or setting.batch
        torch.manual_seed(0)
        vit = timm.create_model(setting.model, pretrained=False, **setting.options)
        vit = vit.eval().to(device)
        side = int(vit.patch_embed.img_size[0])
        images = photo_crops(batch, side).to(device)
        rows = build_rows(vit, images)
        medians = time_rows(rows, images, repeats=args.repeats, warmup=args.warmup, device=device)
        options = "".join(f", {key}={value}" for key, value in setting.options.items())
        print(
            f"### {name}: {setting.model}{options} (random weights) · batch "
            f"{batch} of {side}x{side} photo crops · median of {args.repeats} calls after "
            f"{args.warmup} warm-up calls, rows in turn"
        )
        print()
        print(machine_header(args.device))
        print()
        print("\n".join(table(rows, medians, batch)))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
