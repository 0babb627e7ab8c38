"""Checkpoints written atomically (temporary file + os.replace) and read with weights_only=True.

A checkpoint is a plain dict of tensors and Python primitives: model, optimizer and scheduler
state, the step/epoch/position in the epoch, every random generator's state and the configs, so
that a killed run resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..weights import read_file

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: a reader (or a resumed run) sees the old file or the
    complete new one, never a half-written one, even if the process is killed mid-write.

    Args:
        state: tensors, numbers, strings, lists, tuples and dicts only (weights_only-loadable).
        path: the checkpoint file.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (ours or any plain state dict) without executing code.

    Raises:
        AdaptokError: the file does not exist or cannot be read as a weights-only checkpoint.
    """
    return read_file(path, what="checkpoint", map_location=map_location)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as weights_only-loadable values."""
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global generator)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
