"""`fit` on built models and in-memory data, Ctrl-C, the train command's checks before writing,
and `--init-from` (the retrofit protocol from the command line)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from adaptok import load_model
from adaptok.cli.main import main
from adaptok.errors import AdaptokError
from adaptok.train import (
    DatasetInfo,
    TensorImages,
    TrainConfig,
    TrainingInterrupted,
    evaluate,
    fit,
    holdout,
    init_from_checkpoint,
    load_checkpoint,
)
from adaptok.train.augment import random_resized_crop_flip, step_generator
from adaptok.train.loop import Distillation

INFO = DatasetInfo(task="classification", num_classes=3, in_chans=3, class_names=("a", "b", "c"))


def _data(count: int = 24, seed: int = 0) -> TensorImages:
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (count,), generator=generator)
    images = torch.randn(count, 3, 8, 8, generator=generator) + targets[:, None, None, None]
    return TensorImages(images, targets, INFO)


class SmallCNN(nn.Module):
    """Any module returning logits: no tokens, no config."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(images)).mean((2, 3)))


class ItemsOnly(torch.utils.data.Dataset):
    """The same samples without the fast `batch` path (read by a DataLoader)."""

    def __init__(self, data: TensorImages) -> None:
        self.data, self.info = data, data.info

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]


def _config(tmp_path: Path, name: str, **changes) -> TrainConfig:
    base = dict(
        output=str(tmp_path / name), steps=8, batch_size=4, lr=1e-2, warmup_steps=2,
        log_every=1, checkpoint_every=3, eval_every=2, progress=False, device="cpu", seed=3,
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN()


def test_fit_reads_in_memory_batches_as_a_data_loader_would(tmp_path) -> None:
    """The `batch(index)` path gives the DataLoader path's run bitwise (augmented batches,
    validation, test), for a plain CNN."""
    train_set, val_set = holdout(_data(), 6, seed=0)
    assert hasattr(train_set, "batch")  # the subset keeps the fast path
    fast = fit(_cnn(), train_set, val_set, _config(tmp_path, "fast"), test_set=_data(seed=1))
    slow = fit(
        _cnn(), ItemsOnly(train_set), ItemsOnly(val_set), _config(tmp_path, "slow"),
        test_set=ItemsOnly(_data(seed=1)),
    )  # fmt: skip
    assert fast.config.augment is True  # "auto" on a classification task
    assert fast.losses == slow.losses and len(fast.losses) == 8
    assert fast.curve == slow.curve and [s for s, _, _ in fast.curve] == [0, 2, 4, 6, 8]
    assert fast.best_step == max(fast.curve, key=lambda p: (p[1], -p[2]))[0]
    assert fast.evaluation == dataclasses.replace(
        slow.evaluation, images_per_second=fast.evaluation.images_per_second
    )
    assert fast.tokens_per_image is None and fast.evaluation.tokens_per_image is None
    assert "model_config" not in load_checkpoint(tmp_path / "fast" / "last.pt")


def test_fit_resumes_a_killed_run_of_any_module_exactly(tmp_path) -> None:
    train_set, val_set = holdout(_data(), 6, seed=0)
    straight = fit(_cnn(), train_set, val_set, _config(tmp_path, "straight"))
    stopped = fit(_cnn(), train_set, val_set, _config(tmp_path, "resumed", stop_after=5))
    assert stopped.step == 5 and stopped.evaluation is None
    resumed = fit(_cnn(), train_set, val_set, _config(tmp_path, "resumed"), resume=True)
    assert straight.losses[3:] == resumed.losses  # from last.pt at step 3, bitwise
    assert straight.curve == resumed.curve  # the curve up to step 3 came back from last.pt
    assert straight.best_step == resumed.best_step
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


class Interrupted(SmallCNN):
    """Raises KeyboardInterrupt (as Ctrl-C would) in the forward of step `at` (0-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.calls, self.at = 0, at

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self.calls == self.at:
                raise KeyboardInterrupt
            self.calls += 1
        return super().forward(images)


def test_ctrl_c_names_the_step_that_last_pt_holds(tmp_path, capsys, monkeypatch) -> None:
    config = _config(tmp_path, "run", val_images=0, eval_every=0)
    with pytest.raises(TrainingInterrupted) as stop:
        fit(Interrupted(at=5), _data(), None, config)
    assert (stop.value.step, stop.value.saved_step) == (5, 3)
    assert load_checkpoint(stop.value.checkpoint)["step"] == 3
    with pytest.raises(TrainingInterrupted) as early:
        fit(Interrupted(at=1), _data(), None, config, overwrite=True)
    assert early.value.saved_step is None
    # The command says it in words.
    import adaptok.cli.train as command

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(5, 3, Path("runs/x/last.pt"))

    monkeypatch.setattr(command, "train", interrupted)
    assert main(["train", "--dataset", "shapes", "--out", str(tmp_path / "cli")]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 5" in err and "holds step 3" in err and "--resume" in err


def _image_folder(root: Path, per_class: int = 8, size: int = 16) -> Path:
    """root/{train,test}/{dark,light}/*.png: two classes a ViT can tell apart."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, level in (("dark", 60), ("light", 190)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                noise = rng.integers(-40, 40, (size, size, 3))
                pixels = np.clip(level + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


TINY = ["--image-size", "16", "--embed-dim", "16", "--depth", "1", "--heads", "2"]


def _train(data: Path, out: Path, *flags: str) -> int:
    return main(
        ["train", "--dataset", "folder", "--data-root", str(data), "--batch-size", "4",
         "--val-images", "4", "--eval-every", "2", "--steps", "4", "--no-progress",
         "--device", "cpu", "--out", str(out), *flags]
    )  # fmt: skip


def test_init_from_starts_at_the_parents_accuracy(tmp_path, capsys) -> None:
    data = _image_folder(tmp_path / "data")
    parent = tmp_path / "parent"
    assert _train(data, parent, *TINY, "--patch-size", "4", "--position", "learned") == 0
    best = load_checkpoint(parent / "best.pt")
    child = tmp_path / "grid"
    assert _train(data, child, "--init-from", str(parent / "best.pt"), "--lr", "1e-4") == 0
    # Same validation draw (same seed and data), same weights: the child's step 0 is the parent
    # (score and loss).
    stored = load_checkpoint(child / "last.pt")
    assert stored["curve"][0] == [0, best["score"], best["loss"]]
    assert stored["train_config"]["augment"] is False  # starts from trained weights: off
    assert stored["model_config"]["encoder"] == best["model_config"]["encoder"]
    # Another tokenizer: quadtree tokens with the parent's patch embedder (same parameters).
    quad = tmp_path / "quad"
    assert _train(data, quad, "--init-from", str(parent / "last.pt"), "--method", "quadtree",
                  "--budget", "7", "--max-patch", "8") == 0  # fmt: skip
    assert load_checkpoint(quad / "last.pt")["model_config"]["method"] == "quadtree"
    capsys.readouterr()
    # Trunk flags are the parent's: refused rather than ignored.
    assert (
        _train(data, tmp_path / "bad", "--init-from", str(parent / "best.pt"), "--depth", "2") == 2
    )
    assert "drop --depth" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # The parent as teacher: distillation from the command line, and refused without a parent.
    taught = tmp_path / "taught"
    assert _train(data, taught, "--init-from", str(parent / "best.pt"), "--distill", "0.9") == 0
    assert load_checkpoint(taught / "last.pt")["train_config"]["distill"] == 0.9
    capsys.readouterr()
    assert _train(data, tmp_path / "alone", *TINY, "--distill", "0.5") == 2
    assert "--distill takes the --init-from parent" in capsys.readouterr().err
    assert not (tmp_path / "alone" / "last.pt").exists()


def test_init_from_goes_through_timm_to_another_embedder(tmp_path) -> None:
    data = _image_folder(tmp_path / "data")
    parent = tmp_path / "parent"
    assert _train(data, parent, *TINY, "--patch-size", "4", "--position", "learned") == 0
    model = init_from_checkpoint(
        parent / "best.pt",
        "dht",
        embedder="dht",
        partition_options={"budget": 8, "weights": "none"},
    )
    state = load_checkpoint(parent / "best.pt")["model"]
    assert type(model.embedder).__name__ == "DHTEmbedder"
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, state[f"encoder.{name}"]), name
    assert torch.equal(model.head.fc.weight, state["head.fc.weight"])
    # Without a choice, the embedder and attention are retrofit's defaults for the method.
    from adaptok.models.retrofitting import retrofit_defaults

    default = init_from_checkpoint(parent / "best.pt", "dht", partition_options={"weights": "none"})
    embedder, attention = retrofit_defaults("dht")
    assert default.config.embedder == embedder
    assert default.config.encoder.proportional_attention == attention
    # A parent with sinusoidal positions (adaptok train's from-scratch default) goes through a
    # table of its sinusoids: on its grid the pooled child is the parent, and dHT tokens work.
    sincos = tmp_path / "sincos"
    assert _train(data, sincos, *TINY, "--patch-size", "4") == 0
    parent_model = load_model(sincos / "best.pt")
    assert parent_model.embedder.position == "sincos"
    child = init_from_checkpoint(sincos / "best.pt", "grid", embedder="pooled").eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(child(images), parent_model(images), atol=1e-5, rtol=0)
    dht = init_from_checkpoint(sincos / "best.pt", "dht", partition_options={"weights": "none"})
    assert dht.config.embedder == embedder and dht(images).shape == child(images).shape


def test_a_train_command_that_fails_its_checks_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    flags = ["train", "--dataset", "shapes", *TINY, "--patch-size", "4", "--steps", "2",
             "--batch-size", "4", "--train-limit", "8", "--eval-limit", "4", "--no-progress",
             "--device", "cpu", "--out", str(out)]  # fmt: skip
    # An unreachable quadtree budget (1 + 3j tokens with patches 4..16) fails in the first
    # forward pass: it runs before anything is written.
    assert main([*flags, "--method", "quadtree", "--budget", "9"]) == 2
    assert "budget" in capsys.readouterr().err
    assert not out.exists()
    assert main([*flags, "--method", "quadtree", "--budget", "10"]) == 0  # the corrected rerun
    # Augmenting a dense task is refused before writing, too.
    assert main([*flags, "--augment", "on", "--out", str(tmp_path / "dense")]) == 2
    assert "label maps" in capsys.readouterr().err
    assert not (tmp_path / "dense").exists()


def test_evaluate_scores_boundary_f1_of_dense_models() -> None:
    from adaptok.models import EncoderConfig, ModelConfig, build_model
    from adaptok.train import ShapesDataset
    from adaptok.train.metrics import boundary_counts, boundary_f1

    data = ShapesDataset(6, image_size=16, seed=2)
    config = ModelConfig(method="grid", task="dense", num_classes=3, image_size=16, patch_size=4,
                         encoder=EncoderConfig(embed_dim=16, depth=1, num_heads=2))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config).eval()
    result = evaluate(model, data, batch_size=4)
    images, labels = zip(*(data[i] for i in range(6)), strict=True)
    with torch.no_grad():
        prediction = model(torch.stack(images)).argmax(1)
    counts = sum(boundary_counts(prediction[i : i + 1], labels[i][None]) for i in range(6))
    assert result.boundary_f1 == pytest.approx(boundary_f1(counts))
    assert result.miou is not None and result.tokens_per_image == 16.0


class Recorder(SmallCNN):
    """Keeps every training batch it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(images.detach().clone())
        return super().forward(images)


def test_fit_shows_the_model_its_batches_unchanged_unless_augmenting(tmp_path) -> None:
    data = _data(count=16)
    plain = Recorder()
    fit(plain, data, None, _config(tmp_path, "plain", steps=4, augment=False, eval_every=0))
    # The model saw exactly the dataset's images, in the sampler's seeded order.
    shown = torch.cat(plain.seen)
    assert shown.shape == (16, 3, 8, 8)
    matches = (shown[:, None] == data.images[None].float()).flatten(2).all(-1)
    assert matches.sum(1).tolist() == [1] * 16 and sorted(
        matches.float().argmax(1).tolist()
    ) == list(range(16))
    augmented = Recorder()
    fit(augmented, data, None, _config(tmp_path, "aug", steps=4, augment=True, eval_every=0))
    assert not torch.equal(torch.cat(augmented.seen), shown)
    assert torch.cat(augmented.seen).shape == shown.shape
    # The augmented batch is the step's crops of the same batch, down to min_crop of the area.
    half = Recorder()
    config = _config(tmp_path, "half", steps=1, augment=True, min_crop=0.5, eval_every=0)
    fit(half, data, None, config)
    expected = random_resized_crop_flip(
        plain.seen[0], generator=step_generator(config.seed, 0), scale=(0.5, 1.0)
    )
    assert torch.equal(half.seen[0], expected)
    assert not torch.equal(augmented.seen[0], expected)


def test_distillation_loss_equals_its_formula() -> None:
    """(1 - w) CE + w T^2 KL(teacher || model), KL written out over the classes."""
    torch.manual_seed(0)
    teacher = _cnn().eval()
    images = torch.randn(5, 3, 8, 8)
    logits = torch.randn(5, 3)
    cross_entropy = torch.tensor(1.25)
    term = Distillation(teacher, weight=0.3, temperature=2.0)
    with torch.no_grad():
        p_teacher = torch.softmax(teacher(images) / 2.0, -1)
    log_student = torch.log_softmax(logits / 2.0, -1)
    kl = (p_teacher * (p_teacher.log() - log_student)).sum(-1).mean()
    expected = 0.7 * cross_entropy + 0.3 * 4.0 * kl
    torch.testing.assert_close(term.loss(logits, images, cross_entropy), expected)
    # Matching the teacher exactly leaves only the label term.
    with torch.no_grad():
        same = term.loss(teacher(images), images, cross_entropy)
    torch.testing.assert_close(same, 0.7 * cross_entropy)


def test_fully_distilled_training_ignores_the_labels_and_leaves_the_teacher(tmp_path) -> None:
    data = _data()
    shuffled = TensorImages(data.images, data.targets.roll(5), INFO)
    teacher = _cnn()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    models = []
    for name, dataset in (("a", data), ("b", shuffled)):
        config = _config(tmp_path, name, distill=1.0, eval_every=0)
        models.append(fit(_cnn(), dataset, None, config, teacher=teacher).model)
    second = models[1].state_dict()
    for key, a in models[0].state_dict().items():
        assert torch.equal(a, second[key]), key  # weight 1: the labels never enter the loss
    assert not torch.equal(models[0].fc.weight, _cnn().fc.weight)  # it did train
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    # Weight 0.5: the labels count again.
    half = fit(_cnn(), data, None, _config(tmp_path, "c", distill=0.5, eval_every=0),
               teacher=teacher).model  # fmt: skip
    assert not torch.equal(half.fc.weight, models[0].fc.weight)


def test_distillation_needs_a_teacher_and_a_weight(tmp_path) -> None:
    data = _data()
    with pytest.raises(AdaptokError, match="needs a teacher"):
        fit(_cnn(), data, None, _config(tmp_path, "a", distill=0.5))
    with pytest.raises(AdaptokError, match="distill is 0"):
        fit(_cnn(), data, None, _config(tmp_path, "b"), teacher=_cnn())
    with pytest.raises(AdaptokError, match=r"distill must be a weight in \[0, 1\]"):
        TrainConfig(distill=1.5)
    with pytest.raises(AdaptokError, match="distill_temperature must be positive"):
        TrainConfig(distill_temperature=0.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
