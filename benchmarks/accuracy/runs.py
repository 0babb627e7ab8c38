"""Running the accuracy benchmark's rows through the library: data, models, `fit`, the CSV.

Every row trains with `adaptok.train.fit` (the library's one loop: AdamW, warm-up + cosine, grad
clip 1, best-validation checkpoint, exact resume from last.pt) and is scored with
`adaptok.train.evaluate`; the scorer CNN of the `quadtree-cnn` rows trains through `fit` too.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .plan import (
    ALIGNED_AT_PATCH_PIXELS,
    DATASET_SIZES,
    DISTILL,
    EMBEDDERS,
    FULL_SIZE_DHT,
    LR,
    PIXEL_BLUR_QUADTREE,
    PROFILES,
    TRUNK,
    UNALIGNED_DHT,
    WARMUP_FRACTION,
    WEIGHT_DECAY,
    Profile,
    Run,
    patch_pixels_options,
    plan,
    trunk_options,
)

ROOT = Path(__file__).resolve().parents[2]
CSV_PATH = ROOT / "benchmarks/results/accuracy_vs_tokens.csv"
FIELDS = [
    "dataset",
    "tokenizer",
    "tokens_per_image",
    "seed",
    "steps",
    "metric",
    "value",
    "train_seconds",
    "eval_images_per_second",
    "device",
    "profile",
    "budget",
    "token_side",
    "best_step",
    "best_val",
    "selection_score",
    "train_images",
    "val_images",
    "test_images",
    "partition_seconds",
    "parent",
    "library_commit",
    "run_id",
    "finished_utc",
]
SPLIT_SEED = 0  # the validation draw is the dataset's, the same for every run and seed

Log = Callable[[str], None]

# -------------------------------------------------------------------------------------- data


# Splits a worker process has loaded, by cache file: a worker runs many rows of one dataset,
# and loading the cluttered splits (2 GB) for each of them grew a worker past the machine's
# memory on 2026-12-06.
_LOADED: dict[Path, Dataset] = {}


def _materialise(dataset: Dataset, count: int, cache: Path, *, start: int = 0) -> Dataset:
    """`count` samples of a dataset from `start` on, in memory (`TensorImages`, float16), cached
    on disk under --work and kept in memory for the process's later rows."""
    from adaptok.train import TensorImages

    if cache in _LOADED:
        return _LOADED[cache]
    info = dataset.info  # type: ignore[attr-defined]
    if cache.is_file():
        state = torch.load(cache, weights_only=True)
        data = TensorImages(state["images"], state["targets"], info)
    else:
        data = TensorImages.from_dataset(dataset, range(start, start + count))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": data.images, "targets": data.targets}, tmp)
        os.replace(tmp, cache)
    _LOADED[cache] = data
    return data


def fashion_split(name: str, split: str) -> Dataset:
    """A split ("train" or "test") of a Fashion-MNIST dataset of the table, plain or cluttered,
    at the table's size, 3 channels, ImageNet-normalised (what the rows' models read)."""
    from adaptok.train import FashionMNIST
    from adaptok.train.cluttered import ClutteredFashionMNIST

    make = ClutteredFashionMNIST if name.startswith("cluttered") else FashionMNIST
    return make(split=split, image_size=DATASET_SIZES[name], in_chans=3)


def load_splits(
    name: str, profile: Profile, work: Path, *, selection: bool = False
) -> dict[str, Dataset]:
    """{"train", "val", "test"} of a dataset. Validation is the library's one rule
    (`adaptok.train.holdout`, a seeded draw) applied to the first train_images + val_images
    images of the training split. With `selection`, also "selection": the profile's
    selection_images images of the training split right after those."""
    from adaptok.train import ShapesDataset, holdout

    size = DATASET_SIZES[name]
    folder = work / "data" / profile.name
    if name == "shapes":
        pool_source: Dataset = ShapesDataset(
            profile.shapes_train + profile.val_images, image_size=size, seed=0
        )
        test_source: Dataset = ShapesDataset(profile.shapes_test, image_size=size, seed=1)
        pool_count, test_count = len(pool_source), len(test_source)
    else:
        pool_source = fashion_split(name, "train")
        test_source = fashion_split(name, "test")
        wanted = (profile.train_images or len(pool_source)) + profile.val_images
        pool_count = min(wanted, len(pool_source))
        test_count = min(profile.test_images or len(test_source), len(test_source))
    pool = _materialise(pool_source, pool_count, folder / f"{name}-pool.pt")
    train, val = holdout(pool, profile.val_images, seed=SPLIT_SEED)
    test = _materialise(test_source, test_count, folder / f"{name}-test.pt")
    splits = {"train": train, "val": val, "test": test}
    if selection:
        count = profile.selection_images
        if name == "shapes" or not count or pool_count + count > len(pool_source):
            raise ValueError(
                f"profile {profile.name} has no selection split of {name}: it needs "
                f"selection_images > 0 and {pool_count} + {count} training images"
            )
        cache = folder / f"{name}-selection.pt"
        splits["selection"] = _materialise(pool_source, count, cache, start=pool_count)
    return splits


# ------------------------------------------------------------------------------------- models


def make_vit(size: int, patch: int, num_classes: int, seed: int) -> nn.Module:
    """The one ViT trunk of every row, freshly initialised from `seed`."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(TRUNK, pretrained=False, **trunk_options(size, patch, num_classes))


class CachedPartitions(nn.Module):
    """A frozen partitioner whose partitions are cached per image (by the image's bytes).

    Frozen tokenizers give the same partition to the same image at every epoch, so on the CPU
    they are computed once. `enabled=False` computes them live (the final test evaluation, so the
    reported throughput includes tokenization).
    """

    def __init__(self, tokenizer: nn.Module) -> None:
        super().__init__()
        self.inner = tokenizer
        self.cache: dict[bytes, Tensor] = {}
        self.enabled = True
        self.seconds = 0.0

    @staticmethod
    def key(image: Tensor) -> bytes:
        return hashlib.blake2b(image.detach().cpu().numpy().tobytes(), digest_size=16).digest()

    def forward(self, images: Tensor):
        from adaptok.models import TokenizerOutput
        from adaptok.regions import Partition

        if not self.enabled:
            return self.inner(images)
        keys = [self.key(image) for image in images]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            tick = time.perf_counter()
            labels = self.inner(images[missing]).partition.labels
            self.seconds += time.perf_counter() - tick
            for i, label in zip(missing, labels, strict=True):
                self.cache[keys[i]] = label.to(torch.int16).cpu()
        labels = torch.stack([self.cache[k] for k in keys]).to(images.device).long()
        return TokenizerOutput(partition=Partition.from_labels(labels), pixels=images)


class ScorerCNN(nn.Module):
    """A small CNN (stride 8) whose feature map scores quadtree patches; trained as a classifier
    on the training split (global average pool + linear), then frozen."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(F.gelu(self.features(images)).mean((2, 3)))


def fit_config(
    run: Run,
    profile: Profile,
    data: dict[str, Dataset],
    folder: Path,
    device: str,
    *,
    steps: int,
    lr: float,
    eval_every: int,
):
    """The TrainConfig of every fit of the table: only steps, lr and validation cadence differ
    (from-scratch rows, retrofit fine-tunes, the scorer CNN)."""
    from adaptok.train import TrainConfig

    return TrainConfig(
        dataset=run.dataset,  # recorded in the checkpoints: fit reads the datasets it is given
        train_limit=len(data["train"]),
        val_images=len(data["val"]),
        eval_limit=len(data["test"]),
        output=str(folder),
        steps=steps,
        batch_size=profile.batch_size,
        lr=lr,
        weight_decay=WEIGHT_DECAY,
        warmup_steps=max(1, round(WARMUP_FRACTION * steps)),
        grad_clip=1.0,
        seed=run.seed,
        amp="auto",
        augment=run.augment,
        min_crop=run.min_crop,
        distill=DISTILL if run.distilled else 0.0,
        log_every=10,
        checkpoint_every=eval_every,
        eval_every=eval_every,
        eval_batch_size=128,
        device=device,
        progress=False,
    )


def train_scorer(
    run: Run, data: dict[str, Dataset], path: Path, profile: Profile, device: str
) -> None:
    """Train the scorer CNN on the training split through `fit` (a ViT row's steps, batch and
    schedule; best validation accuracy), then write its feature weights for FeatureScorer."""
    from adaptok.train import fit

    torch.manual_seed(0)
    scorer_run = dataclasses.replace(run, seed=0, augment=False)
    folder = path.with_suffix("")  # the scorer's own run folder, beside its weights file
    config = fit_config(
        scorer_run, profile, data, folder, device,
        steps=profile.steps, lr=LR, eval_every=profile.eval_every,
    )  # fmt: skip
    result = fit(ScorerCNN(), data["train"], data["val"], config, resume=True)
    torch.save(result.model.features.state_dict(), path)  # the local file FeatureScorer loads


def row_options(run: Run) -> dict:
    """The partitioner options a row's model is built with: the plan's, a full-size hierarchy
    for the dHT rows measured with one (FULL_SIZE_DHT), no alignment to patches for the
    pooled dHT rows measured before it (UNALIGNED_DHT), 8 working pixels per patch side and
    the tokenizer's own min_width for the first aligned rows (ALIGNED_AT_PATCH_PIXELS), and
    the pixel-blur scorer for the pooled quadtree rows measured before the pooling scorer
    (PIXEL_BLUR_QUADTREE)."""
    pinned: dict[str, object] = {"resolution": 1.0} if run.tokenizer in FULL_SIZE_DHT else {}
    if run.tokenizer in UNALIGNED_DHT:
        pinned["cell"] = None
    if run.tokenizer in ALIGNED_AT_PATCH_PIXELS:
        pinned.update(patch_pixels_options(run.patch))
    if run.tokenizer in PIXEL_BLUR_QUADTREE:
        pinned["scorer"] = "pixel_blur"
    return {**pinned, **run.options}


def build(run: Run, num_classes: int, task: str, work: Path, device: str) -> nn.Module:
    """The AdaptiveViT of a from-scratch row."""
    from adaptok.models import PartitionTokenizer, retrofit

    size = DATASET_SIZES[run.dataset]
    vit = make_vit(size, run.patch, num_classes, run.seed)
    method = {"quadtree-cnn": "quadtree", "dht-learned": "dht"}.get(run.tokenizer, run.tokenizer)
    options = row_options(run) or None
    if run.tokenizer == "quadtree-cnn":
        from adaptok.ops import imagenet_mean_std
        from adaptok.partitioners.scorers import FeatureScorer

        # The CNN trained on the datasets' normalised images; partitioners get [0, 1] pixels.
        mean, std = imagenet_mean_std()
        scorer = FeatureScorer(
            ScorerCNN().features,
            weights=work / "scorer" / f"{run.dataset}-cnn.pt",
            mean=mean,
            std=std,
        ).to(device)
        options = {**run.options, "scorer": scorer}
    embedder, attention = EMBEDDERS[run.tokenizer]
    model = retrofit(
        vit,
        method,
        embedder=embedder,
        proportional_attention=attention,
        position="learned",
        partition_options=options,
        task=task,
    )
    if run.tokenizer == "dht":
        # Frozen dHT (bundled weights): partitions only, cached per image; raw pixels.
        model.tokenizer = CachedPartitions(PartitionTokenizer("dht", budget=run.tokens))
    return model.to(device)


def retrofitted(run: Run, parent: nn.Module, source: Path | str) -> nn.Module:
    """A retrofit row's model: its grid parent (`parent_model`, read from `source`) carried
    onto the row's tokens with `adaptok.train.init_from_model` (the library path of
    `adaptok train --init-from`); the parent itself is left as it is."""
    from adaptok.train import init_from_model

    method = run.tokenizer.removeprefix("retrofit-").partition("-")[0]
    embedder, attention = EMBEDDERS[run.tokenizer]
    return init_from_model(
        parent,
        method,
        partition_options=row_options(run),
        embedder=embedder,
        proportional_attention=attention,
        position="learned",
        source=str(source),
    )


class ToMeModel(nn.Module):
    """A timm ViT run with token merging down to `final_tokens` (`adaptok.models.tome_forward`),
    shaped like an AdaptiveViT for `evaluate` (logits, and tokens per image on request)."""

    tokenizer = None  # ToMe tokenizes on the grid; it merges inside the trunk

    def __init__(self, vit: nn.Module, final_tokens: int) -> None:
        super().__init__()
        self.vit = vit
        self.final_tokens = final_tokens

    def forward(self, images: Tensor, *, return_counts: bool = False):
        from adaptok.models import tome_forward

        logits = tome_forward(self.vit, images, final_tokens=self.final_tokens)
        if not return_counts:
            return logits
        return logits, torch.full((images.shape[0],), self.final_tokens, device=images.device)


def parent_checkpoint(run: Run, profile: Profile, work: Path) -> Path:
    """The best.pt of a retrofit or ToMe row's parent run."""
    return work / "runs" / profile.name / run.parent / "best.pt"


def parent_model(run: Run, profile: Profile, work: Path, num_classes: int) -> nn.Module:
    """The grid parent (an AdaptiveViT) of a retrofit or ToMe row, from its best.pt.

    Raises:
        FileNotFoundError: the parent has not finished yet.
    """
    from adaptok.models import model_from_checkpoint, retrofit
    from adaptok.train import load_checkpoint

    best = parent_checkpoint(run, profile, work)
    if not best.is_file():
        raise FileNotFoundError(best)
    state = load_checkpoint(best)
    if "model_config" in state:
        return model_from_checkpoint(state, source=str(best))
    # A parent trained before the benchmark went through fit: weights only.
    size = DATASET_SIZES[run.dataset]
    vit = make_vit(size, run.patch, num_classes, 0)
    parent = retrofit(vit, "grid", embedder="patch", position="learned")
    parent.load_state_dict(state["model"], strict=True)
    return parent


def tome_model(run: Run, profile: Profile, work: Path, num_classes: int) -> nn.Module:
    """A ToMe row's model: the parent exported to a timm ViT, merged to the row's count."""
    from adaptok.models import export_timm

    parent = parent_model(run, profile, work, num_classes)
    vit = export_timm(parent, make_vit(DATASET_SIZES[run.dataset], run.patch, num_classes, 0))
    return ToMeModel(vit.eval(), int(run.options["final_tokens"]))


def score(model: nn.Module, data: dict[str, Dataset], device: str) -> dict[str, object]:
    """Test metrics of a finished model: one evaluation over the test split (live tokenizer)."""
    from adaptok.train import evaluate

    if isinstance(model.tokenizer, CachedPartitions):
        model.tokenizer.enabled = False
    result = evaluate(model, data["test"], batch_size=64, device=device, amp="auto")
    if result.miou is not None:
        metrics = {"miou": result.miou, "boundary_f1": result.boundary_f1}
    else:
        metrics = {"accuracy": result.accuracy}
    return {
        "metrics": metrics,
        # evaluate counts an AdaptiveViT's tokens; ToMe ends every image at its final count.
        "tokens_per_image": result.tokens_per_image
        if result.tokens_per_image is not None
        else float(model.final_tokens),
        "eval_images_per_second": result.images_per_second,
        "test_images": result.images,
    }


# ----------------------------------------------------------------------------------- the CSV


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def append_rows(rows: list[dict[str, object]], path: Path) -> None:
    """Append rows under an exclusive lock (several workers share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        stream.seek(0, os.SEEK_END)
        writer = csv.DictWriter(stream, fieldnames=FIELDS)
        if stream.tell() == 0:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in FIELDS})
        stream.flush()
        fcntl.flock(stream, fcntl.LOCK_UN)


def _fmt(value: object) -> object:
    return f"{value:.6g}" if isinstance(value, float) else value


def done_ids(path: Path, profile: str) -> set[str]:
    return {r["run_id"] for r in read_rows(path) if r["profile"] == profile}


@contextlib.contextmanager
def run_lock(path: Path):
    """Yield True when this process holds the run's lock (a dead holder's lock is taken over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = int(path.read_text() or "0")
            os.kill(holder, 0)
            yield False
            return
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)


def library_commit() -> str:
    try:
        import adaptok

        source = Path(adaptok.__file__).resolve()
        marker = source.parents[2] / "LIBRARY_COMMIT"
        if marker.is_file():  # a pinned snapshot (see the entry script's docstring)
            return marker.read_text().strip()
        out = subprocess.run(
            ["git", "-C", str(source.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(source.parent), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (subprocess.CalledProcessError, OSError):
        return "unknown"


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    try:
        from adaptok.cli.benchmarking import cpu_name

        return f"{cpu_name()} ({torch.get_num_threads()} thread)"
    except ImportError:
        return platform.processor() or "cpu"


# -------------------------------------------------------------------------------- one run


def execute(run: Run, profile: Profile, work: Path, device: str, log: Log) -> list[dict]:
    """Train (or retrofit and fine-tune) one run through `fit` and return its CSV rows."""
    from adaptok.train import fit

    retrofit_row = run.tokenizer.startswith("retrofit")
    # A retrofit fine-tune is also scored on the selection split, which picks the protocol.
    selecting = retrofit_row and run.finetune > 0 and profile.selection_images > 0
    data = load_splits(run.dataset, profile, work, selection=selecting)
    info = data["train"].info  # type: ignore[attr-defined]
    folder = work / "runs" / profile.name / run.run_id
    parent = None  # a retrofit row's grid parent: its starting weights, and a teacher
    if run.tokenizer == "tome":
        model = tome_model(run, profile, work, info.num_classes).to(device)
        steps, lr, eval_every = 0, LR, 1
    elif retrofit_row:
        parent = parent_model(run, profile, work, info.num_classes)
        source = parent_checkpoint(run, profile, work)
        model = retrofitted(run, parent, source).to(device)
        steps = run.finetune
        lr, eval_every = LR * run.lr_factor, max(1, run.finetune // 2)
    else:
        if run.tokenizer == "quadtree-cnn":
            weights = work / "scorer" / f"{run.dataset}-cnn.pt"
            with run_lock(weights.with_suffix(".lock")) as mine:
                if not weights.is_file():
                    if not mine:
                        raise FileNotFoundError(weights)
                    log("training the scorer CNN")
                    train_scorer(run, data, weights, profile, device)
        model = build(run, info.num_classes, info.task, work, device)
        steps, lr, eval_every = profile.steps, LR, profile.eval_every
    result = None
    if steps:
        config = fit_config(
            run, profile, data, folder, device, steps=steps, lr=lr, eval_every=eval_every
        )
        teacher = parent if run.distilled else None
        result = fit(model, data["train"], data["val"], config, teacher=teacher, resume=True)
        log(f"fit: best validation {result.best_score:.4f} at step {result.best_step}")
    scored = score(model, data, device)
    selection_score = float("nan")
    if selecting:
        from adaptok.train import evaluate

        picked = evaluate(model, data["selection"], batch_size=64, device=device, amp="auto")
        selection_score = picked.accuracy
        log(f"selection split: {selection_score:.4f}")
    folder.mkdir(parents=True, exist_ok=True)
    curve = [list(point) for point in result.curve] if result else []
    (folder / "curve.json").write_text(json.dumps(curve))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    common = {
        "dataset": run.dataset,
        "tokenizer": run.tokenizer + run.variant_tail,
        "tokens_per_image": scored["tokens_per_image"],
        "seed": run.seed,
        "steps": run.finetune if retrofit_row else result.step if result else 0,
        "train_seconds": result.train_seconds if result else 0.0,
        "eval_images_per_second": scored["eval_images_per_second"],
        "device": _device_name(device),
        "profile": profile.name,
        "budget": run.options.get("budget", ""),
        "token_side": run.patch,
        "best_step": result.best_step if result else 0,
        "best_val": result.best_score if result else float("nan"),
        "selection_score": selection_score,
        "train_images": len(data["train"]),
        "val_images": len(data["val"]),
        "test_images": scored["test_images"],
        "partition_seconds": getattr(model.tokenizer, "seconds", 0.0),
        "parent": run.parent,
        "library_commit": library_commit(),
        "run_id": run.run_id,
        "finished_utc": stamp,
    }
    return [
        {**common, "metric": metric, "value": value} for metric, value in scored["metrics"].items()
    ]


def worker(
    profile_name: str, work: Path, csv_path: Path, *, only: list[str], device: str,
    skip_dht: bool,
) -> int:  # fmt: skip
    """Run the plan's unfinished rows (matching every `only` word) in order, most important
    first, skipping rows another worker holds; returns how many ran."""
    profile = PROFILES[profile_name]
    runs = [r for r in plan(profile) if all(re.search(word, r.run_id) for word in only)]
    ran = 0
    while True:
        progressed = False
        for run in runs:
            done = done_ids(csv_path, profile.name)
            if run.run_id in done or (run.needs_dht and skip_dht):
                continue
            if run.parent and run.parent not in done:
                # The parent's best.pt exists from its first validation on: a child started
                # from an unfinished parent would read half-trained weights.
                continue
            lock = work / "locks" / profile.name / (run.run_id.replace("/", "__") + ".lock")
            with run_lock(lock) as mine:
                if not mine or run.run_id in done_ids(csv_path, profile.name):
                    continue

                def log(message: str, run=run) -> None:
                    print(f"[{time.strftime('%H:%M:%S')}] {run.run_id}: {message}", flush=True)

                log("start")
                try:
                    rows = execute(run, profile, work, device, log)
                except FileNotFoundError as missing:  # a dependency not trained yet
                    log(f"waiting for {missing}")
                    continue
                append_rows(rows, csv_path)
                log("done " + ", ".join(f"{r['metric']}={r['value']:.4f}" for r in rows))
                ran += 1
                progressed = True
                break  # re-read the plan from the top: most important first
        if not progressed:
            break
    print(f"worker finished: {ran} run(s)", flush=True)
    return ran
