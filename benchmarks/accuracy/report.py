"""The accuracy benchmark's report: rows grouped over seeds, the goals' verdicts (numbers, tested
in tests/test_benchmark_plan.py), the Markdown table and the README section."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .plan import (
    DATASET_SIZES,
    DATASET_TITLES,
    EMBEDDERS,
    FINETUNE_LR_FACTOR,
    LIMIT_TOKENS,
    LR,
    PROFILES,
    SUBSET_PROFILES,
    WARMUP_FRACTION,
    WEIGHT_DECAY,
    fine_tune_kinds,
    lr_factor_of,
    plan,
    retrofit_parent,
)
from .plots import curves_path, gather_curves, plot_all
from .runs import ROOT, read_rows
from .speeds import SPEEDS_PATH, SpeedRow, SpeedTable, read_speeds, speed_kind

__all__ = [
    "Group",
    "Verdict",
    "chosen_fine_tune",
    "find",
    "group_rows",
    "timed_run",
    "verdicts",
    "write_report",
]


def tokenizer_rank(tokenizer: str) -> tuple[int, str]:
    """Where a tokenizer's rows go in the tables: the plan's order of row kinds, each kind's
    variants ("-aug", "-aug50", "-lr30", ...: `Run.variant_tail`) after its plain rows."""
    kind = re.sub(r"-(aug|lr)\d*.*$", "", tokenizer)
    return list(EMBEDDERS).index(kind), tokenizer  # "grid" < "grid-aug" < "grid-aug50"


CLUTTER, FASHION = "cluttered-fashion-mnist-128", "fashion-mnist-64"


@dataclass
class Group:
    """Rows of one (profile, dataset, tokenizer, token target, steps, metric) over seeds."""

    profile: str
    dataset: str
    tokenizer: str
    budget: str
    steps: int
    metric: str
    values: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    run_ids: list[str] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)  # best validation score per seed
    selection: list[float] = field(default_factory=list)  # score on the selection split per seed

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        n = len(self.values)
        if n < 2:
            return 0.0
        mean = self.mean
        return (sum((v - mean) ** 2 for v in self.values) / (n - 1)) ** 0.5

    @property
    def mean_tokens(self) -> float:
        return sum(self.tokens) / len(self.tokens)

    def cell(self, scale: float = 100.0) -> str:
        if len(self.values) < 2:
            return f"{scale * self.mean:.1f}"
        return f"{scale * self.mean:.1f} ± {scale * self.std:.1f}"


def group_rows(rows: list[dict[str, str]]) -> dict[tuple, Group]:
    groups: dict[tuple, Group] = {}
    for row in rows:
        target = row["run_id"].split("/")[1].rsplit("-s", 1)[0].rsplit("-", 1)[-1]
        key = (
            row["profile"],
            row["dataset"],
            row["tokenizer"],
            target,
            int(row["steps"]),
            row["metric"],
        )
        group = groups.setdefault(key, Group(*key))
        group.values.append(float(row["value"]))
        group.tokens.append(float(row["tokens_per_image"]))
        group.seconds.append(float(row["train_seconds"]))
        group.speed.append(float(row["eval_images_per_second"]))
        group.devices.add(row["device"])
        group.run_ids.append(row["run_id"])
        best_val = float(row.get("best_val") or "nan")
        if best_val == best_val:  # rows without validation (no training) leave it empty
            group.validation.append(best_val)
        selection = float(row.get("selection_score") or "nan")
        if selection == selection:  # only retrofit fine-tunes of profiles with the split
            group.selection.append(selection)
    return groups


def find(
    groups: dict[tuple, Group],
    profile: str,
    dataset: str,
    tokenizer: str,
    target: int,
    metric: str,
    steps: int | None = None,
) -> Group | None:
    for key, group in groups.items():
        if key[:4] == (profile, dataset, tokenizer, str(target)) and key[5] == metric:
            if steps is None or key[4] == steps:
                return group
    return None


@dataclass(frozen=True)
class Verdict:
    """One goal of issue 9, decided on the measured numbers.

    Attributes:
        key: a stable name of the goal (e.g. "cluttered-best-adaptive-64").
        text: what is compared, in words.
        goal: the goal's condition, in words.
        status: "met", "missed", "not decided" (too few seeds to tell) or "not measured".
        gap: the measured difference (a fraction: 0.05 = 5 points); None when not measured.
        shortfall: how far a missed goal is from met (fraction), where it says.
        note: a caveat (e.g. within the seeds' spread).
    """

    key: str
    text: str
    goal: str = ""
    status: str = "not measured"
    gap: float | None = None
    shortfall: float | None = None
    note: str = ""

    def line(self) -> str:
        """The report's Markdown bullet."""
        if self.status == "not measured":
            return f"- {self.text}: not measured yet"
        by = f" by {100 * self.shortfall:.1f} points" if self.shortfall is not None else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"- {self.text}: {100 * self.gap:+.1f} points (goal: {self.goal}): "
            f"**{self.status}**{by}{note}"
        )


def _best(groups: dict[tuple, Group], profile: str, dataset: str, names, target: int):
    found = [
        g for t in names if (g := find(groups, profile, dataset, t, target, "accuracy")) is not None
    ]
    return max(found, key=lambda g: g.mean) if found else None


def _cluttered_best(groups: dict[tuple, Group], profile: str) -> Verdict:
    """+5 points at 64 tokens, beyond twice the seeds' spread, three seeds each."""
    grid = find(groups, profile, CLUTTER, "grid", 64, "accuracy")
    best = _best(groups, profile, CLUTTER, ("quadtree", "quadtree-cnn", "dht", "dht-learned"), 64)
    key = "cluttered-best-adaptive-64"
    if grid is None or best is None:
        return Verdict(key, "Cluttered, best adaptive at 64 tokens vs grid")
    gap = best.mean - grid.mean
    spread = 2 * max(best.std, grid.std)
    seeds = min(len(best.values), len(grid.values))
    text = (
        f"Cluttered, 64 tokens, best adaptive ({best.tokenizer}, {len(best.values)} seeds) vs "
        f"grid ({len(grid.values)} seeds)"
    )
    goal = f">= +5 and > 2 std = {100 * spread:.1f}"
    if seeds < 3 and gap < 0.05:
        return Verdict(key, text, goal, "missed", gap, 0.05 - gap, f"{seeds} seed(s)")
    if seeds < 3:  # the spread of fewer seeds says too little to decide
        return Verdict(
            key, text, goal, "not decided", gap, note=f"{seeds} seed(s), the goal asks for 3"
        )
    if gap >= 0.05 and gap > spread:
        return Verdict(key, text, goal, "met", gap)
    return Verdict(key, text, goal, "missed", gap, max(0.05 - gap, spread - gap))


def verdicts(
    groups: dict[tuple, Group], profile: str, *, speeds: list[SpeedTable]
) -> list[Verdict]:
    """Each goal of issue 9 (and 18) for one profile, decided on its rows (or "not measured");
    the ToMe goals on the throughput of `speeds` (`benchmarks/bench_inference.py --json`)."""
    out = [_cluttered_best(groups, profile)]
    dht = _best(groups, profile, CLUTTER, ("dht", "dht-learned"), 64)
    grid256 = find(groups, profile, CLUTTER, "grid", 256, "accuracy")
    key = "cluttered-dht-64-vs-grid-256"
    if dht and grid256:
        gap = dht.mean - grid256.mean
        text = f"Cluttered, dHT ({dht.tokenizer}) at 64 tokens vs grid at 256"
        out.append(Verdict(key, text, ">= 0", "met" if gap >= 0 else "missed", gap))
    else:
        out.append(Verdict(key, "Cluttered, dHT at 64 tokens vs grid at 256"))
    grid = find(groups, profile, CLUTTER, "grid", 64, "accuracy")
    for name in ("quadtree", "quadtree-cnn"):
        quad = find(groups, profile, CLUTTER, name, 64, "accuracy")
        if grid and quad:
            gap = quad.mean - grid.mean
            spread = 2 * max(quad.std, grid.std)
            note = (
                f"within twice the seeds' spread ({100 * spread:.1f}): no clear win"
                if 0 < gap <= spread
                else ""
            )
            text = (
                f"Cluttered, {name} vs grid at 64 tokens ({len(quad.values)} vs "
                f"{len(grid.values)} seeds)"
            )
            status = "met" if gap > 0 else "missed"
            out.append(Verdict(f"cluttered-{name}-vs-grid-64", text, "> 0", status, gap, note=note))
    grid64 = find(groups, profile, FASHION, "grid", 64, "accuracy")
    names = (
        "quadtree",
        "dht",
        "dht-learned",
        "retrofit-quadtree",
        "retrofit-dht",
        "retrofit-dht-patch",
    )
    half = [
        g
        for t in names
        if (g := find(groups, profile, FASHION, t, 31, "accuracy")) is not None and g.steps != 0
    ]
    key = "fashion-half-tokens"
    if grid64 and half:
        best = max(half, key=lambda g: g.mean)
        gap = best.mean - grid64.mean
        text = (
            f"Fashion-MNIST, best adaptive at ~half the tokens ({best.tokenizer}, "
            f"{best.mean_tokens:.1f} tokens) vs grid at 64"
        )
        out.append(Verdict(key, text, ">= -0.5", "met" if gap >= -0.005 else "missed", gap))
    else:
        out.append(Verdict(key, "Fashion-MNIST, adaptive at half the tokens vs grid"))
    for dataset in (CLUTTER, FASHION):
        parent = find(groups, profile, dataset, "grid", 64, "accuracy")
        for name in ("retrofit-quadtree", "retrofit-dht", "retrofit-dht-patch"):
            tuned = [
                g
                for k, g in groups.items()
                if k[:3] == (profile, dataset, name) and k[4] > 0 and k[5] == "accuracy"
            ]
            if not parent or not tuned:
                continue
            parent_value = next(
                float(v)
                for v, r in zip(parent.values, parent.run_ids, strict=True)
                if r.endswith("-s0")
            )
            for group in sorted(tuned, key=lambda g: int(g.budget)):
                gap = group.mean - parent_value
                text = (
                    f"Retrofit on {DATASET_TITLES[dataset]}: {name} at {group.budget} tokens "
                    f"({group.mean_tokens:.1f} measured), fine-tuned ({group.steps} steps), vs "
                    "its grid parent at 64"
                )
                out.append(
                    Verdict(
                        f"retrofit-{dataset}-{name}-{group.budget}",
                        text,
                        ">= 0",
                        "met" if gap >= 0 else "missed",
                        gap,
                    )
                )
    for tokens in (16, 64):
        g = find(groups, profile, "shapes", "grid", tokens, "boundary_f1")
        d = find(groups, profile, "shapes", "dht", tokens, "boundary_f1")
        text = f"Shapes, boundary F1 at {tokens} tokens, dHT vs grid"
        key = f"shapes-boundary-f1-{tokens}"
        if g and d:
            gap = d.mean - g.mean
            out.append(Verdict(key, text, "> 0", "met" if gap > 0 else "missed", gap))
        else:
            out.append(Verdict(key, text))
    return out + retrofit_verdicts(groups, profile, speeds=speeds)


# The rows of `retrofit`'s defaults that issue 18's goals are judged on: pooled tokens and
# size-aware attention, the quadtree scored by what pooling loses, dHT regions of whole patches
# found at 2 working pixels per patch side.
RETROFIT_ROWS = {"quadtree": "retrofit-quadtree-pooling", "dht": "retrofit-dht-cells"}


def chosen_fine_tune(
    groups: dict[tuple, Group], profile: str, dataset: str, kind: str, budget: int
) -> tuple[Group | None, str]:
    """The fine-tune of a retrofit kind at `budget` tokens that a one-epoch goal reads, and how
    it was chosen and differs from labels at the default rate, in words (" distilled from it,").

    Among the protocols (labels alone, or distilled: "-kd"; at each learning rate the plan
    runs: "-lr3", "-lr30"): the one with the most seeds, then the best mean score on the
    selection split when every candidate has one per seed (held-out images no run trains or
    picks checkpoints on), else on validation; never the test split.
    """
    candidates = [
        g
        for name in fine_tune_kinds(kind)
        for k, g in groups.items()
        if k[:4] == (profile, dataset, name, str(budget)) and k[4] > 0 and k[5] == "accuracy"
    ]
    if not candidates:
        return None, ""
    on_selection = all(len(g.selection) == len(g.values) for g in candidates)

    def rank(group: Group) -> tuple[int, float]:
        signal = group.selection if on_selection else group.validation
        return len(group.values), statistics.fmean(signal or [0.0])

    tuned = max(candidates, key=rank)  # the first of equals, in the table's order
    how = ""
    if on_selection and len(candidates) > 1:
        how += f" chosen at {100 * statistics.fmean(tuned.selection):.1f}% on the selection split,"
    if "-kd" in tuned.tokenizer:
        how += " distilled from it,"
    if (rate := lr_factor_of(tuned.tokenizer)) != FINETUNE_LR_FACTOR:
        how += f" {rate:g} of the peak learning rate,"
    return tuned, how


def one_epoch_verdict(
    key: str, what: str, tuned: Group | None, how: str, parent: Group | None
) -> Verdict:
    """Issue 18's one-epoch goal for one fine-tune: within 0.5 points of its parent, 3 seeds."""
    text = f"{what} after one epoch vs its parent"
    if parent is None or tuned is None:
        return Verdict(key, text)
    gap = tuned.mean - parent.mean
    seeds = len(tuned.values)
    text = (
        f"{what} at {tuned.mean_tokens:.1f} tokens after {tuned.steps} steps (one epoch,{how} "
        f"{seeds} seed(s): {tuned.cell()}%) vs its parent ({100 * parent.mean:.1f}%)"
    )
    if seeds < 3 and gap >= -0.005:
        note = f"{seeds} seed(s), the goal asks for 3"
        return Verdict(key, text, ">= -0.5", "not decided", gap, note=note)
    status = "met" if gap >= -0.005 else "missed"
    shortfall = None if status == "met" else -0.005 - gap
    return Verdict(key, text, ">= -0.5", status, gap, shortfall)


def retrofit_verdicts(
    groups: dict[tuple, Group], profile: str, *, speeds: list[SpeedTable]
) -> list[Verdict]:
    """The goals of issue 18 for one profile: a grid parent trained with augmentation
    ("grid-aug"), retrofitted with the pooled defaults at about half its 64 tokens (no
    fine-tune, one epoch) and at the one-epoch goal's limit of 60% (LIMIT_TOKENS, one epoch);
    beside each, ToMe on the same parent, compared at the throughput `speeds` measured."""
    out = []
    for dataset in (FASHION, CLUTTER):
        title = DATASET_TITLES[dataset]
        tail = retrofit_parent(dataset).augment_tail
        parent = find(groups, profile, dataset, "grid" + tail, 64, "accuracy")
        tomes = [
            g
            for k, g in groups.items()
            if k[:3] == (profile, dataset, "tome") and k[5] == "accuracy"
        ]
        speed = next((t for t in speeds if t.dataset == dataset), None)
        for method, name in RETROFIT_ROWS.items():
            key = f"retrofit18-{dataset}-{method}"
            what = f"{title}: {method} retrofit"
            zero = find(groups, profile, dataset, name, 31, "accuracy", steps=0)
            text = f"{what} at ~half the tokens, no fine-tune, vs its parent"
            if parent and zero:
                gap = zero.mean - 0.9 * parent.mean
                text = (
                    f"{what} at {zero.mean_tokens:.1f} tokens, no fine-tune "
                    f"({100 * zero.mean:.1f}%), vs 90% of its parent ({100 * parent.mean:.1f}%)"
                )
                status = "met" if gap >= 0 else "missed"
                out.append(Verdict(f"{key}-zero-shot", text, ">= 0", status, gap))
            else:
                out.append(Verdict(f"{key}-zero-shot", text))
            tuned, how = chosen_fine_tune(groups, profile, dataset, name, 31)
            out.append(one_epoch_verdict(f"{key}-one-epoch", what, tuned, how, parent))
            limit, limit_how = chosen_fine_tune(groups, profile, dataset, name, LIMIT_TOKENS)
            limit_how = " the protocol the selection split chose at 31 tokens," + limit_how
            out.append(
                one_epoch_verdict(f"{key}-one-epoch-{LIMIT_TOKENS}", what, limit, limit_how, parent)
            )
            for label, suffix, group in (
                ("no fine-tune", "zero-shot", zero),
                ("one epoch", "one-epoch", tuned),
                (f"one epoch at {LIMIT_TOKENS} tokens", f"one-epoch-{LIMIT_TOKENS}", limit),
            ):
                out.append(
                    tome_verdict(f"{key}-vs-tome-{suffix}", what, label, group, tomes, speed)
                )
    return out


def timed_run(group: Group) -> str | None:
    """The run of a fine-tuned group whose trained model bench_inference --trained times (the
    first seed's); None for a group without training."""
    if group.steps == 0:
        return None
    return min(group.run_ids, key=lambda run_id: "-s0-" not in run_id)


TOME_GOAL = ">= 0 at >= ToMe's throughput"
# A retrofit's throughput stands for rows with at most 2% more tokens than the model timed.
TOKEN_TOLERANCE = 1.02


def tome_verdict(
    key: str,
    what: str,
    label: str,
    group: Group | None,
    tomes: list[Group],
    speed: SpeedTable | None,
) -> Verdict:
    """Issue 18's ToMe goal for one retrofit group: at equal end-to-end throughput, at least
    ToMe's accuracy on the same parent. Throughput is `speed`'s (bench_inference's ratios to the
    timm grid, rows timed in turn), never the accuracy runs' own images/s.

    Met when some ToMe row at most as fast as the retrofit is no more accurate (the retrofit
    dominates it, and ToMe merged further to the retrofit's speed only loses more); missed when
    some ToMe row at least as fast is more accurate (that decides first); otherwise not decided,
    with the ToMe count that would decide it. Not measured without the retrofit's accuracy, a
    ToMe row's, or their throughput in `speed`, nor when the retrofit's rows have more tokens
    than the model timed (beyond TOKEN_TOLERANCE: a dHT tokenizer fine-tuned with the ViT
    keeps more regions than the untrained one bench_inference times).

    Args:
        key: the verdict's key.
        what: the retrofit in words ("Fashion-MNIST 64x64: quadtree retrofit"); label: which
            of its rows ("no fine-tune", "one epoch").
        group: the retrofit's accuracy rows.
        tomes: ToMe's accuracy rows on the same parent, one group per final count.
        speed: the setting of bench_inference's JSON that times the dataset's models.
    """
    source = SPEEDS_PATH.relative_to(ROOT)
    text = f"{what} ({label}) vs ToMe on the same parent"
    if group is None or not tomes:
        return Verdict(key, text)
    if speed is None:
        return Verdict(key, f"{text} (no throughput of {group.dataset} in `{source}`)")
    kind = speed_kind(group.tokenizer)  # the row of `speed` that times this retrofit's model
    # A fine-tuned group's own trained model (seed 0) where it was timed, else random weights.
    retrofit = speed.find(kind, int(group.budget), run_id=timed_run(group))
    retrofit = retrofit or speed.find(kind, int(group.budget))
    timed = sorted(  # (accuracy, throughput) of each ToMe count, slowest first
        ((g, row) for g in tomes if (row := speed.find("tome", int(g.budget))) is not None),
        key=lambda pair: pair[1].ratio,
    )
    if retrofit is None or not timed:
        missing = f"{kind} at budget {group.budget}" if retrofit is None else "ToMe"
        return Verdict(key, f"{text} (no {missing} row of `{speed.setting}` in `{source}`)")
    if retrofit.tokens is not None and group.mean_tokens > TOKEN_TOLERANCE * retrofit.tokens:
        # A fine-tuned dHT tokenizer keeps more regions than the untrained one that was timed:
        # the model the accuracy is of runs more tokens than the throughput is of.
        return Verdict(
            key,
            f"{text} (`{source}` timed it at {retrofit.tokens:.1f} tokens per image, "
            f"{'trained' if retrofit.run_id else 'the untrained partition'}; these rows have "
            f"{group.mean_tokens:.1f}: their throughput is not measured)",
        )
    ratio = retrofit.ratio
    beaten = [(g, row) for g, row in timed if row.ratio >= ratio and g.mean > group.mean]
    dominated = [(g, row) for g, row in timed if row.ratio <= ratio and g.mean <= group.mean]
    # The deciding ToMe row nearest the retrofit's throughput (any, when none decides).
    tome, row = min(beaten or dominated or timed, key=lambda pair: abs(pair[1].ratio - ratio))
    load = f", load {speed.facts.load:.1f}" if speed.facts.load is not None else ""
    text = (
        f"{what} ({label}, {group.cell()}%, {ratio:.2f}x the timm grid's images/s) vs ToMe at "
        f"{tome.budget} final tokens ({row.ratio:.2f}x, {100 * tome.mean:.1f}%); throughput "
        f"from `{source}` (`{speed.setting}`, {speed.facts.date}, {speed.facts.machine}{load})"
    )
    gap = group.mean - tome.mean
    if beaten:
        note = rounds_note(retrofit, row, tome.budget, tome_faster=True)
        return Verdict(key, text, TOME_GOAL, "missed", gap, -gap, note=note)
    if dominated:
        note = rounds_note(retrofit, row, tome.budget, tome_faster=False)
        return Verdict(key, text, TOME_GOAL, "met", gap, note=note)
    # Every ToMe row timed is slower and more accurate, or faster and less accurate.
    slower = [g for g, r in timed if r.ratio < ratio]  # more tokens left: more accurate
    faster = [g for g, r in timed if r.ratio > ratio]
    if slower and faster:
        seen = "the ToMe rows as fast are less accurate, the more accurate ones slower"
        where = f"between {faster[0].budget} and {slower[-1].budget} final tokens"
    elif slower:
        seen = "every ToMe row timed is slower and more accurate"
        where = f"fewer than {slower[-1].budget} final tokens"
    else:
        seen = "every ToMe row timed is faster and less accurate"
        where = f"more than {faster[0].budget} final tokens"
    note = f"{seen}: ToMe at {ratio:.2f}x the timm grid ({where}) decides it"
    return Verdict(key, text, TOME_GOAL, "not decided", gap, note=note)


def rounds_note(retrofit: SpeedRow, tome: SpeedRow, final: object, *, tome_faster: bool) -> str:
    """A ToMe verdict's caveat when the throughput comparison it rests on (ToMe's row at least
    as fast as the retrofit's with `tome_faster`, at most as fast without, by median ratio) did
    not hold in every process the rows were timed in (`SpeedRow.round_ratios`); "" when it held
    in all, or without per-process ratios."""
    ours, theirs = retrofit.round_ratios, tome.round_ratios
    if ours is None or theirs is None or len(ours) != len(theirs):
        return ""
    held = sum(t >= r if tome_faster else t <= r for r, t in zip(ours, theirs, strict=True))
    if held == len(ours):
        return ""
    relation = "at least" if tome_faster else "at most"
    return (
        f"ToMe at {final} final tokens was {relation} as fast as the retrofit in {held} of "
        f"{len(ours)} timing processes: the throughput comparison is within the timing noise"
    )


def stated(groups: dict[tuple, Group], profile: str, *, speeds: list[SpeedTable]) -> list[str]:
    """The verdict lines a profile's report gives (a subset profile: only the measured ones)."""
    chosen = verdicts(groups, profile, speeds=speeds)
    if profile in SUBSET_PROFILES:
        chosen = [v for v in chosen if v.status != "not measured"]
    return [v.line() for v in chosen]


NOTES = [
    "How to read the `cpu-small` rows: they are a reduced setting sized for a shared 2-core "
    "CPU machine, not converged accuracies. 400 steps of batch 64 are about 3 epochs of an "
    "8,000-image training subset; the validation curves in `docs/accuracy_curves.png` are "
    "still rising at the end for most rows (the best validation step is the last or next to "
    "last in the CSV's `best_step` column), so the differences between rows mostly measure how "
    "fast each token layout learns, and one seed differs from another by a few points (see the "
    "three-seed rows). The `cpu-long` rows (four times the steps) are the nearer to converged. "
    "The `full` profile (`--profile full --device cuda`) is the table the issue asks for; rows "
    "it has not produced are marked `not measured yet` below.",
    "",
    "Rows missing from the `cpu-small` table ran out of CPU time (each run is resumable; "
    "rerunning the command continues them): compare the table with "
    "`python benchmarks/accuracy_vs_tokens.py --list`.",
    "",
    "Training loop and validation split: the rows finished up to 2026-11-29 ran the benchmark's "
    "own loop (the same optimiser and schedule) with the last `val_images` images of the "
    "training split as validation. Rows run since train with the library's `adaptok.train.fit` "
    "and hold validation out with its one rule (`adaptok.train.holdout`: a draw seeded with 0 "
    "from the first train + validation images; fit's data order, seeded by the run's seed). "
    'Two rows rerun that way are compared with the table under "Rerun through the library".',
    "",
    "Issue 18's rows compare each retrofit with its own augmented grid parent. The parents "
    "(`grid-aug75`) train with random-resized crops of 75-100% of the area and flips: the range"
    " chosen on the validation split among the Fashion-MNIST parents `grid-aug` (25%, the first"
    " parents, 74.6% validation), `grid-aug50` (76.3%) and `grid-aug75` (79.5%); the retrofit "
    "rows of the 25% parents were replaced by reruns from the 75% ones (git history keeps "
    "them). `retrofit-*-pooled`: retrofit's pooled tokens and size-aware attention, fine-tuned "
    "on labels (`-lr3` / `-lr30` / `-lr100`: at 0.03 / 0.3 / 1.0 of the peak learning rate "
    "instead of 0.1, Fashion-MNIST only); `retrofit-*-kd`: the same fine-tune distilled from "
    "the parent (`TrainConfig.distill` 0.5, temperature 2); `tome`: the parent merging tokens, "
    "no training; `retrofit-dht-aligned`: the pooled dHT retrofit with its regions made of "
    "whole patches (`cell` = P; benchmarks/results/align_probe.md), found at 8 working pixels "
    "per patch side, fine-tuned on labels. The unaligned `retrofit-dht-pooled` / `-kd` rows "
    "used the same 8 working pixels, and at P 16 most cluttered images fell back to full size. "
    "`retrofit-quadtree-pooling` and `retrofit-dht-cells`: retrofit's pooled defaults since "
    "2026-12-06, chosen on held-out images (benchmarks/results/align_probe.md): the quadtree "
    "scored by what pooling loses (`scorer='pooling'`; the earlier quadtree rows score by "
    "pixel blur), dHT regions of whole patches found at 2 working pixels per patch side "
    "with min_width off; fine-tuned on labels and distilled, at every one of those learning "
    "rates on both datasets (three seeds each). The one-epoch goals take the protocol with the "
    "best mean score on the selection split: the 10,000 training images after the first 9,000 "
    "(`Profile.selection_images`; no run trains or picks a checkpoint on them), chosen over "
    "the 1,000 validation images on 2026-12-06 after "
    "they had picked distilled protocols a point below the label rows on test (validation "
    "also picked the parents' checkpoints, and scores every protocol 0.7-3.1 points above "
    "test, where the selection split's score minus test runs -1.2..+1.3, +0.2 on average over "
    "the 108 fine-tunes). The rows at 37 tokens (the one-epoch goal's limit, 60% of 64) are "
    "fine-tuned with the protocol the selection split chose at 31 (`LIMIT_PROTOCOLS`). The "
    "issue-18 goals read these two kinds; the earlier rows stay as measured.",
    "",
    "Throughput in the ToMe goals: the table's eval images/s are each run's final test "
    "evaluation on the shared machine and moved 2x between runs of the same kind of model "
    "(207 and 443 images/s for two quadtree retrofits), so the ToMe verdicts read throughput "
    "from `benchmarks/results/inference_speed.json` instead, written by `python "
    "benchmarks/bench_inference.py --setting fashion-mnist-64 cluttered-fashion-mnist-128 "
    "--repeats 9 --rounds 5 --trained WORK --json benchmarks/results/inference_speed.json`: "
    "the same models (each dataset's grid parent and the plan's retrofit and ToMe rows, random "
    "weights, and the fine-tuned dHT models the one-epoch goals read, from their best.pt under "
    "the benchmark's WORK folder) on the dataset's first 64 test images, batch 64, 1 thread, "
    "every row timed in turn, as images/s relative to the parent exported to timm, medians "
    "over 5 processes run one after another (single runs minutes apart moved 10-15%). A "
    "retrofit meets the goal when a ToMe row at most as fast is no more accurate (ToMe merged "
    "further, down to the retrofit's speed, only loses more), misses it when a ToMe row at "
    "least as fast is more accurate, and is not decided otherwise (the verdict names the ToMe "
    "count that would decide it); without that file's rows of the dataset, or when the rows "
    "have more than 2% more tokens than the model timed, the goal is not measured. Ratios move "
    "with the machine and between processes: a verdict says when its deciding comparison (ToMe "
    "at most, or at least, as fast) did not hold in every one of the 5 processes.",
    "",
    "The fine-tuned dHT models timed in that file since 2026-12-06 07:17 UTC are stand-ins: the "
    "machine that held the table's checkpoints was lost, so the same fine-tunes (seed 0, the "
    "chosen protocol, at 31 and 37 tokens) were rerun from parents retrained with the same "
    "recipe. Training is not bit-reproducible across those machines (the retrained parents "
    "score 78.1 / 39.8% on test against the table's 78.5 / 41.1%), but throughput depends on "
    "the architecture and the tokens per image, and the stand-ins keep 31.0 / 36.8 / 30.9 / "
    "36.7 tokens per image on the test split against the table's rows' 31.0 / 36.9 / 31.0 / "
    "36.7. Those retrained parents carry the whole of issue 18's goals a second time (their "
    "own ToMe rows, retrofits and three-seed fine-tunes, timed in the same file): "
    "`benchmarks/results/retrofit_replication.md`. "
    "That file was measured on an Intel Xeon machine (since 2026-12-06 08:43 UTC with the "
    "pooled dHT retrofit injecting its region means on the tokens), the earlier ones on an AMD "
    "EPYC: its ratios are lower for every adaptive row (the dHT partition alone took 25-28% of "
    "the timm forward there, 19-23% on the AMD machine).",
]

CAPTIONS = {
    "accuracy_vs_tokens.png": "Test score against the tokens per image measured on the test "
    "split, one line per tokenizer, error bars one standard deviation over seeds (three seeds "
    "at 64 tokens); the shapes panels give mIoU and boundary F1.",
    "accuracy_vs_tokens_cpu_long.png": "Test accuracy against tokens per image after 1,600 "
    "steps (`cpu-long`, the rows that decide a goal), error bars one standard deviation over "
    "three seeds: on cluttered Fashion-MNIST the learned dHT is ten points above the grid at "
    "the same token count and above the grid with four times the tokens; on plain "
    "Fashion-MNIST, half the tokens cost about 1.5 points.",
    "accuracy_curves.png": "Validation score during training of the seed-0 rows at 64 tokens "
    "(the signal that picks the reported checkpoint; the test split is never looked at before "
    "the end): where a curve still rises at the last step the row is not converged. The "
    "curves of every run are kept in `benchmarks/results/accuracy_vs_tokens_curves.json`.",
    "accuracy_curves_cpu_long.png": "The same curves for the `cpu-long` rows (four times the "
    "steps of `cpu-small`).",
    "cluttered_tokens.png": "Four cluttered test images with their 64-token partitions: the grid "
    "spends its tokens evenly, the pixel-blur quadtree splits on every sharp edge (clutter "
    "included), the CNN-scored quadtree on what its classifier features react to, the bundled "
    "dHT follows object outlines and keeps the flat background one region; trained end to end "
    "with the ViT (last column, seed 0 of the learned row of the profile its title names), dHT "
    "spends nearly every token on the objects, in nested rings from each outline inwards, and "
    "the background stays one region.",
}


def converged_profile(profiles: list[str]) -> str:
    """The profile the README leads with: the longest training there is."""
    return next((p for p in ("full", "cpu-long", "cpu-small") if p in profiles), profiles[0])


def primary_profile(profiles: list[str]) -> str:
    """The profile with every row (the full table's plot): full, else cpu-small, else any."""
    return next((name for name in ("full", "cpu-small") if name in profiles), profiles[0])


def _profile_line(name: str) -> str:
    p = PROFILES[name]
    train = f"the first {p.train_images}" if p.train_images else "all but the validation images"
    test = f"the first {p.test_images}" if p.test_images else "all"
    seeds = "3 seeds everywhere." if p.seeds_everywhere else "3 seeds at 64 tokens, 1 elsewhere."
    command = f"nice -n 10 python benchmarks/accuracy_vs_tokens.py --profile {name}"
    how = (
        f"`{command} --device cuda`"
        if name == "full"
        else f"`{command}` (run twice for two workers)"
    )
    return (
        f"- `{name}`: {p.steps} steps x batch {p.batch_size}; training images: {train} of the "
        f"training split (shapes: {p.shapes_train} generated); validation: {p.val_images} "
        f"held out of the training split (see the validation note below); test: {test} of the "
        f"test split (shapes: {p.shapes_test}); validation every {p.eval_every} steps; {seeds} "
        f"Command: {how}"
    )


def _dataset_table(groups: dict[tuple, Group], profile: str, dataset: str) -> list[str]:
    keys = [k for k in groups if k[0] == profile and k[1] == dataset]
    if not keys:
        return []
    metrics = sorted({k[5] for k in keys}, key=["accuracy", "miou", "boundary_f1"].index)
    lines = [f"## {DATASET_TITLES[dataset]} (`{profile}`)", ""]
    header = "| tokenizer | steps | tokens/image (test) | seeds | " + " | ".join(
        f"{m} (%)" for m in metrics
    )
    lines += [
        header + " | train s | eval img/s | device |",
        "|---|---:|---:|---:|" + "---:|" * len(metrics) + "---:|---:|---|",
    ]
    first = sorted({k[:5] for k in keys}, key=lambda k: (tokenizer_rank(k[2]), int(k[3]), k[4]))
    for k in first:
        cells = []
        main = None
        for metric in metrics:
            g = groups.get((*k, metric))
            cells.append(g.cell() if g else "")
            main = main or g
        steps = "0 (no fine-tune)" if k[4] == 0 else str(k[4])
        lines.append(
            f"| {k[2]} | {steps} | {main.mean_tokens:.1f} | {len(main.values)} | "
            + " | ".join(cells)
            + f" | {sum(main.seconds) / len(main.seconds):.0f} | "
            f"{sum(main.speed) / len(main.speed):.0f} | {'; '.join(sorted(main.devices))} |"
        )
    return [*lines, ""]


def write_report(csv_path: Path, md_path: Path, docs: Path, work: Path) -> None:
    """The Markdown summary (mean ± std over seeds) and the plots, from the CSV alone (plus the
    training curves and partitions the runs left under --work)."""
    rows = read_rows(csv_path)
    if not rows:
        print(f"no rows in {csv_path} yet")
        return
    groups = group_rows(rows)
    speeds = read_speeds(SPEEDS_PATH)
    profiles = sorted({r["profile"] for r in rows})
    lines = [
        "# Accuracy against tokens per image: grid vs quadtree vs dHT (issue 9)",
        "",
        "Written by `benchmarks/accuracy_vs_tokens.py` from "
        "`benchmarks/results/accuracy_vs_tokens.csv` (one row per finished run; recompute "
        "anything here from it). Numbers are percentages on the **test** split, mean ± sample "
        "std over seeds where there are several; the checkpoint scored is the one with the best "
        "accuracy (mIoU for shapes) on a validation split held out of the training split, so "
        "nothing is tuned on the test split.",
        "",
        "Setup, the same for every row: ViT trunk width 128, depth 4, 4 heads, MLP x4, cls token "
        "(timm `vit_tiny` layout, `pretrained=False`), turned into an `AdaptiveViT` by "
        "`adaptok.retrofit(vit, method, position='learned')` (the learned position table is "
        "sampled at token centres; the patch embedder for grid and quadtree rows, the dHT "
        "embedder for dHT rows, no size-aware attention); AdamW "
        f"lr {LR}, weight decay {WEIGHT_DECAY}, grad clip 1, {int(100 * WARMUP_FRACTION)}% "
        "warm-up then cosine; no augmentation. The token side P is the ViT's patch: grid "
        "P = S/sqrt(N); quadtree min patch P, max patch 4P (P = S/8 for 16 and 31 tokens, S/16 "
        "for 64); dHT P = S/8 (the grid-64 model's patch). `dht` = the bundled pretrained dHT "
        "tokenizer, frozen (partitions cached per image in training, computed live for the test "
        "score); `dht-learned` = the same tokenizer trained end to end with the ViT; "
        "`quadtree-cnn` = quadtree whose scorer is a small CNN trained on the training split "
        "(through `fit` too), frozen, used through `FeatureScorer` with its local weights file. "
        "Retrofit rows start from the grid-64 row's best.pt (`adaptok.train.init_from_model`, "
        "the path of `adaptok train --init-from`). Train time = optimiser steps only (including "
        "live tokenization, excluding validation); eval images/s = test-split forward passes "
        "including tokenization, batch 64.",
        "",
        "Profiles:",
    ]
    lines += [_profile_line(name) for name in profiles if name in PROFILES]
    commits: dict[str, set[str]] = {}
    for row in rows:
        commits.setdefault(row["library_commit"], set()).add(row["tokenizer"])
    lines.append(
        "- library version of each row (`library_commit` column; the rows ran against a pinned "
        "snapshot of that commit while the library was being edited): "
        + "; ".join(f"`{c}`: {', '.join(sorted(t))}" for c, t in sorted(commits.items()))
    )
    lines += ["", *NOTES, ""]
    for name in profiles:
        if name not in PROFILES:
            continue
        done = {r["run_id"] for r in rows if r["profile"] == name}
        missing = [run.run_id for run in plan(PROFILES[name]) if run.run_id not in done]
        if name in SUBSET_PROFILES:
            lines += [
                f"`{name}` runs only the rows asked for with --only: {SUBSET_PROFILES[name]}",
                "",
            ]
        elif missing:
            lines += [
                f"Runs of `{name}` not finished yet: " + ", ".join(f"`{m}`" for m in missing),
                "",
            ]
    for profile in profiles:
        for dataset in DATASET_SIZES:
            lines += _dataset_table(groups, profile, dataset)
        said = stated(groups, profile, speeds=speeds)
        if said:
            lines += [f"## Goals of issue 9 (`{profile}`)", "", *said, ""]
    curves = gather_curves(work, curves_path(csv_path))
    figures = plot_all(groups, docs, work, profiles, curves=curves, captions=CAPTIONS)
    lines += ["## Figures", ""]
    for figure in figures:
        lines += [
            f"![{Path(figure).stem}]({_from(md_path, figure)})",
            "",
            CAPTIONS[Path(figure).name],
            "",
        ]
    lines += rerun_section(groups, read_rows(rerun_path(csv_path)))
    section = readme_section(groups, profiles, figures, speeds=speeds)
    lines += section
    md_path.write_text("\n".join(lines) + "\n")
    if md_path.resolve() == (ROOT / "benchmarks/results/accuracy_vs_tokens.md").resolve():
        update_readme(ROOT / "README.md", section[1:])
    print(f"wrote {md_path}" + "".join(f", {f}" for f in figures))


def _from(md_path: Path, figure: str) -> str:
    """A figure's link from the report's folder (figures are given relative to the repository)."""
    target = (ROOT / figure).resolve()
    base = md_path.resolve().parent
    try:
        return str(target.relative_to(base))
    except ValueError:
        import os

        return os.path.relpath(target, base)


def readme_section(
    groups: dict[tuple, Group],
    profiles: list[str],
    figures: list[str],
    *,
    speeds: list[SpeedTable],
) -> list[str]:
    """What the README shows (pasted after its marker): the converged profile's rows beside the
    short profile's, its goals, one picture; every row stays in this report."""
    converged = converged_profile(profiles)
    base = primary_profile(profiles)
    out = ["## README section", ""]
    if converged != base:
        out += longer_training_section(groups, converged, base)
    else:
        out += [f"Profile `{converged}`:", ""]
    suffix = "" if converged == base else "_" + converged.replace("-", "_")
    picture = f"accuracy_vs_tokens{suffix}.png"
    for figure in [f for f in figures if Path(f).name == picture]:
        out += [f"![{Path(figure).stem}]({figure})", "", CAPTIONS[picture], ""]
    goals = stated(groups, converged, speeds=speeds)
    out += [f"Goals of issue 9 on the `{converged}` rows:", "", *goals, ""]
    out += [
        "Every row (the 400-step `cpu-small` profile of every tokenizer and token count, the "
        "shapes segmentation set, the retrofits), the training curves, the partitions and the "
        "goals per profile: `benchmarks/results/accuracy_vs_tokens.md`. Issue 18's goals again "
        "on a second pair of parents (the same recipe retrained, the retrofits and ToMe rerun "
        "from them): `benchmarks/results/retrofit_replication.md`.",
        "",
    ]
    return out


def longer_training_section(groups: dict[tuple, Group], extra: str, base: str) -> list[str]:
    """The rows of a longer profile beside the same rows of the base profile."""
    factor = PROFILES[extra].steps / PROFILES[base].steps
    out = [
        f"**Trained {factor:g} times longer** (profile `{extra}`: {PROFILES[extra].steps} steps "
        "of batch 64, the same data, validation and test splits; the rows that decide a goal), "
        f"beside the same rows of `{base}`, test accuracy (%) of the best-validation "
        "checkpoint:",
        "",
        f"| dataset | tokenizer | tokens/image | seeds | `{extra}` (%) | `{base}` (%) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, g in sorted(
        groups.items(), key=lambda kv: (kv[0][1], tokenizer_rank(kv[0][2]), int(kv[0][3]))
    ):
        if key[0] != extra or key[2].startswith("retrofit") or key[5] != "accuracy":
            continue
        short = groups.get((base, *key[1:4], PROFILES[base].steps, key[5]))
        out.append(
            f"| {key[1]} | {key[2]} | {g.mean_tokens:.0f} | {len(g.values)} | {g.cell()} | "
            f"{short.cell() if short else ''} |"
        )
    return [*out, ""]


def rerun_path(csv_path: Path) -> Path:
    """The CSV of rows rerun through the library, beside the table (same columns)."""
    return csv_path.with_name(csv_path.stem + "_library_rerun.csv")


def rerun_section(groups: dict[tuple, Group], reruns: list[dict[str, str]]) -> list[str]:
    """Rows of the table rerun through `adaptok.train.fit` (seeded validation draw, the
    library's data order) beside the table's values, and the seed-to-seed spread of the table's
    three-seed rows of the same profile and dataset, the noise a difference is measured
    against."""
    if not reruns:
        return []
    out = [
        "## Rerun through the library",
        "",
        "Rows of the table rerun with `adaptok.train.fit` and the library's validation rule "
        "(`benchmarks/results/accuracy_vs_tokens_library_rerun.csv`, written with `--csv`; 1 "
        "thread, `nice -n 10`, on the busy 2-core machine), beside the table's value (the "
        "benchmark's own loop, the tail validation split). Seed spread: the sample std of the "
        "table's three-seed rows of that profile and dataset, smallest to largest; the difference "
        "of two single-seed runs varies by about sqrt(2) times that, so a difference inside "
        "twice the largest spread is seed noise. (The split, the data order and the loop all "
        "changed, so no row can repeat bit for bit.)",
        "",
        "| run | profile | metric | table (%) | through fit (%) | difference | seed spread |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in reruns:
        key = (row["profile"], row["run_id"], row["metric"])
        table = [
            g
            for k, g in groups.items()
            if k[0] == key[0] and k[5] == key[2] and key[1] in g.run_ids
        ]
        if not table:
            continue
        before = table[0].values[table[0].run_ids.index(key[1])]
        spreads = sorted(
            g.std
            for k, g in groups.items()
            if k[:2] == (row["profile"], row["dataset"]) and k[5] == key[2] and len(g.values) >= 3
        )
        spread = (
            f"{100 * spreads[0]:.1f}-{100 * spreads[-1]:.1f}" if spreads else "no three-seed rows"
        )
        after = float(row["value"])
        out.append(
            f"| `{key[1]}` | `{key[0]}` | {key[2]} | {100 * before:.1f} | {100 * after:.1f} | "
            f"{100 * (after - before):+.1f} | {spread} |"
        )
    return [*out, ""]


README_MARKER = "<!-- The rest of this section is the README section of benchmarks/results/"


def update_readme(readme: Path, section: list[str]) -> None:
    """Replace what follows the README's marker line, up to its next "## " heading, with the
    report's README section."""
    text = readme.read_text()
    start = text.index(README_MARKER)
    start = text.index("\n", start) + 1
    end = text.index("\n## ", start)
    readme.write_text(text[:start] + "\n" + "\n".join(section).strip() + "\n" + text[end:])
