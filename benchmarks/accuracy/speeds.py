"""The end-to-end throughput the report's ToMe verdicts read: what
`benchmarks/bench_inference.py --json` writes, one table per setting. That script times its rows
in turn within every repeat, so a change in the shared machine's load touches every row alike and
the ratios to the timm grid hold where the accuracy runs' own images/s (one evaluation at a time)
moved 2x between runs of the same model."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from adaptok.cli.benchmarking import MachineFacts

__all__ = [
    "KINDS",
    "SPEEDS_PATH",
    "SpeedRow",
    "SpeedTable",
    "combine_rounds",
    "read_speeds",
    "speed_kind",
    "write_speeds",
]

SPEEDS_PATH = Path(__file__).resolve().parents[2] / "benchmarks/results/inference_speed.json"
# What a row runs: the timm model on its grid, its grid / quadtree / dHT retrofits, ToMe on the
# timm model, and the dHT tokenizer alone (no logits).
KINDS = (
    "grid",
    "retrofit-grid",
    "retrofit-quadtree",
    "retrofit-dht",
    "retrofit-dht-aligned",
    "retrofit-quadtree-pooling",
    "retrofit-dht-cells",
    "tome",
    "dht-partition",
)


def speed_kind(tokenizer: str) -> str:
    """The KINDS entry that times an accuracy row's model ("retrofit-quadtree-kd" runs the
    model of "retrofit-quadtree-pooled": "retrofit-quadtree"; aligned dHT, the pooling
    quadtree and whole-cell dHT their own)."""
    for own in ("retrofit-dht-aligned", "retrofit-quadtree-pooling", "retrofit-dht-cells"):
        if tokenizer.startswith(own):
            return own
    for kind in ("retrofit-quadtree", "retrofit-dht", "tome"):
        if tokenizer.startswith(kind):
            return kind
    raise ValueError(f"no throughput kind for accuracy rows of {tokenizer!r}")


@dataclass(frozen=True)
class SpeedRow:
    """One timed row of a setting.

    Attributes:
        row: the Markdown table's model column.
        kind: one of KINDS.
        budget: the token target: a retrofit's partition budget, ToMe's final count (None for
            the grids and the partition alone).
        tokens: tokens per image the trunk ends with, mean over the batch (None for the
            partition alone).
        ms_per_image: median milliseconds of a call over the batch size.
        ratio: the timm grid row's time over this row's, i.e. this row's images/s as a multiple
            of the timm grid's (None for the partition alone, which gives no logits).
        run_id: the accuracy run whose trained weights the row runs (a fine-tuned dHT
            tokenizer keeps more regions than an untrained one); None: random weights.
        round_ratios: the ratio of every process the rows were timed in (`combine_rounds`;
            `ratio` is their median), or None (one process, or no ratio). A comparison of two
            rows holds in round k when it holds between their k-th ratios: both were timed in
            turn in the same process.
    """

    row: str
    kind: str
    budget: int | None
    tokens: float | None
    ms_per_image: float
    ratio: float | None
    run_id: str | None = None
    round_ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"row kind {self.kind!r} is not one of {KINDS}; add it to KINDS")
        if self.round_ratios is not None:  # JSON gives a list
            object.__setattr__(self, "round_ratios", tuple(self.round_ratios))


@dataclass(frozen=True)
class SpeedTable:
    """One setting's rows, timed in turn in one run.

    Attributes:
        setting: bench_inference's setting name.
        dataset: the accuracy benchmark's dataset whose trunk, test images and rows the setting
            reproduces (None for the other settings).
        model: the timm model name; options: its create_model keyword arguments.
        batch: images per call; repeats, warmup: timed and untimed calls per row.
        facts: where and when it ran (date, processor, threads, load; the first process's).
        rows: the timed rows, the timm grid first.
        rounds: processes the rows were timed in, one after another; each row's time and ratio
            are the medians over them (each ratio against its own process's timm grid).
    """

    setting: str
    dataset: str | None
    model: str
    options: dict[str, object]
    batch: int
    repeats: int
    warmup: int
    facts: MachineFacts
    rows: tuple[SpeedRow, ...]
    rounds: int = 1

    def find(self, kind: str, budget: int | None, run_id: str | None = None) -> SpeedRow | None:
        """The row of a kind at a token target, if it was timed: with random weights, or with
        the weights of the accuracy run `run_id`."""
        return next(
            (r for r in self.rows if r.kind == kind and r.budget == budget and r.run_id == run_id),
            None,
        )


def combine_rounds(rounds: list[list[SpeedTable]]) -> list[SpeedTable]:
    """One table per setting from the tables of several processes (the same settings and rows
    in each): each row's median ms per image and median ratio to its process's timm grid.

    Raises:
        ValueError: the processes timed different rows.
    """
    combined = []
    for tables in zip(*rounds, strict=True):
        rows = []
        for versions in zip(*(table.rows for table in tables), strict=True):
            if len({(row.row, row.run_id) for row in versions}) != 1:
                raise ValueError(f"the rounds timed different rows: {versions}")
            ratios = [ratio for row in versions for ratio in row.round_ratios or (row.ratio,)]
            rows.append(
                dataclasses.replace(
                    versions[0],
                    ms_per_image=round(statistics.median(r.ms_per_image for r in versions), 4),
                    ratio=None if None in ratios else round(statistics.median(ratios), 4),
                    round_ratios=None if None in ratios else tuple(ratios),
                )
            )
        combined.append(
            dataclasses.replace(tables[0], rows=tuple(rows), rounds=sum(t.rounds for t in tables))
        )
    return combined


def write_speeds(path: Path, tables: list[SpeedTable], command: str) -> None:
    """Write the tables (and the command that measured them) as JSON."""
    tables_json = []
    for table in tables:
        fields = {f.name: getattr(table, f.name) for f in dataclasses.fields(table)}
        fields["facts"] = dataclasses.asdict(table.facts)
        fields["rows"] = [dataclasses.asdict(row) for row in table.rows]
        tables_json.append(fields)
    text = json.dumps({"command": command, "tables": tables_json}, indent=1)
    Path(path).write_text(text + "\n")


def read_speeds(path: Path) -> list[SpeedTable]:
    """The tables `write_speeds` wrote ([] when the file does not exist yet).

    Raises:
        ValueError: the file is not what `write_speeds` writes (names the field).
    """
    path = Path(path)
    if not path.is_file():
        return []
    tables = []
    for fields in json.loads(path.read_text())["tables"]:
        try:
            facts = MachineFacts(**fields.pop("facts"))
            rows = tuple(SpeedRow(**row) for row in fields.pop("rows"))
            tables.append(SpeedTable(**fields, facts=facts, rows=rows))
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{path} is not a table of benchmarks/bench_inference.py --json ({error}); "
                "rerun that script with --json to rewrite it"
            ) from error
    return tables
