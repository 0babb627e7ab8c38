"""End-to-end inference speed of a timm ViT on its grid, retrofitted to adaptive tokens, and with
token merging, at about half the grid's tokens (CPU or CUDA).

For each setting, one randomly initialised timm ViT (seeded) runs on a batch of photo crops
(scikit-image photos, ImageNet-normalised), in eval mode under torch.inference_mode, every row's
tokenizer inside the timer:

    timm grid        the timm model itself on its own patch grid (the reference: 1.00x)
    retrofit grid    adaptok.retrofit(vit, "grid"): the same tokens through AdaptiveViT
    retrofit quadtree   retrofit(vit, "quadtree"), patches P..2P, the valid budget nearest half
                     (scored by what pooling loses, retrofit's default with pooled tokens)
    retrofit dht     retrofit(vit, "dht"), partition_options budget = half the grid's tokens (the
                     regions whole patches, the hierarchy at the derived 2 working pixels per
                     patch side), and again at 8 (the setting of the first aligned rows)
    ToMe             adaptok.models.tome: the timm model merging down to half the tokens, and
                     to a quarter
    dHT partition alone   the dht row's tokenizer call, also as a share of the timm forward

The settings named after a dataset of the accuracy benchmark (fashion-mnist-64,
cluttered-fashion-mnist-128) time that benchmark's own models instead, on the first images of
the dataset's test split: its grid parent (random weights; the timm row is the parent exported
to timm), and every retrofit and ToMe row of issue 18 as `benchmarks/accuracy/plan.py` plans
them (`speed_runs`: the same budgets, patch sizes, embedders and final counts), built by the
same functions as the benchmark's rows. The accuracy report's ToMe verdicts read their ratios
from the JSON that --json writes (benchmarks/results/inference_speed.json).

The rows are timed in turn within each repeat (after the warm-up calls), so a change in the
machine's load touches every row alike, and the table gives medians. Between processes minutes
apart the ratios still moved 10-15% on a shared machine: --rounds N times everything in N fresh
processes and gives each row's medians over them. Printed as Markdown with the date,
processor, threads, torch version and load.

    python benchmarks/bench_inference.py                        # vit-s and small, 1 thread
    python benchmarks/bench_inference.py --setting vit-s --threads 2 --repeats 9
    # the accuracy benchmark's two trunks, for the report's ToMe verdicts (with --trained, its
    # fine-tuned dHT models too, from the benchmark's --work folder; medians over 5 processes):
    python benchmarks/bench_inference.py --setting fashion-mnist-64 \
        cluttered-fashion-mnist-128 --repeats 9 --rounds 5 --trained WORK \
        --json benchmarks/results/inference_speed.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from accuracy.plan import (
    DATASET_SIZES,
    LIMIT_TOKENS,
    TRUNK,
    patch_pixels_options,
    retrofit_parent,
    speed_runs,
    trunk_options,
)
from accuracy.report import RETROFIT_ROWS, chosen_fine_tune, group_rows, timed_run
from accuracy.runs import (
    CSV_PATH,
    ToMeModel,
    build,
    fashion_split,
    make_vit,
    read_rows,
    retrofitted,
    row_options,
)
from accuracy.speeds import (
    SpeedRow,
    SpeedTable,
    combine_rounds,
    read_speeds,
    speed_kind,
    write_speeds,
)
from adaptok import load_model, retrofit
from adaptok.cli.benchmarking import header_line, machine_facts
from adaptok.models import export_timm
from adaptok.models.tome import tome_forward
from adaptok.partitioners.dht import derive_options as dht_options
from adaptok.partitioners.quadtree import nearest_budget
from adaptok.train.datasets import FASHION_CLASSES
from train_throughput import photo_crops


@dataclass(frozen=True)
class Setting:
    """A timm ViT and the batch it is timed on.

    Attributes:
        model: the timm model name (random weights).
        options: timm.create_model keyword arguments (image size, patch size, trunk).
        batch: images per call.
        dataset: a dataset of the accuracy benchmark: the setting times that benchmark's models
            of it (`accuracy_rows`) on its test images; None: `build_rows` on photo crops.
    """

    model: str
    options: dict[str, object] = field(default_factory=dict)
    batch: int = 8
    dataset: str | None = None


def accuracy_setting(dataset: str) -> Setting:
    """The accuracy benchmark's trunk for `dataset` (its grid parent's patch), batch 64 as its
    evaluation."""
    size, patch = DATASET_SIZES[dataset], retrofit_parent(dataset).patch
    options = trunk_options(size, patch, len(FASHION_CLASSES))
    return Setting(TRUNK, options, batch=64, dataset=dataset)


SETTINGS = {
    # The ViT-S/16 at 224 (196 grid tokens).
    "vit-s": Setting("vit_small_patch16_224", {}, batch=8),
    # The accuracy benchmark's small trunk (64x64, 8-px patches: 64 grid tokens) on photo crops,
    # with the rows above.
    "small": Setting(TRUNK, trunk_options(64, 8, len(FASHION_CLASSES)), batch=64),
    # The accuracy benchmark's own models of its two classification datasets.
    "fashion-mnist-64": accuracy_setting("fashion-mnist-64"),
    "cluttered-fashion-mnist-128": accuracy_setting("cluttered-fashion-mnist-128"),
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
        kind: what it runs (`accuracy.speeds.KINDS`).
        budget: the token target (a retrofit's budget, ToMe's final count), None for the rest.
        run_id: the accuracy run whose trained model this is (None: random weights).
    """

    name: str
    run: Callable[[Tensor], object]
    tokens: float | None
    kind: str
    budget: int | None = None
    run_id: str | None = None


def counted(
    name: str,
    model: nn.Module,
    kind: str,
    budget: int | None,
    images: Tensor,
    run_id: str | None = None,
) -> Row:
    """A row of an AdaptiveViT (or ToMe) with the tokens per image it ends with on `images`."""
    model.eval()
    with torch.inference_mode():
        _, counts = model(images, return_counts=True)
    return Row(name, model, float(counts.float().mean()), kind, budget, run_id)


def build_rows(vit: nn.Module, images: Tensor) -> list[Row]:
    """The table's rows for one timm ViT: grid, retrofits at half its tokens, ToMe, dHT alone."""
    patch = int(vit.patch_embed.patch_size[0])
    side = int(vit.patch_embed.img_size[0])
    grid = int(vit.patch_embed.num_patches)
    half = grid // 2
    budget = nearest_budget(side, side, half, min_patch=patch, max_patch=2 * patch)
    resolution = dht_options(side, patch, {"cell": patch})["resolution"]  # what retrofit derives
    aligned = f"aligned to {patch}-px patches"  # retrofit's default for dHT (`cell`)
    dht_name = f"retrofit dht (budget {half}, resolution {resolution}, {aligned})"
    rows = [
        Row(f"timm grid ({grid} tokens)", vit, float(grid), "grid"),
        counted("retrofit grid", retrofit(vit, "grid"), "retrofit-grid", None, images),
        counted(
            f"retrofit quadtree (budget {budget}, patches {patch}..{2 * patch}, pooling)",
            retrofit(
                vit,
                "quadtree",
                partition_options={"budget": budget, "min_patch": patch, "max_patch": 2 * patch},
            ),
            "retrofit-quadtree",
            budget,
            images,
        ),
        counted(
            dht_name,
            retrofit(vit, "dht", partition_options={"budget": half}),
            "retrofit-dht-cells",
            half,
            images,
        ),
    ]
    # Beside it, the same retrofit with the hierarchy at 8 working pixels per patch side and
    # the tokenizer's own min_width (the first aligned rows' setting).
    first = {"budget": half, **patch_pixels_options(patch)}
    rows.append(
        counted(
            f"retrofit dht (budget {half}, resolution {first['resolution']}, {aligned})",
            retrofit(vit, "dht", partition_options=first),
            "retrofit-dht-aligned",
            half,
            images,
        )
    )
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
                float(final),
                "tome",
                final,
            )
        )
    dht = next(row for row in rows if row.name == dht_name)
    rows.append(Row("dHT partition alone", dht.run.tokenizer, None, "dht-partition"))
    return rows


def dataset_images(dataset: str, batch: int) -> Tensor:
    """[batch, 3, S, S] the first test images of an accuracy-benchmark dataset, as its models
    read them."""
    source = fashion_split(dataset, "test")
    return torch.stack([source[index][0] for index in range(batch)])


def accuracy_rows(
    setting: Setting, images: Tensor, device: torch.device, trained: Path | None = None
) -> list[Row]:
    """The accuracy benchmark's models of `setting.dataset`, random weights: its grid parent
    (built as the parent row is), the parent exported to timm (the reference, and the model ToMe
    merges in, as the ToMe rows are built), every retrofit (`retrofitted`, as the retrofit rows
    are built) and ToMe count of `speed_runs`, the tokenizer alone of the dHT retrofit the
    goals read ("retrofit-dht-cells"), and with `trained` (the accuracy benchmark's --work
    folder) its fine-tuned dHT models (`trained_rows`)."""
    dataset = str(setting.dataset)
    parent_run = retrofit_parent(dataset)
    size, patch = DATASET_SIZES[dataset], parent_run.patch
    num_classes = int(setting.options["num_classes"])  # type: ignore[arg-type]
    parent = build(parent_run, num_classes, "classification", Path("."), str(device)).eval()
    vit = export_timm(parent, make_vit(size, patch, num_classes, 0)).eval().to(device)
    grid = int(vit.patch_embed.num_patches)
    rows = [
        Row(f"timm grid ({grid} tokens)", vit, float(grid), "grid"),
        counted("retrofit grid", parent, "retrofit-grid", None, images),
    ]
    merged = []  # ToMe after the retrofits, as in the other settings
    for run in speed_runs(dataset):
        if run.tokenizer == "tome":
            final = int(run.options["final_tokens"])
            name = f"ToMe (final {final} tokens)"
            merged.append(counted(name, ToMeModel(vit, final), "tome", final, images))
            continue
        method = run.tokenizer.removeprefix("retrofit-").partition("-")[0]
        options = row_options(run)
        if method == "quadtree":
            detail = f"patches {options['min_patch']}..{options['max_patch']}"
            detail += f", {options.get('scorer', 'pixel_blur')}"
        else:
            detail = f"resolution {dht_options(size, patch, options)['resolution']}"
        if options.get("cell"):
            detail += f", aligned to {options['cell']}-px cells"
        model = retrofitted(run, parent, "random weights").to(device)
        name = f"retrofit {method} (budget {options['budget']}, {detail})"
        kind = speed_kind(run.tokenizer)
        rows.append(counted(name, model, kind, int(options["budget"]), images))
    rows += trained_rows(dataset, trained, images, device) if trained else []
    rows += merged
    dht = next(row for row in rows if row.kind == "retrofit-dht-cells")  # the goals' dHT
    rows.append(Row("dHT partition alone", dht.run.tokenizer, None, "dht-partition"))
    return rows


def trained_rows(dataset: str, work: Path, images: Tensor, device: torch.device) -> list[Row]:
    """The fine-tuned dHT models the report's one-epoch goals read (the protocol it chooses at
    31 tokens and at LIMIT_TOKENS, the first seed), loaded from their best.pt under the
    accuracy benchmark's --work folder: a dHT tokenizer fine-tuned with the ViT keeps more
    regions than an untrained one, so only its own model times its rows."""
    groups = group_rows(read_rows(CSV_PATH))
    kind = RETROFIT_ROWS["dht"]
    rows = []
    for budget in (31, LIMIT_TOKENS):
        group, _ = chosen_fine_tune(groups, "cpu-long", dataset, kind, budget)
        if group is None:
            continue
        run_id = str(timed_run(group))
        path = work / "runs" / "cpu-long" / run_id / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: --trained needs the accuracy benchmark's --work folder of the run "
                f"{run_id} (rerun it: python benchmarks/accuracy_vs_tokens.py --profile "
                f"cpu-long --only '{run_id}$' --work WORK)"
            )
        model = load_model(path, device=device)
        name = f"retrofit dht (budget {budget}, fine-tuned: {run_id.split('/')[1]})"
        rows.append(counted(name, model, speed_kind(group.tokenizer), budget, images, run_id))
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


def measured(rows: Sequence[Row], medians: Sequence[float], batch: int) -> list[SpeedRow]:
    """Each row's ms per image and its ratio to the timm grid (the first row)."""
    reference = medians[0]
    return [
        SpeedRow(
            row.name,
            row.kind,
            row.budget,
            row.tokens,
            round(median / batch, 4),
            None if row.tokens is None else round(reference / median, 4),
            row.run_id,
        )
        for row, median in zip(rows, medians, strict=True)
    ]


def table_lines(rows: Sequence[SpeedRow]) -> list[str]:
    """Markdown lines: tokens, ms per image, images/s and the ratio to the timm grid row (with
    its range over the processes, when several timed the rows)."""
    spread = any(row.round_ratios for row in rows)
    lines = [
        "| model | tokens / image | ms / image | images/s | vs timm grid |"
        + (" range over processes |" if spread else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if spread else ""),
    ]
    reference = rows[0].ms_per_image
    for row in rows:
        if row.ratio is None:  # the partition alone: a share of the timm forward, no logits
            line = (
                f"| {row.row} | | {row.ms_per_image:.2f} | | "
                f"{100 * row.ms_per_image / reference:.0f}% of the timm forward |"
            )
        else:
            line = (
                f"| {row.row} | {row.tokens:.1f} | {row.ms_per_image:.2f} | "
                f"{1000 / row.ms_per_image:.1f} | {row.ratio:.2f}x |"
            )
        if spread:
            ratios = row.round_ratios
            line += f" {min(ratios):.2f}-{max(ratios):.2f}x |" if ratios else " |"
        lines.append(line)
    return lines


def print_table(table: SpeedTable, what: str) -> None:
    """The Markdown of one setting's table, with what it timed and how."""
    weights = "random weights"
    if any(row.run_id for row in table.rows):
        weights += "; the fine-tuned rows their own"
    options = "".join(f", {key}={value}" for key, value in table.options.items())
    timing = f"median of {table.repeats} calls after {table.warmup} warm-up calls, rows in turn"
    if table.rounds > 1:
        timing = f"medians over {table.rounds} processes of each one's {timing}"
    print(
        f"### {table.setting}: {table.model}{options} ({weights}) · batch {table.batch} of "
        f"{what} · {timing}"
    )
    print()
    print(header_line(table.facts))
    print()
    print("\n".join(table_lines(table.rows)))
    print()


def described(setting: Setting) -> str:
    """The images a setting times, in words."""
    if setting.dataset:
        return f"the first {setting.dataset} test images"
    side = (
        setting.options.get("img_size") or timm.create_model(setting.model).patch_embed.img_size[0]
    )
    return f"{side}x{side} photo crops"


def time_setting(name: str, args: argparse.Namespace, device: torch.device) -> SpeedTable:
    """Build a setting's rows and time them in this process."""
    setting = SETTINGS[name]
    batch = args.batch or setting.batch
    torch.manual_seed(0)
    if setting.dataset:
        images = dataset_images(setting.dataset, batch).to(device)
        rows = accuracy_rows(setting, images, device, args.trained)
    else:
        vit = timm.create_model(setting.model, pretrained=False, **setting.options)
        vit = vit.eval().to(device)
        images = photo_crops(batch, int(vit.patch_embed.img_size[0])).to(device)
        rows = build_rows(vit, images)
    medians = time_rows(rows, images, repeats=args.repeats, warmup=args.warmup, device=device)
    return SpeedTable(
        name, setting.dataset, setting.model, dict(setting.options), batch, args.repeats,
        args.warmup, machine_facts(args.device), tuple(measured(rows, medians, batch)),
    )  # fmt: skip


def in_processes(args: argparse.Namespace) -> list[SpeedTable]:
    """Time every setting in `args.rounds` fresh processes, one after another, and combine
    their tables (`combine_rounds`): the ratios of one process hold (rows in turn), but on a
    shared machine they moved 10-15% between processes minutes apart."""
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            path = Path(folder) / f"round{number}.json"
            child = [
                "--setting", *args.setting, "--threads", str(args.threads),
                "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                "--device", args.device, "--rounds", "1", "--json", str(path),
            ]  # fmt: skip
            if args.batch:
                child += ["--batch", str(args.batch)]
            if args.trained:
                child += ["--trained", str(args.trained)]
            script = str(Path(__file__).resolve())
            subprocess.run([sys.executable, script, *child], check=True, stdout=subprocess.DEVNULL)
            rounds.append(read_speeds(path))
    return combine_rounds(rounds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setting", nargs="+", choices=sorted(SETTINGS), default=["vit-s", "small"]
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, help="images per call (default: the setting's)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per row first")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time everything in this many fresh processes, one after another, and give each "
        "row's medians over them (ratios moved 10-15%% between processes on a shared machine)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--trained",
        type=Path,
        help="the accuracy benchmark's --work folder: the dataset settings also time the "
        "fine-tuned dHT models the report's one-epoch goals read, from their best.pt",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the measured rows and the machine's facts there (the accuracy "
        "report's ToMe verdicts read benchmarks/results/inference_speed.json)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.rounds > 1:
        tables = in_processes(args)
    else:
        tables = [time_setting(name, args, device) for name in args.setting]
    for table in tables:
        print_table(table, described(SETTINGS[table.setting]))
    if args.json:
        arguments = sys.argv[1:] if argv is None else list(argv)
        write_speeds(
            args.json, tables, " ".join(["python benchmarks/bench_inference.py", *arguments])
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
