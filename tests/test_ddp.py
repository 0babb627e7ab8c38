"""DDP on CPU: two gloo processes launched by torchrun train a few steps and end with identical
weights (and different data shards); the README's command runs as written.

Both tests start two Python processes (about 10-20 s each on a busy 2-core machine): marked
slow, and still run by the default `python -m pytest -q` (deselect with `-m "not slow"`)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from adaptok.models import ModelConfig, build_model

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    from adaptok.models import EncoderConfig, ModelConfig
    from adaptok.train import TrainConfig, train

    out = sys.argv[1]
    model_config = ModelConfig(
        method="dht", image_size=16, patch_size=4, embedder="dht",
        encoder=EncoderConfig(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0),
        partition_options={"budget": 8, "weights": "none"},
    )
    config = TrainConfig(
        dataset="shapes", output=out, steps=3, batch_size=2, lr=1e-2, warmup_steps=1,
        log_every=1, checkpoint_every=3, train_limit=12, eval_limit=4, progress=False,
        device="cpu", val_images=4, eval_every=1,
    )
    result = train(model_config, config)
    rank = os.environ["RANK"]
    torch.save({"state": result.model.state_dict(), "losses": result.losses,
                "evaluation": result.evaluation.accuracy, "best_step": result.best_step},
               os.path.join(out, f"rank{rank}.pt"))
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first["state"].keys() == second["state"].keys()
    for name, value in first["state"].items():
        assert torch.equal(value, second["state"][name]), name
    # Each replica saw its own shard: the local losses differ, yet the weights agree.
    assert first["losses"] != second["losses"]
    # Validation is summed over both processes, so both choose the same best.pt; the returned
    # weights are best.pt's, which training moved away from the (seeded) initialisation.
    assert first["best_step"] == second["best_step"] in (1, 2, 3)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["step"] == 3
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["step"] == first["best_step"]
    config = ModelConfig.from_dict(best["model_config"])
    torch.manual_seed(0)
    initial = build_model(config).state_dict()
    changed = [n for n, v in first["state"].items() if not torch.equal(v, initial[n])]
    assert "encoder.blocks.0.attn.qkv.weight" in changed
    for name, value in best["model"].items():
        assert torch.equal(value, first["state"][name]), name
    if first["best_step"] == 3:  # the last step was the best: last.pt holds the same weights
        for name, value in last["model"].items():
            assert torch.equal(value, first["state"][name]), name
    # Evaluation is summed over both processes, so both report the same accuracy.
    assert first["evaluation"] == second["evaluation"]


@pytest.mark.slow
def test_the_readme_torchrun_command_trains_with_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 -m adaptok.cli train ...`, as the README writes it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = "torchrun --nproc_per_node 2 -m adaptok.cli train"
    assert documented in readme
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "run"
    flags = [
        "--dataset", "shapes", "--method", "quadtree", "--image-size", "16", "--patch-size", "4",
        "--embed-dim", "16", "--depth", "1", "--heads", "2", "--budget", "7", "--max-patch", "8",
        "--steps", "3", "--batch-size", "2", "--train-limit", "8", "--eval-limit", "4",
        "--val-images", "2", "--eval-every", "3", "--log-every", "1", "--no-progress",
        "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    command = [str(torchrun), *documented.split()[1:], *flags]
    # torchrun reads its port from PET_MASTER_PORT: a free one, so parallel runs never collide.
    env = dict(os.environ, OMP_NUM_THREADS="1", PET_MASTER_PORT=str(_free_port()))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    assert done.stdout.count("test mIoU") == 1  # the main process reports, once
    # DDP's per-rank hint about find_unused_parameters is not shown.
    assert "find_unused_parameters" not in done.stderr
    with open(out / "train_metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    # 2 images per process and step, 2 processes: the log counts both.
    assert [r["step"] for r in rows] == ["1", "2", "3"]
