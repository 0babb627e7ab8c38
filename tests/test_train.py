"""Training and evaluation: overfitting, exact resume, atomic checkpoints, datasets and their
errors, metrics against simple oracles, the train/eval CLI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from adaptok.errors import AdaptokError
from adaptok.models import EncoderConfig, ModelConfig, build_model
from adaptok.train import (
    ConfusionMatrix,
    ImageFolder,
    SegmentationFolder,
    ShapesDataset,
    TrainConfig,
    build_dataset,
    load_checkpoint,
    save_checkpoint,
    train,
)
from adaptok.train.datasets import normalize

TINY = EncoderConfig(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def _tiny_config(**changes) -> ModelConfig:
    base = dict(method="grid", image_size=16, patch_size=4, embedder="dht", encoder=TINY)
    base.update(changes)
    return ModelConfig(**base)


def test_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator)  # random labels: pure memorising
    model = build_model(_tiny_config(num_classes=10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(images)
    assert float(torch.nn.functional.cross_entropy(logits, labels)) < 0.1 < first
    assert bool((logits.argmax(1) == labels).all())


def test_gradients_reach_every_parameter_of_a_dense_dht_model():
    config = _tiny_config(method="dht", task="dense", num_classes=3, image_size=16,
                          partition_options={"budget": 10, "weights": "none"})  # fmt: skip
    model = build_model(config).train()
    images, labels = zip(*(ShapesDataset(2, image_size=16)[i] for i in range(2)), strict=True)
    logits = model(torch.stack(images))
    assert logits.shape == (2, 3, 16, 16)
    torch.nn.functional.cross_entropy(logits, torch.stack(labels)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # λ and β act only on masked pixels; the self-edge only through the selection weights.
    assert not [n for n in no_grad if not n.startswith("tokenizer.")], no_grad
    assert any(
        p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.tokenizer.parameters()
    )


def _run(tmp_path, name: str, **changes) -> object:
    config = TrainConfig(
        dataset="shapes",
        output=str(tmp_path / name),
        steps=8,
        batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        train_limit=10,  # 2 batches per epoch: the run crosses epochs (and resumes mid-epoch)
        eval_limit=4,
        progress=False,
        seed=5,
        device="cpu",  # bitwise reproducible
    )
    model_config = _tiny_config(
        method="dht", image_size=16, partition_options={"budget": 8, "weights": "none"}
    )
    return train(model_config, dataclasses.replace(config, **changes), resume=True)


def test_resume_continues_the_same_loss_curve(tmp_path):
    straight = _run(tmp_path, "straight")
    first = _run(tmp_path, "resumed", stop_after=5)  # "killed" after step 5; last.pt at step 3
    assert first.step == 5 and first.evaluation is None
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert state["step"] == 3
    second = _run(tmp_path, "resumed")
    assert second.step == 8
    assert straight.losses[3:] == second.losses  # bitwise on CPU
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    # The CSV log of the resumed run holds each step once, with the uninterrupted run's values.
    with open(tmp_path / "resumed" / "train_metrics.csv") as stream:
        resumed_rows = list(csv.DictReader(stream))
    with open(tmp_path / "straight" / "train_metrics.csv") as stream:
        straight_rows = list(csv.DictReader(stream))
    assert [r["step"] for r in resumed_rows] == [str(s) for s in range(1, 9)]
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in straight_rows]
    assert straight.evaluation.miou is not None
    assert straight.evaluation == dataclasses.replace(
        second.evaluation, images_per_second=straight.evaluation.images_per_second
    )


def test_validation_split_chooses_the_checkpoint_and_survives_a_resume(tmp_path):
    """val_images holds a seeded draw of the training samples out; best.pt is the best
    validation step, the test split scores only best.pt's weights, and a killed run resumes to
    the same choice."""
    from adaptok import load_model
    from adaptok.train import evaluate
    from adaptok.train.runs import datasets_for as _datasets

    config = TrainConfig(dataset="shapes", train_limit=20, val_images=4, eval_limit=4)
    training, validation, _ = _datasets(_tiny_config(), config)
    assert len(training) == 16 and len(validation) == 4
    assert not set(training.indices.tolist()) & set(validation.indices.tolist())
    # In this run the validation mIoU peaks at step 9 of 12 (seeded, bitwise on the CPU).
    changes = dict(val_images=4, eval_every=3, steps=12, lr=8e-3, train_limit=20)
    straight = _run(tmp_path, "straight", **changes)
    with open(tmp_path / "straight" / "eval_metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    val = [
        (int(r["step"]), float(r["miou"]), float(r["loss"])) for r in rows if r["split"] == "val"
    ]
    assert [step for step, _, _ in val] == [0, 3, 6, 9, 12]  # the initial weights compete too
    assert [s for s, _, _ in straight.curve] == [s for s, _, _ in val]
    assert [v for _, v, _ in straight.curve] == pytest.approx([v for _, v, _ in val], rel=1e-5)
    assert [r["split"] for r in rows].count("test") == 1  # the test split is scored once
    best_step = max(val, key=lambda row: (row[1], -row[2]))[0]  # equal mIoU: lower loss
    assert straight.best_step == best_step and best_step < 12
    assert load_checkpoint(tmp_path / "straight" / "best.pt")["step"] == best_step
    test_set = build_dataset("shapes", split="test", limit=4, seed=5, image_size=16)
    again = evaluate(load_model(tmp_path / "straight" / "best.pt"), test_set, batch_size=4)
    assert (again.loss, again.miou) == (straight.evaluation.loss, straight.evaluation.miou)
    # Killed after step 7: last.pt holds step 4, best.pt the newer step 6; then resumed.
    _run(tmp_path, "resumed", **changes, checkpoint_every=4, stop_after=7)
    assert load_checkpoint(tmp_path / "resumed" / "best.pt")["step"] == 6
    resumed = _run(tmp_path, "resumed", **changes, checkpoint_every=4)
    assert resumed.best_step == best_step
    assert (resumed.evaluation.loss, resumed.evaluation.miou) == (again.loss, again.miou)
    with pytest.raises(AdaptokError, match="leaves none"):
        _datasets(_tiny_config(), dataclasses.replace(config, val_images=20))


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - any failure while writing
        save_checkpoint({"step": 2, "bad": lambda: None}, path)  # lambdas cannot be pickled
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    with pytest.raises(AdaptokError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def _write_png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_skips_a_corrupt_file_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        for i in range(3):
            _write_png(tmp_path / label / f"{i}.png", rng.integers(0, 255, (20, 24, 3), np.uint8))
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.warns(UserWarning, match=r"broken\.png"):
        dataset = ImageFolder(tmp_path, image_size=16)
    assert len(dataset) == 6 and dataset.info.class_names == ("cat", "dog")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no more warnings once scanned: the epoch runs through
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    assert labels == [0, 0, 0, 1, 1, 1]
    assert dataset[0][0].shape == (3, 16, 16)
    # A file that breaks after the scan is named and replaced by the next readable one.
    (tmp_path / "cat" / "1.png").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match=r"cat/1\.png"):
        image, label = dataset[1]
    assert torch.equal(image, dataset[2][0]) and int(label) == 0


def test_missing_datasets_raise_clearly(tmp_path):
    with pytest.raises(AdaptokError, match="does not exist"):
        build_dataset("folder", root=tmp_path / "nothing")
    with pytest.raises(AdaptokError, match="dataset-fashion-mnist"):
        build_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(AdaptokError, match="--data-root"):
        build_dataset("seg-folder")
    with pytest.raises(AdaptokError, match="unknown dataset"):
        build_dataset("imagenet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdaptokError, match="no class folders"):
        ImageFolder(tmp_path / "empty")


def test_segmentation_folder_pairs_images_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(2):
        _write_png(tmp_path / "images" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
        label = np.zeros((8, 8), np.uint8)
        label[2:5, 3:7] = 2
        label[0, 0] = 255
        _write_png(tmp_path / "labels" / f"{i}.png", label)
    _write_png(tmp_path / "images" / "orphan.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"orphan\.png"):
        dataset = SegmentationFolder(tmp_path, image_size=16)
    image, label = dataset[0]
    assert len(dataset) == 2 and dataset.info.num_classes == 3
    assert image.shape == (3, 16, 16) and label.shape == (16, 16)
    assert set(label.unique().tolist()) == {0, 2, 255}
    assert int((label == 2).sum()) == 4 * 3 * 4  # nearest upsampling by 2 of a 3x4 block


def test_shapes_masks_are_exact_and_deterministic():
    dataset = ShapesDataset(4, image_size=24, seed=3)
    image, label = dataset[1]
    again, label_again = ShapesDataset(4, image_size=24, seed=3)[1]
    assert torch.equal(image, again) and torch.equal(label, label_again)
    assert set(label.unique().tolist()) <= {0, 1, 2} and int((label > 0).sum()) > 0
    # The mask is exact: shape pixels carry one of at most 3 flat shape colours, and no
    # background pixel (textured, per-pixel noise) has any of those colours.
    for index in range(4):
        image, label = dataset[index]
        colours = image.flatten(1).T  # [H*W, 3]
        shape_colours = torch.unique(colours[label.flatten() > 0], dim=0)
        assert 1 <= shape_colours.shape[0] <= 3
        background = colours[label.flatten() == 0]
        matches = (background[:, None] == shape_colours[None]).all(-1)
        assert not bool(matches.any())
        assert torch.unique(background, dim=0).shape[0] == background.shape[0]


def test_confusion_matrix_miou_matches_a_per_class_loop():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randint(0, 4, (3, 10, 10), generator=generator)
    target = torch.randint(0, 4, (3, 10, 10), generator=generator)
    target[0, 0] = 255
    matrix = ConfusionMatrix(5)
    matrix.update(prediction, target)
    keep = target != 255
    ious = []
    for k in range(5):
        inter = ((prediction == k) & (target == k) & keep).sum()
        union = (((prediction == k) | (target == k)) & keep).sum()
        if union > 0:
            ious.append(float(inter) / float(union))
    assert matrix.miou == pytest.approx(sum(ious) / len(ious))


def test_train_and_eval_cli_on_shapes(tmp_path, capsys):
    from adaptok.cli import evaluate as evaluate_command
    from adaptok.cli import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    out = tmp_path / "run"
    args = parser.parse_args(
        ["--dataset", "shapes", "--method", "quadtree", "--image-size", "16", "--patch-size",
         "4", "--embed-dim", "32", "--depth", "1", "--heads", "2", "--steps", "3",
         "--batch-size", "4", "--train-limit", "8", "--eval-limit", "4", "--out", str(out),
         "--no-progress", "--embedder", "dht", "--budget", "7", "--max-patch", "8"]
    )  # fmt: skip
    assert train_command.run(args) == 0
    assert "mIoU" in capsys.readouterr().out
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(
        [str(out / "last.pt"), "--limit", "4", "--csv", str(tmp_path / "e.csv")]
    )
    assert evaluate_command.run(args) == 0
    with open(tmp_path / "e.csv") as stream:
        row = next(csv.DictReader(stream))
    assert float(row["tokens_per_image"]) == 7.0 and row["images"] == "4"
    with open(out / "eval_metrics.csv") as stream:
        trained = next(csv.DictReader(stream))
    assert float(row["miou"]) == pytest.approx(float(trained["miou"]))


def _write_idx(path, array: np.ndarray) -> None:
    """Write a gzipped idx file of unsigned bytes (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_debian_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    data = build_dataset("fashion-mnist", root=tmp_path, split="test", image_size=28, limit=4)
    assert len(data) == 4 and data.info.num_classes == 10
    image, label = data[2]
    assert image.shape == (3, 28, 28) and int(label) == 4
    # Channels are the grey image repeated, then normalised per channel: undo and compare.
    grey = torch.from_numpy(images[2]).float()[None] / 255
    torch.testing.assert_close(image, normalize(grey.expand(3, -1, -1)))
    assert build_dataset("fashion-mnist", root=tmp_path, split="test", image_size=64)[0][
        0
    ].shape == (
        3,
        64,
        64,
    )


def test_fashion_mnist_rejects_a_corrupt_idx_file(tmp_path):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as stream:
        stream.write(b"\x12\x34\x56\x78")
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2, dtype=np.uint8))
    with pytest.raises(AdaptokError, match="bad magic number"):
        build_dataset("fashion-mnist", root=tmp_path, split="test")


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    first = _run(tmp_path, "run", steps=2)
    assert first.step == 2
    config = TrainConfig(dataset="shapes", output=str(tmp_path / "run"), steps=2, batch_size=4,
                         train_limit=8, eval_limit=4, progress=False, device="cpu")  # fmt: skip
    model_config = _tiny_config(method="grid", image_size=16)
    with pytest.raises(AdaptokError, match="--resume to continue it or --overwrite"):
        train(model_config, config)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2  # untouched
    with pytest.raises(AdaptokError, match="choose one of resume"):
        train(model_config, config, resume=True, overwrite=True)
    replaced = train(model_config, config, overwrite=True)
    assert replaced.step == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["model_config"]["method"] == "grid"


def test_resume_with_another_configuration_is_refused(tmp_path, capsys):
    _run(tmp_path, "run", stop_after=4)
    with pytest.raises(AdaptokError, match=r"lr: 0.002 -> 0.003.*--overwrite") as error:
        _run(tmp_path, "run", lr=3e-3)
    assert "steps" not in str(error.value)  # only the fields that differ are listed
    with pytest.raises(AdaptokError, match=r"model.method: 'dht' -> 'grid'"):
        config = TrainConfig(dataset="shapes", output=str(tmp_path / "run"), steps=8,
                             batch_size=4, lr=2e-3, warmup_steps=2, log_every=1,
                             checkpoint_every=3, train_limit=10, eval_limit=4, progress=False,
                             seed=5, device="cpu")  # fmt: skip
        train(_tiny_config(method="grid", image_size=16), config, resume=True)
    capsys.readouterr()
    _run(tmp_path, "run", stop_after=1)
    assert "resumed from step 3 of 8" in capsys.readouterr().out


def test_resume_with_more_steps_extends_a_finished_run(tmp_path):
    """A finished 6-step run resumed with steps=8 trains 2 more steps on a cosine rebuilt for 8
    (warm-up 2), logs each step once and scores the test split again."""
    from adaptok.train.optim import warmup_cosine

    first = _run(tmp_path, "run", steps=6)
    assert first.step == 6 and first.evaluation is not None
    longer = _run(tmp_path, "run", steps=8)
    assert longer.step == 8 and len(longer.losses) == 2 and longer.evaluation is not None
    with open(tmp_path / "run" / "train_metrics.csv") as stream:
        rows = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(stream)}
    assert sorted(rows) == list(range(1, 9))
    factor = warmup_cosine(2, 8)
    assert rows[7] == pytest.approx(2e-3 * factor(7), rel=1e-5)
    assert rows[8] == pytest.approx(0.0, abs=1e-12)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_config"]["steps"] == 8


def test_logged_loss_after_a_resume_averages_the_steps_of_its_window(tmp_path):
    # Checkpoint at step 3, log every 2 steps: the resumed run's first window holds step 4 only.
    _run(tmp_path, "run", stop_after=3, log_every=2)
    resumed = _run(tmp_path, "run", log_every=2)
    with open(tmp_path / "run" / "train_metrics.csv") as stream:
        rows = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(stream)}
    assert rows[4] == pytest.approx(resumed.losses[0], rel=1e-5)
    assert rows[6] == pytest.approx(sum(resumed.losses[1:3]) / 2, rel=1e-5)


def test_metric_window_averages_over_the_steps_it_holds():
    from adaptok.train.loop import MetricWindow

    window = MetricWindow()
    window.add(loss=1.0, correct=3, scored=4, tokens=40, images=2, seconds=0.5)
    window.add(loss=2.0, correct=1, scored=4, tokens=20, images=2, seconds=1.5)
    row = window.row(step=7, epoch=1, lr=0.1, world_size=2)
    assert row == {
        "step": 7,
        "epoch": 1,
        "loss": 1.5,
        "accuracy": 0.5,
        "tokens_per_image": 15.0,
        "images_per_second": 4.0,  # 4 images per process, 2 processes, in 2 s
        "lr": 0.1,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", -1.0, "lr must be a positive learning rate"),
        ("lr", float("nan"), "lr must be a positive learning rate"),
        ("weight_decay", -0.1, "weight_decay must be 0 or more"),
        ("grad_clip", 0.0, "grad_clip must be a positive gradient norm or None"),
        ("warmup_steps", -5, "warmup_steps must be 0 or more"),
        ("eval_every", -1, "eval_every must be 0 or more"),
        ("train_limit", 0, "train_limit must be at least 1 or None"),
    ],
)
def test_train_config_refuses_bad_optimiser_settings(field, value, message):
    # Before, a negative lr reached torch.optim and ended the CLI with a raw traceback.
    with pytest.raises(AdaptokError, match=message):
        TrainConfig(**{field: value})


def test_a_run_saved_before_newer_fields_existed_resumes(tmp_path):
    """A checkpoint without the augment field (older runs never augmented) resumes."""
    _run(tmp_path, "run", stop_after=3, augment=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    del state["train_config"]["augment"], state["train_config"]["eval_batch_size"]
    save_checkpoint(state, tmp_path / "run" / "last.pt")
    assert _run(tmp_path, "run", augment=False).step == 8
    # A missing field stands for its default: a run whose value differs from it is refused.
    _run(tmp_path, "other", stop_after=3)
    state = load_checkpoint(tmp_path / "other" / "last.pt")
    del state["train_config"]["lr"]
    save_checkpoint(state, tmp_path / "other" / "last.pt")
    with pytest.raises(AdaptokError, match=r"lr: 0.001 -> 0.002"):
        _run(tmp_path, "other")
