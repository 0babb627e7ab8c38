"""The accuracy benchmark's pictures: score against tokens, validation curves, the cluttered
images' partitions. A picture whose inputs are not here (curves and scorer weights live under
--work, on the machine that ran the rows) is not redrawn: the existing file is kept and listed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .plan import DATASET_SIZES, DATASET_TITLES, PROFILES, plan
from .runs import ROOT, ScorerCNN

__all__ = ["COLOURS", "TOKENIZER_LABELS", "plot_all", "shown"]

COLOURS = {
    "grid": "#444444",
    "quadtree": "#1f77b4",
    "quadtree-cnn": "#17becf",
    "dht": "#d62728",
    "dht-learned": "#ff7f0e",
}
TOKENIZER_LABELS = {
    "grid": "grid of patches",
    "quadtree": "quadtree, pixel-blur scorer",
    "quadtree-cnn": "quadtree, CNN scorer",
    "dht": "dHT, bundled (frozen)",
    "dht-learned": "dHT, learned with the ViT",
}
METRIC_LABELS = {
    "accuracy": "test accuracy (%)",
    "miou": "test mean IoU (%)",
    "boundary_f1": "test boundary F1 (%)",
}


def shown(path: Path) -> str:
    """A figure's path as the report links it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def _kept(path: Path) -> str | None:
    """An existing figure that cannot be redrawn here (its inputs are elsewhere)."""
    return shown(path) if path.is_file() else None


def plot_all(
    groups: dict, docs: Path, work: Path, profiles: list[str], *, curves: dict, captions
) -> list[str]:
    """Every figure of the report (paths as the report links them), each with a caption;
    `curves` as `gather_curves` returns them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    docs.mkdir(parents=True, exist_ok=True)
    base = next((name for name in ("full", "cpu-small") if name in profiles), profiles[0])
    figures = [plot_accuracy(plt, groups, base, docs / "accuracy_vs_tokens.png")]
    if "cpu-long" in profiles and base != "cpu-long":
        figures.append(
            plot_accuracy(plt, groups, "cpu-long", docs / "accuracy_vs_tokens_cpu_long.png")
        )
    # Validation curves (the selection signal; the test split is never plotted).
    pictures = {base: "accuracy_curves.png"}
    if "cpu-long" in profiles and base != "cpu-long":
        pictures["cpu-long"] = "accuracy_curves_cpu_long.png"
    for profile, name in pictures.items():
        if profile in PROFILES:
            runs = [
                run
                for run in plan(PROFILES[profile])
                if run.seed == 0 and run.tokens == CURVE_TOKENS and not run.augment
                and run.tokenizer in TOKENIZER_LABELS
            ]  # fmt: skip
            figures.append(plot_curves(plt, curves.get(profile, {}), runs, docs / name, profile))
    figures.append(cluttered_panel(docs / "cluttered_tokens.png", work, plt))
    return [figure for figure in figures if figure and Path(figure).name in captions]


def plot_accuracy(plt, groups: dict, profile: str, path: Path) -> str | None:
    """Test score against measured tokens per image, one panel per dataset and metric that
    the profile has rows for, one legend below the panels (None without rows)."""
    panels = [
        (dataset, metric)
        for dataset, metric in (
            ("cluttered-fashion-mnist-128", "accuracy"),
            ("fashion-mnist-64", "accuracy"),
            ("shapes", "miou"),
            ("shapes", "boundary_f1"),
        )
        if any(k[0] == profile and k[1] == dataset and k[5] == metric for k in groups)
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    drawn: dict[str, object] = {}
    for ax, (dataset, metric) in zip(axes[0], panels, strict=True):
        for tokenizer, label in TOKENIZER_LABELS.items():
            points = sorted(
                (g.mean_tokens, g.mean, g.std)
                for k, g in groups.items()
                if k[0] == profile and k[1] == dataset and k[2] == tokenizer and k[5] == metric
            )
            if not points:
                continue
            xs, ys, es = zip(*points, strict=True)
            drawn[label] = ax.errorbar(
                xs,
                [100 * y for y in ys],
                yerr=[100 * e for e in es],
                marker="o",
                capsize=3,
                color=COLOURS[tokenizer],
            )
        ax.set_xscale("log", base=2)
        candidates = (16, 24, 32, 48, 64, 96, 128, 192, 256)
        ticks = [t for t in candidates if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("tokens per image (test split, log scale)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(DATASET_TITLES[dataset], fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Test score against tokens per image ({profile}; bars: std over seeds)")
    # One legend for every panel, below them: it never covers a point.
    columns = 5 if len(panels) >= 3 else 2
    fig.legend(list(drawn.values()), list(drawn), loc="lower center", ncol=columns, fontsize=9)
    legend_rows = -(-len(drawn) // columns)
    fig.tight_layout(rect=(0, 0.05 + 0.055 * legend_rows, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return shown(path)


def curves_path(csv_path: Path) -> Path:
    """Where the validation curves of a table's runs are kept: beside the table, so a picture
    of them can be redrawn on any machine (the run folders stay where the rows ran)."""
    return csv_path.with_name(csv_path.stem + "_curves.json")


def gather_curves(work: Path, stored: Path) -> dict[str, dict[str, list]]:
    """{profile: {run id: [[step, validation score], ...]}}: the curves kept in `stored`,
    updated with every non-empty curve.json the runs under `work` left (and written back)."""
    curves = json.loads(stored.read_text()) if stored.is_file() else {}
    for curve_file in sorted((work / "runs").glob("*/*/*/curve.json")):
        run_folder = curve_file.parent
        curve = json.loads(curve_file.read_text())
        if curve:
            profile, run_id = run_folder.parts[-3], "/".join(run_folder.parts[-2:])
            curves.setdefault(profile, {})[run_id] = curve
    if curves:
        lines = ",\n".join(
            f"{json.dumps(profile)}: {{\n"
            + ",\n".join(f"  {json.dumps(r)}: {json.dumps(c)}" for r, c in sorted(runs.items()))
            + "\n}"
            for profile, runs in sorted(curves.items())
        )
        stored.write_text("{\n" + lines + "\n}\n")
    return curves


CURVE_TOKENS = 64  # the curves picture shows the rows at equal tokens (the README's comparison)


def plot_curves(plt, curves: dict, runs: list, path: Path, profile: str) -> str | None:
    """Validation score against steps of `runs` (a profile's seed-0 from-scratch rows at
    CURVE_TOKENS tokens; `curves` that profile's, by run id), one panel per dataset, one legend
    below; the existing figure while a row's curve is missing (a redraw would leave it out)."""
    if not runs or any(run.run_id not in curves for run in runs):
        return _kept(path)
    datasets = [d for d in DATASET_SIZES if any(run.dataset == d for run in runs)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.4 * len(datasets), 4.0), squeeze=False)
    drawn: dict[str, object] = {}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for run in runs:
            if run.dataset != dataset:
                continue
            curve = curves[run.run_id]
            (drawn[TOKENIZER_LABELS[run.tokenizer]],) = ax.plot(
                [c[0] for c in curve],
                [100 * c[1] for c in curve],
                color=COLOURS[run.tokenizer],
                marker=".",
            )
        ax.set_title(DATASET_TITLES[dataset], fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation " + ("mean IoU" if dataset == "shapes" else "accuracy") + " (%)")
        ax.grid(alpha=0.3)
    labels = [label for label in TOKENIZER_LABELS.values() if label in drawn]
    title = f"Validation score during training, {CURVE_TOKENS} tokens per image ({profile}, seed 0)"
    fig.suptitle(title, fontsize=11)
    fig.legend([drawn[label] for label in labels], labels, loc="lower center", ncol=len(labels))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return shown(path)


def learned_dht(work: Path, dataset: str):
    """(profile, the DHTTokenizer of the seed-0 `dht-learned` run at 64 tokens, trained end to
    end with its ViT) from its best checkpoint, the longest profile's first; None without one."""
    from adaptok.partitioners.dht import load_default_tokenizer

    for profile in ("full", "cpu-long", "cpu-small"):
        best = work / "runs" / profile / dataset / "dht-learned-64-s0" / "best.pt"
        if best.is_file():
            state = torch.load(best, map_location="cpu", weights_only=True)["model"]
            prefix = "tokenizer.tokenizer."
            tokenizer = load_default_tokenizer(input_space="imagenet").eval()
            tokenizer.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
            return profile, tokenizer
    return None


def cluttered_panel(path: Path, work: Path, plt) -> str | None:
    """Four cluttered test images with their grid / quadtree / quadtree-cnn / dHT (frozen and
    learned end to end) tokens (64); the existing figure when --work lacks the scorer CNN or
    the learned dHT (a redraw would drop their columns)."""
    from adaptok.partitioners.registry import partition
    from adaptok.train.cluttered import ClutteredFashionMNIST
    from adaptok.train.datasets import normalize
    from adaptok.visualize import draw_boundaries

    weights = work / "scorer" / "cluttered-fashion-mnist-128-cnn.pt"
    learned = learned_dht(work, "cluttered-fashion-mnist-128")
    if not weights.is_file() or learned is None:
        return _kept(path)
    from adaptok.ops import imagenet_mean_std
    from adaptok.partitioners.scorers import FeatureScorer, PrecomputedScorer

    dataset = ClutteredFashionMNIST(split="test", image_size=128)
    raw = torch.stack([dataset.raw(i) for i in range(4)])[:, None].expand(-1, 3, -1, -1)
    images = normalize(raw)  # what the models (and the scorer CNN) see
    mean, std = imagenet_mean_std()  # the CNN sees normalised images, as in training
    scorer = FeatureScorer(ScorerCNN().features, weights=weights, mean=mean, std=std)
    maps = scorer(raw, min_patch=8, max_patch=32)
    quadtree = {"budget": 64, "min_patch": 8, "max_patch": 32}
    profile, tokenizer = learned
    with torch.no_grad():
        learned_partition = tokenizer.partition(images, budget=64)
    columns = [
        ("grid, 64 tokens", partition(raw, "grid", patch_size=16)),
        ("quadtree (pixel blur), 64", partition(raw, "quadtree", **quadtree)),
        (
            "quadtree (CNN scorer), 64",
            partition(raw, "quadtree", **quadtree, scorer=PrecomputedScorer(maps)),
        ),
        ("dHT (bundled, frozen), <=64", partition(raw, "dht", budget=64)),
        (f"dHT (learned, {profile}), <=64", learned_partition),
    ]
    fig, axes = plt.subplots(4, len(columns), figsize=(3 * len(columns), 12))
    for j, (title, part) in enumerate(columns):
        drawn = draw_boundaries(raw, part, color=(1.0, 0.2, 0.2))
        for i in range(4):
            ax = axes[i, j]
            ax.imshow(drawn[i].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
            ax.set_xlabel(f"{int(part.counts[i])} tokens", fontsize=8)
    fig.suptitle("Cluttered Fashion-MNIST test images and their tokens", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return shown(path)
