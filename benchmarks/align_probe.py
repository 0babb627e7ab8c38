"""Which tokens keep a grid-trained ViT best without fine-tuning: dHT regions unaligned, or aligned
to its patches at each purity (`adaptok.regions.align_to_cells`) and at each working resolution,
and the quadtree under each scorer, at equal tokens.

Chooses `ALIGN_PURITY`, `CELL_PIXELS` and `retrofit`'s defaults for pooled tokens
(`pooled_options`: aligned dHT, the "pooling" quadtree scorer) by measurement on images that no
benchmark reports: the parents are the accuracy benchmark's issue-18 grid parents
(`grid-64-s0-aug75` of Fashion-MNIST 64 and cluttered Fashion-MNIST 128, found under --work),
exported to timm and retrofitted with `retrofit`'s pooled tokens and size-aware attention;
accuracy is read on the LAST 1,000 images of each training split, which the parents never
trained on (they train on a draw from the first 9,000) and the accuracy benchmark never scores.
No fine-tuning, one parent per dataset: differences under about 2 points are noise.

    python benchmarks/align_probe.py --work runs/accuracy     # a few minutes on one thread

It also draws docs/aligned_tokens.png: held-out images of both datasets with the quadtree's,
the unaligned dHT's and the aligned dHT's tokens at the probe's budget (`figure`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from accuracy.plan import DATASET_SIZES, retrofit_parent
from accuracy.runs import fashion_split, make_vit
from adaptok.cli.benchmarking import machine_header
from adaptok.models import export_timm, load_model, retrofit
from adaptok.models.retrofitting import pooled_options
from adaptok.ops import denormalize
from adaptok.partitioners import dht
from adaptok.partitioners.dht import selection
from adaptok.partitioners.registry import partition
from adaptok.train import evaluate

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = 1000
PURITIES = (0.5, 0.75, 0.9, 1.0)
QUADTREE_BUDGETS = (16, 19, 22, 25, 28, 31)
SCORERS = ("pixel_blur", "pooling")
CELL_PIXELS = (8, 4, 2, 1)  # working pixels per cell side (aligned dHT)
TIMED = 64  # held-out images the partition alone is timed on (one batch, best of 3)
BUDGET = 31


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs/accuracy"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/align_probe.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "# Alignment probe: dHT regions made of whole patches, against unaligned ones and the "
        "quadtree",
        "",
        f"`python benchmarks/align_probe.py`; {machine_header()}.",
        "",
        "Parents: the accuracy benchmark's issue-18 grid parents (64 tokens, trained with 75-100% "
        "crops). Accuracy (%) on the last 1,000 images of each training split (held out from "
        "every benchmark), no fine-tuning, tokens per image in brackets. Every row: "
        "`retrofit`'s pooled tokens and size-aware attention; dHT rows at budget "
        f"{BUDGET}, aligned rows at the library's working resolution (CELL_PIXELS = "
        f"{dht.CELL_PIXELS} working pixels per cell side, min_width off) unless the row says "
        "otherwise; quadtree rows with the library's scorer for pooled tokens (`pooled_options`) "
        "unless the row names one. The cell-pixel rows also give the dHT partition's time alone "
        f"(ms per image, a batch of the first {TIMED} held-out images, best of 3, "
        f"{args.threads} thread(s)).",
        "",
    ]
    datasets = ("fashion-mnist-64", "cluttered-fashion-mnist-128")
    table: dict[str, dict[str, str]] = {}
    aligned: dict[float, list[float]] = {}  # purity -> held-out accuracy per dataset
    scored: dict[str, list[float]] = {}  # quadtree scorer -> held-out accuracy per dataset
    pixels: dict[int, list[float]] = {}  # working pixels per cell -> held-out accuracy
    for dataset in datasets:
        parent_run = retrofit_parent(dataset)
        size, patch = DATASET_SIZES[dataset], parent_run.patch
        checkpoint = Path(args.work) / "runs" / "cpu-long" / parent_run.run_id / "best.pt"
        vit = export_timm(load_model(checkpoint), make_vit(size, patch, 10, 0)).eval()
        full = fashion_split(dataset, "train")
        held = Subset(full, range(len(full) - HELD_OUT, len(full)))

        raw = denormalize(torch.stack([held[i][0] for i in range(TIMED)])).clamp(0, 1)

        def score(
            name: str, model, timed: dict | None = None, dataset: str = dataset, held=held, raw=raw
        ) -> float:
            result = evaluate(model.eval(), held, batch_size=100)
            cell = f"{100 * result.accuracy:.1f} ({result.tokens_per_image:.1f})"
            if timed is not None:  # the model's own dHT options, the partition alone
                options = {k: v for k, v in timed.items() if k in dht.SPEC.call_options}
                seconds = []
                for _ in range(3):
                    start = time.perf_counter()
                    partition(raw, "dht", **options)
                    seconds.append(time.perf_counter() - start)
                cell += f", {1000 * min(seconds) / TIMED:.2f} ms"
            table.setdefault(name, {})[dataset] = cell
            print(f"{dataset:28s} {name:50s} {cell}", flush=True)
            return result.accuracy

        score("parent: grid", retrofit(vit, "grid"))
        for budget in QUADTREE_BUDGETS:
            score(
                f"quadtree, budget {budget}",
                retrofit(vit, "quadtree", partition_options={"budget": budget}),
            )
        for scorer in SCORERS:
            options = {"budget": BUDGET, "scorer": scorer}
            model = retrofit(vit, "quadtree", partition_options=options)
            accuracy = score(f"quadtree, budget {BUDGET}, {scorer}", model)
            scored.setdefault(scorer, []).append(accuracy)
        score(
            "dHT, unaligned",
            retrofit(vit, "dht", partition_options={"budget": BUDGET, "cell": None}),
        )
        for per_cell in CELL_PIXELS:
            options = {"budget": BUDGET, "resolution": min(1.0, per_cell / patch)}
            model = retrofit(vit, "dht", partition_options=options)
            name = f"dHT, aligned, {per_cell} working pixels per cell"
            accuracy = score(name, model, model.config.partition_options)
            pixels.setdefault(per_cell, []).append(accuracy)
        for per_cell in sorted({8, dht.CELL_PIXELS}, reverse=True):  # 8: the first aligned rows
            options = {"budget": BUDGET, "resolution": min(1.0, per_cell / patch)}
            options["min_width"] = None  # the bundled tokenizer's own, 3 working pixels
            model = retrofit(vit, "dht", partition_options=options)
            name = f"dHT, aligned, {per_cell} working pixels per cell, min_width 3"
            score(name, model, model.config.partition_options)
        chosen = selection.ALIGN_PURITY
        try:
            for purity in PURITIES:
                selection.ALIGN_PURITY = purity
                model = retrofit(vit, "dht", partition_options={"budget": BUDGET})
                accuracy = score(f"dHT, aligned, purity {purity}", model)
                aligned.setdefault(purity, []).append(accuracy)
        finally:
            selection.ALIGN_PURITY = chosen
    lines += [
        "| tokens | " + " | ".join(datasets) + " |",
        "|---|" + "---:|" * len(datasets),
        *(
            f"| {name} | " + " | ".join(cells.get(d, "") for d in datasets) + " |"
            for name, cells in table.items()
        ),
        "",
    ]
    chosen_scorer = pooled_options("quadtree", "pooled", "classification", 8, None)["scorer"]
    best = max(aligned, key=lambda purity: (sum(aligned[purity]), purity == selection.ALIGN_PURITY))
    lines.append(
        "Rules, each the highest mean accuracy over the two datasets (a tie keeps the library's "
        f"value): purity {best} "
        f"(library: ALIGN_PURITY = {selection.ALIGN_PURITY}); "
    )
    best_pixels = max(pixels, key=lambda n: (sum(pixels[n]), n == dht.CELL_PIXELS))
    lines[-1] += (
        f"working pixels per cell {best_pixels} (library: CELL_PIXELS = {dht.CELL_PIXELS}); "
    )
    best_scorer = max(scored, key=lambda name: (sum(scored[name]), name == chosen_scorer))
    lines[-1] += f"quadtree scorer {best_scorer!r} (library: {chosen_scorer!r}, `pooled_options`)."
    lines.append("")
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    figure(ROOT / "docs" / "aligned_tokens.png")
    return 0


def figure(path: Path, per_dataset: int = 3) -> None:
    """Held-out images (the probe's) with their tokens at budget BUDGET: quadtree (patches P..4P),
    dHT unaligned, dHT aligned to the P x P patches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptok.visualize import draw_boundaries

    rows = []
    for dataset in ("fashion-mnist-64", "cluttered-fashion-mnist-128"):
        full = fashion_split(dataset, "train")
        items = [full[len(full) - 1 - i][0] for i in range(per_dataset)]
        raw = denormalize(torch.stack(items)).clamp(0, 1)  # what the partitioners read
        patch = retrofit_parent(dataset).patch
        size = DATASET_SIZES[dataset]
        aligned = dht.derive_options(size, patch, {"budget": BUDGET, "cell": patch})
        columns = {  # what `retrofit` reads with pooled tokens (`pooled_options`)
            f"quadtree (pooling), budget {BUDGET}": partition(
                raw, "quadtree", budget=BUDGET, min_patch=patch, max_patch=4 * patch,
                scorer="pooling",
            ),
            f"dHT, cap {BUDGET}": partition(raw, "dht", budget=BUDGET),
            f"dHT, cap {BUDGET}, aligned to {patch}-px patches": partition(raw, "dht", **aligned),
        }  # fmt: skip
        for i in range(per_dataset):
            rows.append([(title, part, raw, i) for title, part in columns.items()])
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)))
    for r, row in enumerate(rows):
        for c, (title, part, raw, i) in enumerate(row):
            ax = axes[r, c]
            drawn = draw_boundaries(raw[i : i + 1], part.select([i]), color=(1.0, 0.2, 0.2))
            ax.imshow(drawn[0].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 or r == per_dataset:
                ax.set_title(title, fontsize=9)
            ax.set_xlabel(f"{int(part.counts[i])} tokens", fontsize=8)
    fig.suptitle("Held-out Fashion-MNIST 64 (top) and cluttered 128 (bottom): tokens a ViT reads")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
